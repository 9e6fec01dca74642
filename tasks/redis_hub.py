"""The Redis backend's event hub: any worker on any machine serves any task's
stream, and the all-tasks stream, from Redis Streams.

    worker A: task greenlet --emit--> RedisWriter (redis_writer.py) --> XADD
    worker B: one reader greenlet per followed stream: XREAD BLOCK --> local EventLog
              --> MemoryHub's publisher --> every local Subscriber (fast path included)

A thousand readers of one task on one worker are one Redis connection (one
reader). Readers end when their last subscriber leaves, or with a last
``retry:`` when Redis goes away. Opening a stream reads the record and the
events after the client's id in one round trip, and joins the reader's
events after them, so none is missed or sent twice.
"""
from __future__ import annotations

import json
import logging
import time
from typing import Any, Callable

import gevent
import gevent.event

from .events import Event, EventLog, Subscriber, visible_to
from .hub import MemoryHub, Opening, finished_replay, global_snapshot, snapshot_event
from .records import Record, event_id_now
from .redis_support import (REDIS_ERRORS, Connections, backend_errors, entry_id,
                            parse_entry_id, stream_holds, to_event)
from .redis_writer import RedisWriter
from .stores.redis import RedisStore

log = logging.getLogger("tasks.redis")

#: How long one XREAD blocks; also how often a reader rechecks that it is wanted.
_READ_BLOCK_MS = 5000


class _RemoteLog(EventLog):
    """A local copy of a Redis stream's newest events, filled by its reader."""

    def __init__(self, key: str, *, capacity: int, position: int) -> None:
        super().__init__(capacity=capacity)
        self.key = key
        self.last_id = self.floor = self.published_id = position
        self.reader: gevent.Greenlet[Any, Any] | None = None

    def add(self, event: Event) -> None:
        if event.id <= self.last_id:
            return
        if len(self.events) == self.events.maxlen:
            self.floor = self.events[0].id
        self.events.append(event)
        self.last_id = event.id


