"""The memory backend's event hub: every task's event log, the all-tasks log,
and the one publisher greenlet that delivers new events to subscribers.

Emitting never blocks and never waits for readers: ``emit`` appends to the
logs, ``progress`` only remembers the newest progress (merged at the emitter),
and the publisher delivers both on its next round. Rounds are batched per log,
so a task that emits faster than readers can take sends them fewer, fresher
events instead of a backlog. The publisher yields to other greenlets every few
hundred deliveries so fan-out to thousands of readers does not starve other
requests.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import gevent
import gevent.event

from .events import Event, EventLog, Subscriber, make_event, visible_to
from .records import Record, is_finished
from .sse import encode_chunk, encode_data

log = logging.getLogger(__name__)

#: Deliveries between two yields of the publisher (PERF-NOTES: fairness).
_DELIVERIES_PER_YIELD = 256


class TaskLog(EventLog):
    """A task's event log plus its live record and not yet published progress."""

    def __init__(self, task_id: str, record: Record, *, capacity: int) -> None:
        super().__init__(capacity=capacity)
        self.task_id, self.record = task_id, record
        self.pending_progress: dict[str, Any] | None = None
        self.done_id: int | None = None


@dataclass
class Opening:
    """What a new stream starts with: frames to send at once, and the
    subscriber to follow (None when the stream ends after them)."""
    frames: bytes
    subscriber: Subscriber | None


