"""Events, the bounded event log, and the subscribers that read from it.

An ``EventLog`` keeps the newest events of one stream (a task's, or the
all-tasks stream) so a reconnecting client can resume exactly after its
``Last-Event-ID``. A ``Subscriber`` is one open response: the hub's publisher
hands it each batch of new events; it queues them (merging ``progress``,
newest wins, per task) until its handler greenlet writes them out (or, on the
direct path, writes them straight to the socket, queueing only what the
socket does not take; handoff.py then writes the rest).

    task greenlet --append--> EventLog --publisher greenlet--> Subscriber.deliver
                                                                   | wake
                                                   handler greenlet: take() -> socket

Nothing here does IO; waking is a ``gevent.event.Event``.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import logging

import gevent.event

from .records import event_id_now
from .sse import encode_chunk, encode_event

if TYPE_CHECKING:
    from .direct import DirectWriter

log = logging.getLogger("tasks")


@dataclass(slots=True)
class Event:
    id: int
    type: str
    task_id: str | None
    data_line: bytes  # the JSON, shared by the task's and the global stream's copy
    frame: bytes      # the whole SSE event, encoded once for every subscriber
    owner: str | None = None  # per-user mode: whose task (the all-tasks stream filters)


def make_event(event_id: int, event_type: str, task_id: str | None, data_line: bytes,
               owner: str | None = None) -> Event:
    return Event(event_id, event_type, task_id, data_line,
                 encode_event(event_id, event_type, data_line), owner)


def visible_to(owner: str | None, events: Sequence[Event]) -> list[Event]:
    """What one user may see of the all-tasks stream: their tasks' events and
    the stream's own snapshot (everything, outside per-user mode)."""
    if owner is None:
        return list(events)
    return [e for e in events if e.owner == owner or e.task_id is None]


class EventLog:
    """The newest ``capacity`` events of one stream, ids strictly increasing.

    ``floor`` is the id after which every event is still held: a client whose
    ``Last-Event-ID`` is below it has missed events and gets a fresh snapshot.
    """

    def __init__(self, *, capacity: int) -> None:
        self.events: deque[Event] = deque(maxlen=capacity)
        self.last_id = event_id_now(0)
        self.first_id = self.last_id    # the log's start: nothing happened before it
        self.floor = self.last_id
        self.published_id = self.last_id
        self.subscribers: set[Subscriber] = set()

    def append(self, event_type: str, task_id: str | None, data_line: bytes,
               owner: str | None = None) -> Event:
        event = make_event(event_id_now(self.last_id), event_type, task_id, data_line, owner)
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0].id
        self.events.append(event)
        self.last_id = event.id
        return event

    def since(self, last_id: int) -> list[Event] | None:
        """Events after ``last_id``, or None when that gap is no longer held.

        An id from before the log began (``Last-Event-ID: 0``, say) gets the
        whole history while none of it has been evicted yet.
        """
        if last_id < self.floor and not (last_id < self.first_id == self.floor):
            return None
        if last_id > self.last_id:
            return None
        newer: list[Event] = []
        for event in reversed(self.events):
            if event.id <= last_id:
                break
            newer.append(event)
        newer.reverse()
        return newer

    def unpublished(self) -> list[Event]:
        """Events appended since the publisher last delivered, oldest first."""
        events = self.since(self.published_id)
        self.published_id = self.last_id
        # A burst longer than the buffer between two rounds lost its head:
        # subscribers behind the floor are cut off in Subscriber.deliver.
        return events if events is not None else list(self.events)


