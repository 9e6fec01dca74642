"""The runner: a queue and a bounded set of task greenlets, one runner per worker.

At most ``max_running`` tasks run at once; up to ``max_queued`` more wait, in
order. Cancelling a running task raises ``TaskCancelled`` inside it at its next
switch (a ``GreenletExit``, so ``except Exception`` in task code does not
swallow it, and a task may catch it to clean up). Shutdown raises
``TaskInterrupted`` instead.
"""
from __future__ import annotations

import functools
from typing import Callable

import gevent


class TaskCancelled(gevent.GreenletExit):
    """Raised inside a task that was cancelled. Catch it to clean up, then re-raise."""


class TaskInterrupted(gevent.GreenletExit):
    """Raised inside a task whose worker is shutting down."""


class Runner:
    def __init__(self, *, max_running: int, max_queued: int,
                 execute: Callable[[str], None], abandon: Callable[[str], None]) -> None:
        """``execute(task_id)`` runs a task in its greenlet; ``abandon(task_id)``
        ends one whose greenlet was killed before it ever started."""
        self.max_running, self.max_queued = max_running, max_queued
        self._execute, self._abandon = execute, abandon
        self._unstarted: set[str] = set()
        self._queued: dict[str, None] = {}   # insertion-ordered set
        self._running: dict[str, gevent.Greenlet[..., None]] = {}
        self._reserved = 0

    @property
    def running_count(self) -> int:
        return len(self._running)

    @property
    def queued_count(self) -> int:
        return len(self._queued)

    def has_room(self) -> bool:
        """Whether one more task may be accepted now (running or queued)."""
        waiting = len(self._queued) + self._reserved
        free = self.max_running - len(self._running)
        return waiting < free + self.max_queued

    def reserve(self) -> None:
        """Hold a place while the task's record is being stored (that yields)."""
        self._reserved += 1

    def submit(self, task_id: str) -> None:
        """Run the task now or queue it, taking the place ``reserve`` held."""
        self._reserved = max(0, self._reserved - 1)
        self._queued[task_id] = None
        self._start_next()

    def release(self) -> None:
        """Give back a reserved place that will not be used."""
        self._reserved = max(0, self._reserved - 1)

    def cancel(self, task_id: str, exception: type[gevent.GreenletExit]) -> str | None:
        """Remove a queued task ("queued") or raise ``exception`` in a running
        one ("running"); None when the runner has no such task."""
        if task_id in self._queued:
            del self._queued[task_id]
            return "queued"
        greenlet = self._running.get(task_id)
        if greenlet is None:
            return None
        greenlet.kill(exception, block=False)
        return "running"

    def take_queued(self) -> list[str]:
        """Empty the queue (shutdown): the caller ends those tasks."""
        queued = list(self._queued)
        self._queued.clear()
        return queued

    def wait_running(self, timeout: float) -> bool:
        """Wait for running tasks to finish; True when none is left."""
        gevent.joinall(list(self._running.values()), timeout=timeout)
        return not self._running

    def interrupt_running(self, timeout: float) -> None:
        greenlets = list(self._running.values())
        gevent.killall(greenlets, TaskInterrupted, block=True, timeout=timeout)

    def _start_next(self) -> None:
        while self._queued and len(self._running) < self.max_running:
            task_id = next(iter(self._queued))
            del self._queued[task_id]
            greenlet = gevent.Greenlet(self._run, task_id)
            greenlet.link(functools.partial(self._exited, task_id))
            self._running[task_id] = greenlet
            self._unstarted.add(task_id)
            greenlet.start()

    def _run(self, task_id: str) -> None:
        self._unstarted.discard(task_id)
        self._execute(task_id)

    def _exited(self, task_id: str, _greenlet: object = None) -> None:
        self._running.pop(task_id, None)
        if task_id in self._unstarted:  # killed before its first switch
            self._unstarted.discard(task_id)
            self._abandon(task_id)
        self._start_next()