class MemoryHub:
    def __init__(self, *, event_buffer: int, global_buffer: int, retention: float,
                 backlog: int, max_retained: int = 5000, max_held: int = 1_000_000) -> None:
        self._event_buffer = event_buffer
        self._retention = retention
        self._backlog = backlog
        self._max_retained = max_retained
        self._max_held = max_held
        self.events_held = 0  # in every task's log: finished tasks' go first past max_held
        self._logs: dict[str, TaskLog] = {}
        self._retired: deque[tuple[float, str]] = deque()
        self._global = EventLog(capacity=global_buffer)
        self._dirty: dict[EventLog, None] = {}
        self._wakeup = gevent.event.Event()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._publisher: gevent.Greenlet[[], None] | None = None
        self.events_emitted = 0
        self.events_delivered = 0  # events handed to subscribers, one per subscriber

    # -- emitting --------------------------------------------------------

    def create(self, record: Record) -> None:
        """Start a task's log; the all-tasks stream gets the record as a snapshot."""
        self._prune()
        task_log = TaskLog(record["id"], record, capacity=self._event_buffer)
        self._logs[record["id"]] = task_log
        self._append_global("snapshot", task_log, event_data(record, record["id"]))

    def emit(self, task_id: str, event_type: str, payload: dict[str, Any]) -> None:
        """Append a status, log or done event (any progress waiting goes first)."""
        task_log = self._logs[task_id]
        self._flush_progress(task_log)
        data_line = event_data(payload, task_id)
        event = self._append_task(task_log, event_type, data_line)
        if event_type == "done":
            task_log.done_id = event.id
            self._retired.append((time.monotonic() + self._retention, task_id))
        self._append_global(event_type, task_log, data_line)
        self._mark(task_log)

    def progress(self, task_id: str, progress: dict[str, Any]) -> None:
        """Remember the newest progress; the publisher sends it on its next round."""
        task_log = self._logs[task_id]
        task_log.pending_progress = {**progress, "ts": time.time()}
        self._mark(task_log)

    def _flush_progress(self, task_log: TaskLog) -> None:
        progress = task_log.pending_progress
        if progress is None:
            return
        task_log.pending_progress = None
        progress["task_id"] = task_log.task_id  # our own copy (progress()): no second one
        data_line = encode_data(progress)
        self._append_task(task_log, "progress", data_line)
        self._append_global("progress", task_log, data_line)

    def _append_task(self, task_log: TaskLog, event_type: str, data_line: bytes) -> Event:
        if len(task_log.events) < self._event_buffer:  # else the oldest makes room
            self.events_held += 1
            if self.events_held > self._max_held:
                self._prune()
        return task_log.append(event_type, task_log.task_id, data_line)

    def _append_global(self, event_type: str, task_log: TaskLog, data_line: bytes) -> None:
        self._global.append(event_type, task_log.task_id, data_line, task_log.record.get("owner"))
        self.events_emitted += 1
        self._mark(self._global)

    def _mark(self, event_log: EventLog) -> None:
        self._dirty[event_log] = None
        self._idle.clear()
        self._wakeup.set()
        if self._publisher is None or self._publisher.dead:
            self._publisher = gevent.spawn(self._publish_forever)

    # -- publishing --------------------------------------------------------

    def _publish_forever(self) -> None:
        while True:
            if not self._dirty:
                self._idle.set()
            self._wakeup.wait()
            self._wakeup.clear()
            while self._dirty:
                event_log = next(iter(self._dirty))
                del self._dirty[event_log]
                if isinstance(event_log, TaskLog):
                    self._flush_progress(event_log)
                self._publish(event_log)

    def _publish(self, event_log: EventLog) -> None:
        if not event_log.subscribers:  # nobody to hand them to: skip the walk back
            event_log.published_id = event_log.last_id
            return
        events = event_log.unpublished()
        if not events:
            return
        chunk = encode_chunk(b"".join([e.frame for e in events]))  # framed once for all
        subscribers = list(event_log.subscribers)
        self.events_delivered += len(events) * len(subscribers)  # once a batch: /metrics
        for count, subscriber in enumerate(subscribers, 1):
            subscriber.deliver(events, chunk)
            if count % _DELIVERIES_PER_YIELD == 0:
                gevent.sleep(0)

    # -- reading -----------------------------------------------------------

    def record(self, task_id: str) -> Record | None:
        task_log = self._logs.get(task_id)
        return task_log.record if task_log is not None else None

    def done_id(self, task_id: str) -> int | None:
        task_log = self._logs.get(task_id)
        return task_log.done_id if task_log else None

    def active_records(self, owner: str | None = None) -> list[Record]:
        """Queued and running tasks (only ``owner``'s, when given)."""
        return [t.record for t in self._logs.values() if not is_finished(t.record)
                and (owner is None or t.record.get("owner") == owner)]

    def open_task(self, task_id: str, last_id: int | None) -> Opening | None:
        """A stream on a task this hub holds; None when it holds no such task."""
        task_log = self._logs.get(task_id)
        if task_log is None:
            return None
        done_id = task_log.done_id
        if done_id is not None and last_id is not None and last_id >= done_id:
            return Opening(b"", None)  # the view answers 204
        if task_log.pending_progress is not None:
            # A snapshot carries the id of the newest event it reflects: give
            # the progress it would show its id first (others get it as usual).
            self._flush_progress(task_log)
            self._mark(task_log)
        replay = task_log.since(last_id) if last_id is not None else None
        if replay is None and done_id is not None:
            # done is the last event a task appends, so the log always holds it
            replay = [snapshot_event(task_log.record, done_id - 1), task_log.events[-1]]
        elif replay is None:
            replay = [snapshot_event(task_log.record, task_log.last_id)]
        return self._follow(task_log, replay, ends_at_done=True)

    def open_global(self, last_id: int | None, *, owner: str | None = None) -> Opening:
        """The all-tasks stream; in per-user mode, of ``owner``'s tasks only."""
        replay = self._global.since(last_id) if last_id is not None else None
        if replay is None:
            replay = [global_snapshot(self.active_records(owner), self._global.last_id)]
        return self._follow(self._global, replay, ends_at_done=False, owner=owner)

    def _follow(self, event_log: EventLog, replay: list[Event], *,
                ends_at_done: bool, owner: str | None = None) -> Opening:
        # Unpublished events are in the replay; the cursor skips them later.
        subscriber = Subscriber(event_log, backlog=self._backlog,
                                cursor=replay[-1].id if replay else event_log.last_id,
                                ends_at_done=ends_at_done, owner=owner)
        frames = b"".join(e.frame for e in visible_to(owner, replay))
        if ends_at_done and replay and replay[-1].type == "done":
            return Opening(frames, None)
        event_log.subscribers.add(subscriber)
        return Opening(frames, subscriber)

    def backend_problem(self, *, timeout: float) -> str | None:
        """Why the backend cannot be reached, or None: memory always can."""
        return None

    def drain(self, timeout: float) -> bool:
        """Wait until every emitted event has been handed to its subscribers."""
        return self.wait_published(timeout)

    def wait_published(self, timeout: float) -> bool:
        """Wait until this worker's publisher has nothing left to hand over."""
        return bool(self._idle.wait(timeout))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscriber.log.subscribers.discard(subscriber)

    def direct_count(self) -> int:
        """Open streams written straight to their sockets (direct.py)."""
        logs = [self._global, *self._logs.values()]
        return sum(s.writer is not None for log in logs for s in log.subscribers)

    def subscriber_count(self, task_id: str | None = None) -> int:
        if task_id is None:
            return len(self._global.subscribers) + sum(
                len(t.subscribers) for t in self._logs.values())
        task_log = self._logs.get(task_id)
        return len(task_log.subscribers) if task_log else 0

    # -- lifecycle ---------------------------------------------------------

    def end_streams(self, reason: str) -> None:
        """End every open stream (shutdown): handlers write a last retry: and return."""
        for event_log in [self._global, *self._logs.values()]:
            for subscriber in list(event_log.subscribers):
                subscriber.end(reason)

    def close(self) -> None:
        self.end_streams("shutdown")
        if self._publisher is not None:
            self._publisher.kill(block=False)

    def _prune(self) -> None:
        """Forget finished tasks' logs, oldest first: after the retention time,
        or sooner past the caps on finished logs and on events held (their
        streams then replay from the record store: snapshot and done)."""
        now = time.monotonic()
        for _ in range(len(self._retired)):
            if not (self._retired[0][0] <= now or len(self._retired) > self._max_retained
                    or self.events_held > self._max_held):
                return
            _, task_id = self._retired.popleft()
            task_log = self._logs.get(task_id)
            if task_log is None:
                continue
            if task_log.subscribers:  # a reader still follows it: look again later
                self._retired.append((now + self._retention, task_id))
                continue
            del self._logs[task_id]
            self.events_held -= len(task_log.events)


def event_data(payload: dict[str, Any], task_id: str, *, stamp: bool = True) -> bytes:
    """An event's data line: ``payload`` naming its task, stamped with the time
    (``ts``: readers measure freshness by it); ``stamp=False`` when the payload
    carries its own (progress: the time of the update, not of the flush)."""
    data = {**payload, "task_id": task_id}
    if stamp:
        data["ts"] = time.time()
    return encode_data(data)


def global_snapshot(records: list[Record], event_id: int) -> Event:
    """The all-tasks stream's first event: the tasks not yet finished."""
    return make_event(event_id, "snapshot", None,
                      encode_data({"tasks": records, "ts": time.time()}))


def snapshot_event(record: Record, event_id: int) -> Event:
    """The whole record as a ``snapshot`` carrying the id of the newest event it reflects."""
    return make_event(event_id, "snapshot", record["id"], event_data(record, record["id"]))


def finished_replay(record: Record, done_id: int) -> list[Event]:
    """What a fresh stream of a finished task sends: snapshot (id below done's),
    then done. Also used for tasks only the record store still knows."""
    return [snapshot_event(record, done_id - 1),
            make_event(done_id, "done", record["id"], event_data(record, record["id"]))]