class Subscriber:
    """One open stream's queue of events not yet written.

    Bounded: ``progress`` events merge (newest wins, per task); when more than
    ``backlog`` other events wait, the subscriber ends so its client resumes by
    id instead of the server holding an unbounded queue.
    """

    def __init__(self, log: EventLog, *, backlog: int, cursor: int,
                 ends_at_done: bool, owner: str | None = None) -> None:
        self.log = log
        self.owner = owner              # per-user mode: sees only this user's tasks
        self.cursor = cursor            # id of the newest event queued or written
        self.ended: str | None = None   # "done", "backlog", "gap" or "shutdown"
        self.merged = 0                 # progress events dropped for newer ones
        self._backlog = backlog
        self._ends_at_done = ends_at_done
        self._pending: list[Event | None] = []
        self._progress_at: dict[str | None, int] = {}
        self._control = 0
        self._wake: gevent.event.Event | _CallbackWake = gevent.event.Event()
        #: Set once the stream writes straight to its socket (direct.py).
        self.writer: DirectWriter | None = None

    def deliver(self, events: Sequence[Event], chunk: bytes | None = None) -> None:
        """Hand over new events (called by the publisher, never blocks).

        ``chunk`` is the events framed as one HTTP chunk, shared by every
        subscriber: a direct stream with nothing queued writes it at once.
        """
        if self.ended:
            return
        if self.cursor < self.log.floor:  # events it never got were evicted
            self.end("gap")
            return
        if self.owner is not None:
            newest, events = events[-1].id, visible_to(self.owner, events)
            if not events:  # others' events: nothing to send, but not behind either
                self.cursor = max(self.cursor, newest)
                return
            # The shared chunk holds others' events too: frame this user's own.
            chunk = encode_chunk(b"".join([e.frame for e in events])) if self.writer else None
        writer = self.writer
        if (writer is not None and chunk is not None and not self._pending
                and events[0].id > self.cursor and writer.try_write(chunk)):
            self.cursor = events[-1].id
            if self._ends_at_done and events[-1].type == "done":
                self.ended = "done"
            if not writer.is_clear or self.ended:
                self._wake.set()  # the handler finishes the write, or the response
            return
        for event in events:
            if event.id > self.cursor:
                self._queue(event)
                if self.ended:
                    break
        self._wake.set()

    def _queue(self, event: Event) -> None:
        self.cursor = event.id
        if event.type == "progress":
            earlier = self._progress_at.get(event.task_id)
            if earlier is not None:
                self._pending[earlier] = None
                self.merged += 1
            self._progress_at[event.task_id] = len(self._pending)
        else:
            self._control += 1
            if self._control > self._backlog:
                self.end("backlog")
                return
        self._pending.append(event)
        if event.type == "done" and self._ends_at_done:
            self.ended = "done"

    def take(self) -> bytes:
        """Every queued frame, joined, and the queue emptied."""
        frames = b"".join([e.frame for e in self._pending if e is not None])
        self._pending.clear()
        self._progress_at.clear()
        self._control = 0
        return frames

    @property
    def has_pending(self) -> bool:
        return bool(self._pending) or (self.writer is not None and not self.writer.is_clear)

    def wait(self, timeout: float) -> bool:
        """Block this greenlet until events arrive, the stream ends, or ``timeout``."""
        ready = self._wake.wait(timeout)
        self._wake.clear()
        return bool(ready)

    def wake_with(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` where a waiting greenlet would be woken: a
        handed-off stream has no greenlet waiting (handoff.py)."""
        self._wake = _CallbackWake(callback)

    def end(self, reason: str) -> None:
        if not self.ended:
            self.ended = reason
            if reason in ("gap", "backlog"):
                log.info("a reader fell behind (%s): its stream ends, the client resumes by id "
                         "(cursor %d, floor %d)", reason, self.cursor, self.log.floor)
        self._wake.set()


class _CallbackWake:
    """Stands in for the subscriber's ``gevent.event.Event``: ``set`` calls back."""

    __slots__ = ("set",)

    def __init__(self, callback: Callable[[], None]) -> None:
        self.set = callback

    def clear(self) -> None:
        pass

    def wait(self, timeout: float) -> bool:
        raise RuntimeError("a handed-off stream has no greenlet to wait")