class RedisHub(MemoryHub):
    def __init__(self, connections: Connections, store: RedisStore, *, backlog: int,
                 cancel: Callable[[str], None]) -> None:
        super().__init__(event_buffer=connections.event_buffer,
                         global_buffer=connections.global_buffer,
                         retention=connections.retention, backlog=backlog)
        self._conn, self._keys, self._store = connections, connections.keys, store
        self._redis: Any = connections.commands
        self._readers: Any = connections.readers
        self._written: dict[str, int] = {}      # followed stream -> newest id Redis confirmed
        self._follows: dict[str, _RemoteLog] = {}
        self.writer = RedisWriter(connections, store, cancel=cancel, confirmed=self._confirmed)

    # -- emitting (tasks this worker runs: redis_writer.py) -----------------------------

    def create(self, record: Record) -> None:
        self.writer.create(record)

    def emit(self, task_id: str, event_type: str, payload: dict[str, Any]) -> None:
        self.writer.emit(task_id, event_type, payload)

    def progress(self, task_id: str, progress: dict[str, Any]) -> None:
        self.writer.progress(task_id, progress)

    def forward_cancel(self, task_id: str) -> None:
        self.writer.forward_cancel(task_id)

    def _confirmed(self, key: str, last_id: int) -> None:
        if key == self._keys.global_events or key in self._follows:  # only drain() reads these
            self._written[key] = last_id

    # -- reading -------------------------------------------------------------------

    def record(self, task_id: str) -> Record | None:
        owned = self.writer.owned.get(task_id)
        return owned.record if owned is not None else None

    def done_id(self, task_id: str) -> int | None:
        owned = self.writer.owned.get(task_id)
        return owned.done_id if owned is not None else None

    def active_records(self, owner: str | None = None) -> list[Record]:
        return self.writer.active_records(owner)

    def open_task(self, task_id: str, last_id: int | None) -> Opening | None:
        """A stream on any task in Redis; None when Redis has no such task."""
        key = self._keys.events(task_id)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hmget(self._keys.record(task_id), "record", "last_id", "done_id", "floor")
        if last_id is not None:
            pipe.xinfo_stream(key)
            pipe.xrange(key, f"({entry_id(last_id)}", "+")
        with backend_errors("opening a task's stream"):
            answers = pipe.execute(raise_on_error=False)
        if isinstance(answers[0], Exception):
            raise answers[0]
        raw, raw_last, raw_done, raw_floor = answers[0]
        if raw is None:
            return None
        record = json.loads(raw)
        done_id = int(raw_done) if raw_done is not None else None
        if done_id is not None and last_id is not None and last_id >= done_id:
            return Opening(b"", None)  # the view answers 204
        floor = int(raw_floor or 0)
        if last_id is not None and stream_holds(answers[1], floor=floor, after=last_id):
            replay = [to_event(i, f, task_id) for i, f in answers[2]]
            return self._attach(key, replay, replay[-1].id if replay else last_id,
                                ends_at_done=True)
        if done_id is not None:
            return Opening(b"".join(e.frame for e in finished_replay(record, done_id)), None)
        position = int(raw_last or floor)
        return self._attach(key, [snapshot_event(record, position)], position,
                            ends_at_done=True)

    def open_global(self, last_id: int | None, *, owner: str | None = None) -> Opening:
        key = self._keys.global_events
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.global_floor)
        pipe.xinfo_stream(key)
        if last_id is not None:
            pipe.xrange(key, f"({entry_id(last_id)}", "+")
        with backend_errors("opening the all-tasks stream"):
            answers = pipe.execute(raise_on_error=False)
            if isinstance(answers[0], Exception):
                raise answers[0]
            floor = int(answers[0]) if answers[0] is not None else None
            info = answers[1]
            if last_id is not None and floor is not None and stream_holds(
                    info, floor=floor, after=last_id):
                replay = [to_event(i, f, None) for i, f in answers[2]]
                return self._attach(key, replay, replay[-1].id if replay else last_id,
                                    ends_at_done=False, owner=owner)
            if isinstance(info, dict):
                position = parse_entry_id(info["last-generated-id"])
            elif floor is not None:
                position = floor
            else:
                position = event_id_now(0)
                self._redis.set(self._keys.global_floor, position, nx=True)
            records = [self.record(r["id"]) or r for r in self._store.unfinished()
                       if owner is None or r.get("owner") == owner]
        return self._attach(key, [global_snapshot(records, position)], position,
                            ends_at_done=False, owner=owner)

    def _attach(self, key: str, replay: list[Event], cursor: int, *,
                ends_at_done: bool, owner: str | None = None) -> Opening:
        """Subscribe to the worker's reader of ``key`` from ``cursor`` on,
        starting the reader if none runs; events the reader already holds
        past ``cursor`` join the replay, so none is missed or sent twice."""
        if ends_at_done and replay and replay[-1].type == "done":
            return Opening(b"".join(e.frame for e in replay), None)
        follow = None
        for _ in range(3):
            follow = self._follows.get(key)
            if follow is None:
                follow = self._start_reader(key, cursor)
                break
            if cursor >= follow.floor:
                replay += follow.since(cursor) or []
                break
            # That reader started after our position: fetch what lies between.
            with backend_errors("opening a stream"):
                between = self._redis.xrange(
                    key, f"({entry_id(cursor)}", entry_id(follow.floor))
            task_id = None if key == self._keys.global_events else _task_of(key)
            replay += [to_event(i, f, task_id) for i, f in between]
            cursor = follow.floor
        assert follow is not None
        if replay:
            cursor = max(cursor, replay[-1].id)
        frames = b"".join(e.frame for e in visible_to(owner, replay))
        if ends_at_done and replay and replay[-1].type == "done":
            self._stop_reader_if_unused(follow)
            return Opening(frames, None)
        subscriber = Subscriber(follow, backlog=self._backlog, cursor=cursor,
                                ends_at_done=ends_at_done, owner=owner)
        follow.subscribers.add(subscriber)
        return Opening(frames, subscriber)

    def _start_reader(self, key: str, position: int) -> _RemoteLog:
        capacity = self._conn.global_buffer if key == self._keys.global_events \
            else self._conn.event_buffer
        follow = _RemoteLog(key, capacity=capacity, position=position)
        self._follows[key] = follow
        follow.reader = gevent.spawn(self._read_forever, follow)
        return follow

    def _read_forever(self, follow: _RemoteLog) -> None:
        """Feed one stream's local subscribers from Redis, one XREAD at a time."""
        task_id = None if follow.key == self._keys.global_events else _task_of(follow.key)
        try:
            while follow.subscribers:
                answer = self._readers.xread({follow.key: entry_id(follow.last_id)},
                                                  count=1000, block=_READ_BLOCK_MS)
                for _, entries in answer:
                    for raw_id, fields in entries:
                        follow.add(to_event(raw_id, fields, task_id))
                if answer:
                    self._mark(follow)  # MemoryHub's publisher delivers the batch
        except REDIS_ERRORS as exc:
            log.warning("reading %s: Redis unavailable (%s); ending its %d stream(s)",
                        follow.key, exc, len(follow.subscribers))
            for subscriber in list(follow.subscribers):
                subscriber.end("shutdown")  # a last retry:, then the client comes back
        finally:
            if self._follows.get(follow.key) is follow:
                del self._follows[follow.key]
                self._forget_written(follow.key)

    def _stop_reader_if_unused(self, follow: _RemoteLog) -> None:
        if follow.subscribers:
            return
        if self._follows.get(follow.key) is follow:
            del self._follows[follow.key]
            self._forget_written(follow.key)
        if follow.reader is not None and follow.reader is not gevent.getcurrent():
            follow.reader.kill(block=False)

    def _forget_written(self, key: str) -> None:
        if key != self._keys.global_events:
            self._written.pop(key, None)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        follow = subscriber.log
        follow.subscribers.discard(subscriber)
        if isinstance(follow, _RemoteLog):
            self._stop_reader_if_unused(follow)

    def subscriber_count(self, task_id: str | None = None) -> int:
        if task_id is None:
            return sum(len(f.subscribers) for f in self._follows.values())
        follow = self._follows.get(self._keys.events(task_id))
        return len(follow.subscribers) if follow is not None else 0

    def direct_count(self) -> int:
        return sum(s.writer is not None for f in self._follows.values() for s in f.subscribers)

    def reader_count(self) -> int:
        """Redis readers this worker runs: one per stream it serves."""
        return len(self._follows)

    # -- lifecycle -------------------------------------------------------------------

    def drain(self, timeout: float) -> bool:
        """Wait until every emitted event is in Redis, read back by this
        worker's readers and handed to their subscribers."""
        deadline = time.monotonic() + timeout
        if not self.writer.wait_written(timeout):
            return False
        while time.monotonic() < deadline:
            behind = [f for f in self._follows.values()
                      if f.subscribers and f.last_id < self._written.get(f.key, 0)]
            if not behind:
                return super().drain(max(0.0, deadline - time.monotonic()))
            gevent.sleep(0.01)
        return False

    def backend_problem(self, *, timeout: float) -> str | None:
        """Why Redis cannot be reached (a PING bounded by ``timeout``), or None."""
        deadline = gevent.Timeout(timeout)
        deadline.start()
        try:
            self._conn.commands.ping()
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise  # someone else's time-out: not ours to swallow
            return f"Redis did not answer PING within {timeout:g} s"
        except REDIS_ERRORS as exc:
            return f"Redis is unreachable: {exc}"
        finally:
            deadline.close()
        return None

    def end_streams(self, reason: str) -> None:
        for follow in list(self._follows.values()):
            for subscriber in list(follow.subscribers):
                subscriber.end(reason)

    def close(self) -> None:
        self.writer.close()
        super().close()
        readers = [f.reader for f in self._follows.values() if f.reader is not None]
        gevent.killall(readers, block=True, timeout=2)
        self._follows.clear()


def _task_of(events_key: str) -> str:
    """The task id inside ``<prefix>:{<task id>}:events``."""
    return events_key[events_key.rindex("{") + 1:events_key.rindex("}")]
