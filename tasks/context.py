"""``TaskContext``: what a running task reports through.

A task gets one as its first argument::

    @task
    def resize(ctx: TaskContext, *, count: int = 10) -> dict:
        for image in ctx.iter(load(count), message="resizing"):
            ctx.run_blocking(resize_one, image)   # CPU work off the event loop
        return {"resized": count}

Progress calls are cheap (the hub merges them, newest wins), so a task may
report on every item. Code that blocks or computes for long must go through
``run_blocking`` or call ``gevent.sleep(0)`` now and then, or every stream on
the worker stalls until it yields.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, TypeVar

import gevent

from .rate import RateMeter

if TYPE_CHECKING:
    from .engine import TaskEngine

T = TypeVar("T")

LOG_LEVELS = ("debug", "info", "warning", "error")
#: Longest log or progress message kept; longer ones are cut, not refused.
MAX_MESSAGE = 4000


class TaskContext:
    def __init__(self, engine: "TaskEngine", task_id: str, params: dict[str, Any]) -> None:
        self._engine = engine
        self.task_id = task_id
        self.params = params
        #: The app's TASKS_* settings, read-only by convention.
        self.config: dict[str, Any] = engine.settings
        self._current: float = 0
        self._total: float | None = None
        self._message: str | None = None
        self._meter = RateMeter(time.time())

    # -- progress ------------------------------------------------------------

    @property
    def total(self) -> float | None:
        return self._total

    @total.setter
    def total(self, value: float | None) -> None:
        self._total = value
        self._report()

    @property
    def current(self) -> float:
        return self._current

    def advance(self, n: float = 1, message: str | None = None) -> None:
        """Count ``n`` more units done."""
        self.update(self._current + n, message=message)

    def update(self, current: float, total: float | None = None,
               message: str | None = None) -> None:
        """Set how far the task is (and, when given, the total and message)."""
        self._current = current
        if total is not None:
            self._total = total
        if message is not None:
            self._message = _clip(message)
        self._report()

    def iter(self, iterable: Iterable[T], *, total: float | None = None,
             message: str | None = None) -> Iterator[T]:
        """Yield from ``iterable``, advancing by one after each item (like tqdm).

        The total is ``len(iterable)`` when it has one, unless ``total`` is given.
        """
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.update(self._current, total=total, message=message)
        for item in iterable:
            yield item
            self.advance()

    def _report(self) -> None:
        now = time.time()
        rate = self._meter.update(now, self._current)
        total = self._total
        percent = None
        if total:
            percent = round(min(100.0, max(0.0, self._current * 100.0 / total)), 2)
        self._engine.report_progress(self.task_id, {
            "current": self._current, "total": total, "percent": percent,
            "message": self._message,
            "rate": None if rate is None else round(rate, 3),
            "eta": _round(self._meter.eta(self._current, total)),
        })

    # -- logging and blocking work --------------------------------------------

    def log(self, message: str, level: str = "info") -> None:
        """Add a line to the task's log (a ``log`` event); level is one of
        debug, info, warning, error."""
        if level not in LOG_LEVELS:
            raise ValueError(f"log level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        self._engine.report_log(self.task_id, level, _clip(str(message)))

    def run_blocking(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``func`` in gevent's threadpool and wait for it without blocking
        the event loop. Cancelling the task stops the wait; the thread finishes
        its call in the background."""
        return gevent.get_hub().threadpool.apply(func, args, kwargs)

    def sleep(self, seconds: float) -> None:
        """Sleep without blocking other tasks and streams."""
        gevent.sleep(seconds)


def _clip(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
