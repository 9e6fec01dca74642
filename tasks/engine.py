"""``TaskEngine``: the Flask extension that ties the record store, the event
hub and the runner together, and runs each task from start to end.

``init_app`` keeps everything in ``app.extensions["tasks"]``: two apps in one
process share nothing. Task records are written when a task is created, starts
and ends, never per progress event.
"""
from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import gevent
import gevent.event
from flask import Flask

from .context import TaskContext
from .errors import QueueFull, ShuttingDown, TaskFinished, TaskNotFound
from .hub import MemoryHub, Opening, finished_replay
from .records import (Record, Status, copy_record, event_id_now, format_time, is_finished,
                      new_record, new_task_id)
from .registry import Registry, TaskType, default_registry
from .runner import Runner, TaskCancelled, TaskInterrupted
from .stores import RecordStore
from .stores.sqlite import SQLiteStore

log = logging.getLogger("tasks")


@dataclass
class _Job:
    task_type: TaskType
    params: dict[str, Any]
    stopping: Status | None = None   # CANCELLED or INTERRUPTED once asked to stop
    started: float | None = None     # time.monotonic() when it began running


class TaskEngine:
    def __init__(self, app: Flask | None = None, *, registry: Registry | None = None) -> None:
        self.registry = registry or default_registry
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        if "tasks" in app.extensions:
            raise RuntimeError("Taskstream is already set up on this app; "
                               "call TaskEngine.init_app(app) once per app.")
        config = app.config
        if self.registry is default_registry:
            from . import builtin  # noqa: F401  (registers demo, primes, ...)
        self.settings = {k: v for k, v in config.items() if k.startswith("TASKS_")}
        self.store, self.hub = self._backend(config)
        self.runner = Runner(max_running=config["TASKS_MAX_RUNNING"],
                             max_queued=config["TASKS_MAX_QUEUED"],
                             execute=self._execute, abandon=self._abandon)
        self.accepting = True
        self._jobs: dict[str, _Job] = {}
        # For /metrics (metrics.py reads these at scrape time): counted here,
        # the same on both backends.
        self.created_total = 0
        self.finished_total: Counter[str] = Counter()
        self.emitted_total: Counter[str] = Counter()
        self.progress_reports = 0
        #: Called with each finished record and its running time in seconds.
        self.on_finish: list[Callable[[Record, float], None]] = []
        self._idempotent: dict[str, gevent.event.AsyncResult[tuple[Record, bool]]] = {}
        self._recovered = False
        # Only a process that serves may decide that unfinished records are
        # orphans: `flask tasks ...` commands create the app too, while a live
        # server may be running those very tasks.
        app.before_request(self.recover)
        app.extensions["tasks"] = self

    def _backend(self, config: Any) -> tuple[RecordStore, MemoryHub]:
        """The record store and event hub TASKS_BACKEND names."""
        hub_settings = dict(event_buffer=config["TASKS_EVENT_BUFFER"],
                            global_buffer=config["TASKS_GLOBAL_EVENT_BUFFER"],
                            retention=config["TASKS_RETENTION"])
        if config["TASKS_BACKEND"] != "redis":
            return SQLiteStore(config["TASKS_DB"]), MemoryHub(
                **hub_settings, backlog=config["TASKS_SUBSCRIBER_BACKLOG"],
                max_held=config["TASKS_MAX_EVENTS_HELD"])
        from .redis_hub import RedisHub
        from .redis_support import Connections
        from .stores.redis import RedisStore
        connections = Connections(config["TASKS_REDIS_URL"], prefix=config["TASKS_REDIS_PREFIX"],
                                  max_readers=config["TASKS_REDIS_MAX_READERS"],
                                  heartbeat=config["TASKS_REDIS_HEARTBEAT"], **hub_settings)
        store = RedisStore(connections)
        return store, RedisHub(connections, store, backlog=config["TASKS_SUBSCRIBER_BACKLOG"],
                               cancel=self._cancel_if_here)

    def recover(self) -> None:
        """Once per process, before serving: mark the tasks a dead worker left
        queued or running as interrupted (gunicorn's worker calls this at
        start; otherwise the first request does)."""
        if self._recovered:
            return
        self._recovered = True
        interrupted = self.store.interrupt_unfinished(
            finished_at=format_time(time.time()), done_id=event_id_now(0))
        if interrupted:
            log.warning("marked %d task(s) left unfinished by a stopped worker as interrupted",
                        interrupted)

    # -- the API's operations -------------------------------------------------

    def task_types(self) -> list[TaskType]:
        return self.registry.all()

    def start(self, name: Any, raw_params: Any, *, idempotency_key: str | None = None,
              owner: str | None = None) -> tuple[Record, bool]:
        """Validate and queue a task; returns its record and whether it is new
        (False: an earlier request with the same idempotency key made it).
        In per-user mode the task belongs to ``owner``, whose keys are their own."""
        task_type = self.registry.get(name)
        if owner is not None and idempotency_key is not None:
            idempotency_key = f"{owner}:{idempotency_key}"  # user names have no ':'

        params = task_type.check_params(raw_params)
        if not self.accepting:
            raise ShuttingDown("this worker is shutting down; retry shortly",
                               headers={"Retry-After": "2"})
        if idempotency_key is not None and idempotency_key in self._idempotent:
            twin = self._idempotent[idempotency_key].get()  # a twin request is storing it
            assert twin is not None
            return twin
        if not self.runner.has_room():
            raise QueueFull(f"too many tasks waiting ({self.runner.queued_count} queued, "
                            f"TASKS_MAX_QUEUED={self.runner.max_queued}); retry later",
                            headers={"Retry-After": "2"})
        record = new_record(new_task_id(), task_type.name, params, now=time.time(), owner=owner)
        self.runner.reserve()
        pending: gevent.event.AsyncResult[tuple[Record, bool]] = gevent.event.AsyncResult()
        if idempotency_key is not None:
            self._idempotent[idempotency_key] = pending
        try:
            stored, created = self.store.create(record, idempotency_key=idempotency_key)
        except BaseException as exc:
            self.runner.release()
            pending.set_exception(exc)
            raise
        finally:
            self._idempotent.pop(idempotency_key or "", None)
        if not created:
            self.runner.release()
            stored = self.hub.record(stored["id"]) or stored
            pending.set((stored, False))
            return stored, False
        self._jobs[record["id"]] = _Job(task_type, params)
        self.hub.create(record)
        self.runner.submit(record["id"])
        pending.set((record, False))
        self.created_total += 1
        # debug, like status=running: the end's line says the rest (S4 paid ~5% for it)
        log.debug("task=%s name=%s status=queued", record["id"], task_type.name)
        return record, True

    def get(self, task_id: str, *, owner: str | None = None) -> Record:
        """The task's record; 404 for an unknown id, and for another user's task
        when ``owner`` is given (per-user mode: not even its existence shows)."""
        record = self.hub.record(task_id)
        if record is None:
            found = self.store.get(task_id)
            record = found[0] if found is not None else None
        if record is None or (owner is not None and record.get("owner") != owner):
            raise TaskNotFound(f"no task with id {task_id!r}")
        return record

    def list(self, *, status: str | None, limit: int, owner: str | None = None) -> list[Record]:
        records = self.store.list(status=status, limit=limit, owner=owner)
        return [self.hub.record(r["id"]) or r for r in records]

    def cancel(self, task_id: str, *, owner: str | None = None) -> Record:
        """Ask a task to stop; the record as it is now (queued ones stop at once)."""
        record = self.get(task_id, owner=owner)  # 404: unknown, or another user's
        job = self._jobs.get(task_id)
        if job is None:
            forward = getattr(self.hub, "forward_cancel", None)
            if forward is None or is_finished(record):
                raise TaskFinished(f"task {task_id} has already finished")
            forward(task_id)  # another worker runs it (Redis backend)
            return record
        self._cancel_if_here(task_id)
        return copy_record(self.get(task_id))

    def _cancel_if_here(self, task_id: str) -> None:
        """Cancel a task if this worker runs it (cancels forwarded by others land here)."""
        job = self._jobs.get(task_id)
        if job is None:
            return
        if job.stopping is None:
            job.stopping = Status.CANCELLED
            if self.runner.cancel(task_id, TaskCancelled) == "queued":
                self._finish(task_id, Status.CANCELLED)
            log.info("task=%s name=%s cancel requested", task_id, job.task_type.name)

    def open_stream(self, task_id: str, last_id: int | None, *,
                    owner: str | None = None) -> Opening:
        """A task's stream; an Opening with no frames and no subscriber means 204."""
        if owner is not None:
            self.get(task_id, owner=owner)
        opening = self.hub.open_task(task_id, last_id)
        if opening is not None:
            return opening
        found = self.store.get(task_id)
        if found is None:
            raise TaskNotFound(f"no task with id {task_id!r}")
        record, done_id = found
        if done_id is None:  # unfinished yet unknown to the hub: another worker's
            done_id = event_id_now(0)
        if last_id is not None and last_id >= done_id:
            return Opening(b"", None)
        return Opening(b"".join(e.frame for e in finished_replay(record, done_id)), None)

    def open_global_stream(self, last_id: int | None, *, owner: str | None = None) -> Opening:
        """The all-tasks stream; in per-user mode only ``owner``'s tasks."""
        return self.hub.open_global(last_id, owner=owner)

    # -- reporting from task code ----------------------------------------------

    def report_progress(self, task_id: str, progress: dict[str, Any]) -> None:
        record = self.hub.record(task_id)
        if record is None or record["status"] != Status.RUNNING:
            return  # progress after the end is dropped, not an error
        record["progress"] = progress
        self.progress_reports += 1
        self.hub.progress(task_id, progress)

    def report_log(self, task_id: str, level: str, message: str) -> None:
        record = self.hub.record(task_id)
        if record is None or record["status"] != Status.RUNNING:
            return
        self.emitted_total["log"] += 1
        self.hub.emit(task_id, "log", {"level": level, "message": message})

    # -- running ---------------------------------------------------------------

    def _execute(self, task_id: str) -> None:
        job = self._jobs[task_id]
        record = self.hub.record(task_id)
        assert record is not None
        record.update(status=Status.RUNNING.value, started_at=format_time(time.time()))
        job.started = time.monotonic()
        _name_greenlet(task_id, job.task_type.name)
        self.store.save(record)
        self.emitted_total["status"] += 1
        self.hub.emit(task_id, "status", {"status": Status.RUNNING.value})
        log.debug("task=%s name=%s status=running", task_id, job.task_type.name)
        ctx = TaskContext(self, task_id, job.params)
        try:
            result = job.task_type.func(ctx, **job.params)
            result = _json_ready(result)
        except (TaskCancelled, TaskInterrupted, gevent.GreenletExit):
            # Cancellation and shutdown are BaseExceptions: end the record, don't re-raise
            self._finish(task_id, job.stopping or Status.CANCELLED)
        except Exception as exc:
            log.exception("task=%s name=%s status=failed", task_id, job.task_type.name)
            self._finish(task_id, job.stopping or Status.FAILED, error=error_info(exc))
        else:
            self._finish(task_id, job.stopping or Status.SUCCEEDED, result=result)

    def _abandon(self, task_id: str) -> None:
        job = self._jobs.get(task_id)
        if job is not None:
            self._finish(task_id, job.stopping or Status.CANCELLED)

    def _finish(self, task_id: str, status: Status, *, result: Any = None,
                error: dict[str, str] | None = None) -> None:
        record = self.hub.record(task_id)
        if record is None or task_id not in self._jobs:
            return
        if status is Status.INTERRUPTED and error is None:
            error = {"type": "Interrupted", "message": "the worker shut down before the task ended"}
        record.update(status=status.value, finished_at=format_time(time.time()),
                      result=result if status is Status.SUCCEEDED else None, error=error)
        job = self._jobs.pop(task_id)
        self.hub.emit(task_id, "status", {"status": status.value})
        self.hub.emit(task_id, "done", record)
        self.store.save(record, done_id=self.hub.done_id(task_id))
        duration = time.monotonic() - job.started if job.started is not None else 0.0
        self.emitted_total.update(("status", "done"))
        self.finished_total[status.value] += 1
        for hook in self.on_finish:
            hook(record, duration)
        log.info("task=%s name=%s status=%s duration=%.3fs", task_id, job.task_type.name,
                 status.value, duration)

    # -- shutdown ----------------------------------------------------------------

    def shutdown(self, grace: float) -> None:
        """Stop taking tasks, let running ones finish for ``grace`` seconds, then
        interrupt them, and end every stream (each gets ``done`` or a last
        ``retry:``)."""
        if not self.accepting:
            return
        self.accepting = False
        log.info("shutting down: %d running, %d queued", self.runner.running_count,
                 self.runner.queued_count)
        for task_id in self.runner.take_queued():
            self._jobs[task_id].stopping = Status.INTERRUPTED
            self._finish(task_id, Status.INTERRUPTED)
        if not self.runner.wait_running(max(0.0, grace)):
            for job in self._jobs.values():
                job.stopping = job.stopping or Status.INTERRUPTED
            self.runner.interrupt_running(timeout=1.0)
        # The interrupted tasks' done events go out first, on the all-tasks
        # stream too; then every stream ends with a last retry:.
        self.hub.drain(timeout=1.0)
        self.hub.end_streams("shutdown")
        self.store.flush()

    def close(self) -> None:
        """Release everything (tests, and the end of ``python server.py``)."""
        self.shutdown(0)
        self.hub.close()
        self.store.close()

    @property
    def stats(self) -> dict[str, int]:
        return {"running": self.runner.running_count, "queued": self.runner.queued_count,
                "subscribers": self.hub.subscriber_count(),
                "direct_streams": self.hub.direct_count(),
                "events_held": self.hub.events_held}


def _name_greenlet(task_id: str, name: str) -> None:
    """Name the task's greenlet, so gevent's reports and the watchdog
    (watchdog.py) say which task blocked the loop."""
    current = gevent.getcurrent()
    if isinstance(current, gevent.Greenlet):
        current.name = f"task={task_id} name={name}"


def error_info(exc: BaseException) -> dict[str, str]:
    """What a client may see of an exception: its type and message, no traceback."""
    return {"type": type(exc).__name__, "message": str(exc)[:2000]}


def _json_ready(result: Any) -> Any:
    try:
        return json.loads(json.dumps(result, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"the task's result is not JSON-serialisable: {exc}") from None

