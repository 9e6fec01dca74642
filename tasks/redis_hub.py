"""The Redis backend's event hub: any worker on any machine serves any task's
stream, and the all-tasks stream, from Redis Streams.

    task greenlet --emit--> queue --writer greenlet--> XADD (task stream, global stream)
                                                          |
    worker B: one reader greenlet per followed stream: XREAD BLOCK --> local EventLog
              --> MemoryHub's publisher --> every local Subscriber (fast path included)

Emitting never waits for Redis: the writer sends each task's batch (progress
merged at the emitter, newest wins) in one script call per round, and retries
with back-off while Redis is away; ids are assigned at emit time, so they stay
increasing and ``done_id`` is known at once. A thousand readers of one task on
one worker are one Redis connection (one reader). Readers end when their last
subscriber leaves, or with a last ``retry:`` when Redis goes away.

Each running task keeps an alive key with a TTL; every worker's monitor
greenlet refreshes its own and ends others' tasks whose key expired
(``RedisStore.reap``). Cancels travel on a pub/sub channel to every worker.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
import gevent.event

from .events import Event, EventLog, Subscriber, visible_to
from .hub import MemoryHub, Opening, finished_replay, global_snapshot, snapshot_event
from .records import Record, event_id_now, is_finished
from .redis_support import (REDIS_ERRORS, Connections, backend_errors, entry_id,
                            parse_entry_id, stream_holds, to_event)
from .sse import encode_data
from .stores.redis import RedisStore, created_us

log = logging.getLogger("tasks.redis")

#: How long one XREAD blocks; also how often a reader rechecks that it is wanted.
_READ_BLOCK_MS = 5000
#: Global events sent per writer round (one script call).
_GLOBAL_BATCH = 500
#: Longest back-off between two attempts while Redis is away.
_MAX_BACKOFF = 2.0
#: All-tasks events a worker keeps for Redis during an outage, in buffers of
#: TASKS_GLOBAL_EVENT_BUFFER; past it they are dropped and the stream's floor
#: raised, so resuming clients get a fresh snapshot instead of a silent gap.
_GLOBAL_QUEUE_BUFFERS = 10


@dataclass(eq=False)
class _Owned:
    """A task this worker runs: its live record and the events not yet in Redis."""
    record: Record
    last_id: int                    # id of the newest event emitted
    acked_id: int                   # id of the newest event Redis confirmed
    done_id: int | None = None
    pending_progress: dict[str, Any] | None = None
    queue: list[tuple[int, str, bytes]] = field(default_factory=list)
    reaped: bool = False


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
        self._cancel_here = cancel
        self._owned: dict[str, _Owned] = {}
        self._to_write: dict[_Owned, None] = {}
        self._global_queue: list[tuple[str, str, str, bytes]] = []  # type, task, owner, data
        self._global_gap = False
        self._written: dict[str, int] = {}      # followed stream -> newest id Redis confirmed
        self._follows: dict[str, _RemoteLog] = {}
        self._write_wakeup = gevent.event.Event()
        self._written_all = gevent.event.Event()
        self._written_all.set()
        self._closing = False
        self._greenlets = [gevent.spawn(self._write_forever),
                           gevent.spawn(self._monitor_forever),
                           gevent.spawn(self._listen_forever)]

    # -- emitting (tasks this worker runs) ---------------------------------------

    def create(self, record: Record) -> None:
        start = max(event_id_now(0), self._store.last_created)
        owned = _Owned(record, last_id=start, acked_id=start)
        self._owned[record["id"]] = owned
        self._global_queue.append(("snapshot", record["id"], record.get("owner", ""),
                                   _data(record, record["id"])))
        self._touch(None)

    def emit(self, task_id: str, event_type: str, payload: dict[str, Any]) -> None:
        owned = self._owned[task_id]
        self._flush_owned_progress(task_id, owned)
        data_line = _data(payload, task_id)
        owned.last_id = event_id_now(owned.last_id)
        owned.queue.append((owned.last_id, event_type, data_line))
        if event_type == "done":
            owned.done_id = owned.last_id
        self._global_queue.append((event_type, task_id, owned.record.get("owner", ""), data_line))
        self._touch(owned)

    def progress(self, task_id: str, progress: dict[str, Any]) -> None:
        owned = self._owned[task_id]
        owned.pending_progress = {**progress, "ts": time.time()}
        self._touch(owned)

    def _flush_owned_progress(self, task_id: str, owned: _Owned) -> None:
        progress = owned.pending_progress
        if progress is None:
            return
        owned.pending_progress = None
        data_line = _data(progress, task_id, stamp=False)
        owned.last_id = event_id_now(owned.last_id)
        owned.queue.append((owned.last_id, "progress", data_line))
        self._global_queue.append(("progress", task_id, owned.record.get("owner", ""), data_line))

    def _touch(self, owned: _Owned | None) -> None:
        if len(self._global_queue) > _GLOBAL_QUEUE_BUFFERS * self._conn.global_buffer:
            log.warning("Redis away too long: dropping %d all-tasks events; clients "
                        "resuming /api/events get a fresh snapshot", len(self._global_queue))
            self._global_queue.clear()
            self._global_gap = True
        if owned is not None:
            self._to_write[owned] = None
        self._written_all.clear()
        self._write_wakeup.set()

    # -- the writer ----------------------------------------------------------------

    def _write_forever(self) -> None:
        delay = 0.05
        while True:
            if not self._to_write and not self._global_queue:
                self._written_all.set()
            self._write_wakeup.wait()
            self._write_wakeup.clear()
            while self._to_write or self._global_queue:
                try:
                    self._write_round()
                except REDIS_ERRORS as exc:
                    if delay == 0.05:
                        log.warning("writing events: Redis unavailable (%s); retrying", exc)
                    gevent.sleep(delay)  # back off: no spinning while Redis is away
                    delay = min(delay * 2, _MAX_BACKOFF)
                else:
                    delay = 0.05

    def _write_round(self) -> None:
        batch = list(self._to_write)
        self._to_write.clear()
        sent: list[tuple[str, _Owned, int, int, bool]] = []
        pipe = self._redis.pipeline(transaction=False)
        try:
            gap = self._global_gap
            if gap:  # events were dropped: resuming from before them means a snapshot
                pipe.set(self._keys.global_floor, event_id_now(0))
            for owned in batch:
                task_id = owned.record["id"]
                self._flush_owned_progress(task_id, owned)
                events = list(owned.queue)
                last = events[-1][0] if events else owned.acked_id
                has_done = owned.done_id is not None and owned.done_id <= last
                args: list[Any] = [
                    json.dumps(owned.record), owned.record["status"], last, owned.acked_id,
                    self._conn.worker_id, self._conn.alive_ttl_ms, self._conn.event_buffer,
                    self._conn.retention, owned.done_id if has_done else ""]
                for event_id, event_type, data_line in events:
                    args += [event_id, event_type, data_line]
                self._conn.scripts.flush_task(
                    keys=[self._keys.record(task_id), self._keys.events(task_id),
                          self._keys.alive(task_id)], args=args, client=pipe)
                sent.append((task_id, owned, len(events), last, has_done))
            global_events = self._global_queue[:_GLOBAL_BATCH]
            if global_events:
                args = [int(time.time() * 1e6), self._conn.global_buffer]
                for event in global_events:
                    args += list(event)
                self._conn.scripts.append_global(
                    keys=[self._keys.global_events, self._keys.global_floor], args=args,
                    client=pipe)
            results = pipe.execute()
            if gap:
                self._global_gap = False
                results = results[1:]
        except BaseException:
            for owned in batch:
                self._to_write[owned] = None  # try again next round, ids unchanged
            raise
        reindex = []
        for (task_id, owned, count, last, has_done), result in zip(sent, results):
            del owned.queue[:count]
            owned.acked_id = last
            if self._keys.events(task_id) in self._follows:  # only drain() reads these
                self._written[self._keys.events(task_id)] = last
            if result == 0 and not owned.reaped:
                owned.reaped = True
                log.warning("task %s was ended by another worker that thought this one "
                            "dead; cancelling it here", task_id)
                gevent.spawn(self._cancel_here, task_id)
            elif result == 2:
                reindex.append(owned.record)  # Redis lost the record: index it again
            if has_done and not owned.queue:
                del self._owned[task_id]
        if global_events:
            del self._global_queue[:len(global_events)]
            self._written[self._keys.global_events] = parse_entry_id(results[-1][-1])
        if reindex:
            pipe = self._redis.pipeline(transaction=False)
            for record in reindex:
                self._store.index(pipe, record["id"], record["status"], created_us(record))
            pipe.execute()

    # -- alive keys, dead workers, cancels -------------------------------------------

    def _monitor_forever(self) -> None:
        """Refresh this worker's tasks' alive keys; end other workers' dead tasks."""
        failing = False
        while True:
            try:
                pipe = self._redis.pipeline(transaction=False)
                for task_id, owned in list(self._owned.items()):
                    if owned.done_id is None:
                        pipe.set(self._keys.alive(task_id), self._conn.worker_id,
                                 px=self._conn.alive_ttl_ms)
                pipe.set(self._keys.global_floor, event_id_now(0), nx=True)
                pipe.execute()
                self._store.reap()
                if failing:
                    log.info("Redis is back")
                failing = False
            except REDIS_ERRORS as exc:
                if not failing:
                    log.warning("alive keys: Redis unavailable (%s)", exc)
                failing = True
            gevent.sleep(self._conn.heartbeat)

    def _listen_forever(self) -> None:
        """Cancel requests for tasks this worker runs, from any worker."""
        delay = 0.1
        while True:
            pubsub = self._readers.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self._keys.control)
                delay = 0.1
                while True:
                    message = pubsub.get_message(timeout=_READ_BLOCK_MS / 1000)
                    if message is not None and message["type"] == "message":
                        self._cancel_here(message["data"].decode())
            except REDIS_ERRORS:
                gevent.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
            finally:
                pubsub.close()

    def forward_cancel(self, task_id: str) -> None:
        """Ask whichever worker runs ``task_id`` to cancel it."""
        with backend_errors("forwarding a cancel"):
            self._redis.publish(self._keys.control, task_id)

    # -- reading -------------------------------------------------------------------

    def record(self, task_id: str) -> Record | None:
        owned = self._owned.get(task_id)
        return owned.record if owned is not None else None

    def done_id(self, task_id: str) -> int | None:
        owned = self._owned.get(task_id)
        return owned.done_id if owned is not None else None

    def active_records(self, owner: str | None = None) -> list[Record]:
        return [o.record for o in self._owned.values() if not is_finished(o.record)
                and (owner is None or o.record.get("owner") == owner)]

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
        if not self._written_all.wait(timeout):
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
        self._closing = True
        self._written_all.wait(1.0)
        super().close()
        readers = [f.reader for f in self._follows.values() if f.reader is not None]
        gevent.killall(self._greenlets + readers, block=True, timeout=2)
        self._follows.clear()


def _task_of(events_key: str) -> str:
    """The task id inside ``<prefix>:{<task id>}:events``."""
    return events_key[events_key.rindex("{") + 1:events_key.rindex("}")]


def _data(payload: dict[str, Any], task_id: str, *, stamp: bool = True) -> bytes:
    data = {**payload, "task_id": task_id}
    if stamp:
        data["ts"] = time.time()
    return encode_data(data)
