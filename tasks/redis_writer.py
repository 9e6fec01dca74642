"""The Redis backend's writing side: the events of the tasks this worker
runs go into Redis without a task ever waiting for it.

    task greenlet --emit--> queue --writer greenlet--> XADD (task stream, global stream)

The writer sends each task's batch (progress merged at the emitter, newest
wins) in one script call per round, and retries with back-off while Redis is
away; ids are assigned at emit time, so they stay increasing and ``done_id``
is known at once.

Each running task keeps an alive key with a TTL; the monitor greenlet
refreshes this worker's and ends other workers' tasks whose key expired
(``RedisStore.reap``). Cancels travel on a pub/sub channel to every worker;
the listener greenlet takes those for tasks running here.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import gevent
import gevent.event

from .hub import event_data
from .records import Record, event_id_now, is_finished
from .redis_support import REDIS_ERRORS, Connections, backend_errors, parse_entry_id
from .stores.redis import RedisStore, created_us

log = logging.getLogger("tasks.redis")

#: How long the cancel listener waits for a message before looking again.
_LISTEN_TIMEOUT = 5.0
#: Global events sent per writer round (one script call).
_GLOBAL_BATCH = 500
#: Longest back-off between two attempts while Redis is away.
_MAX_BACKOFF = 2.0
#: All-tasks events a worker keeps for Redis during an outage, in buffers of
#: TASKS_GLOBAL_EVENT_BUFFER; past it they are dropped and the stream's floor
#: raised, so resuming clients get a fresh snapshot instead of a silent gap.
_GLOBAL_QUEUE_BUFFERS = 10


@dataclass(eq=False)
class OwnedTask:
    """A task this worker runs: its live record and the events not yet in Redis."""
    record: Record
    last_id: int                    # id of the newest event emitted
    acked_id: int                   # id of the newest event Redis confirmed
    done_id: int | None = None
    pending_progress: dict[str, Any] | None = None
    queue: list[tuple[int, str, bytes]] = field(default_factory=list)
    reaped: bool = False


class RedisWriter:
    """Emits the events of this worker's tasks into Redis, keeps their alive
    keys fresh and takes the cancels meant for them.

    ``confirmed(key, last_id)`` is told each time Redis took a task's events
    up to ``last_id`` (and the global stream's, under its key); ``cancel(task_id)``
    cancels a task here.
    """

    def __init__(self, connections: Connections, store: RedisStore, *,
                 cancel: Callable[[str], None],
                 confirmed: Callable[[str, int], None]) -> None:
        self._conn, self._keys, self._store = connections, connections.keys, store
        self._redis: Any = connections.commands
        self._readers: Any = connections.readers  # for the cancel listener (pub/sub)
        self._cancel_here = cancel
        self._confirmed = confirmed
        self.owned: dict[str, OwnedTask] = {}
        self._to_write: dict[OwnedTask, None] = {}
        self._global_queue: list[tuple[str, str, str, bytes]] = []  # type, task, owner, data
        self._global_gap = False
        self._wakeup = gevent.event.Event()
        self._written_all = gevent.event.Event()
        self._written_all.set()
        self.greenlets = [gevent.spawn(self._write_forever),
                          gevent.spawn(self._monitor_forever),
                          gevent.spawn(self._listen_forever)]

    # -- emitting ------------------------------------------------------------------

    def create(self, record: Record) -> None:
        start = max(event_id_now(0), self._store.last_created)
        self.owned[record["id"]] = OwnedTask(record, last_id=start, acked_id=start)
        self._global_queue.append(("snapshot", record["id"], record.get("owner", ""),
                                   event_data(record, record["id"])))
        self._touch(None)

    def emit(self, task_id: str, event_type: str, payload: dict[str, Any]) -> None:
        owned = self.owned[task_id]
        self._flush_progress(task_id, owned)
        data_line = event_data(payload, task_id)
        owned.last_id = event_id_now(owned.last_id)
        owned.queue.append((owned.last_id, event_type, data_line))
        if event_type == "done":
            owned.done_id = owned.last_id
        self._global_queue.append((event_type, task_id, owned.record.get("owner", ""), data_line))
        self._touch(owned)

    def progress(self, task_id: str, progress: dict[str, Any]) -> None:
        owned = self.owned[task_id]
        owned.pending_progress = {**progress, "ts": time.time()}
        self._touch(owned)

    def _flush_progress(self, task_id: str, owned: OwnedTask) -> None:
        progress = owned.pending_progress
        if progress is None:
            return
        owned.pending_progress = None
        data_line = event_data(progress, task_id, stamp=False)
        owned.last_id = event_id_now(owned.last_id)
        owned.queue.append((owned.last_id, "progress", data_line))
        self._global_queue.append(("progress", task_id, owned.record.get("owner", ""), data_line))

    def _touch(self, owned: OwnedTask | None) -> None:
        if len(self._global_queue) > _GLOBAL_QUEUE_BUFFERS * self._conn.global_buffer:
            log.warning("Redis away too long: dropping %d all-tasks events; clients "
                        "resuming /api/events get a fresh snapshot", len(self._global_queue))
            self._global_queue.clear()
            self._global_gap = True
        if owned is not None:
            self._to_write[owned] = None
        self._written_all.clear()
        self._wakeup.set()

    def active_records(self, owner: str | None = None) -> list[Record]:
        """Queued and running tasks of this worker (only ``owner``'s, when given)."""
        return [o.record for o in self.owned.values() if not is_finished(o.record)
                and (owner is None or o.record.get("owner") == owner)]

    def wait_written(self, timeout: float) -> bool:
        """Wait until Redis has every event emitted so far; False on time-out."""
        return bool(self._written_all.wait(timeout))

    # -- the writer ----------------------------------------------------------------

    def _write_forever(self) -> None:
        delay = 0.05
        while True:
            if not self._to_write and not self._global_queue:
                self._written_all.set()
            self._wakeup.wait()
            self._wakeup.clear()
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
        sent: list[tuple[str, OwnedTask, int, int, bool]] = []
        pipe = self._redis.pipeline(transaction=False)
        try:
            gap = self._global_gap
            if gap:  # events were dropped: resuming from before them means a snapshot
                pipe.set(self._keys.global_floor, event_id_now(0))
            for owned in batch:
                task_id = owned.record["id"]
                self._flush_progress(task_id, owned)
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
            self._confirmed(self._keys.events(task_id), last)
            if result == 0 and not owned.reaped:
                owned.reaped = True
                log.warning("task %s was ended by another worker that thought this one "
                            "dead; cancelling it here", task_id)
                gevent.spawn(self._cancel_here, task_id)
            elif result == 2:
                reindex.append(owned.record)  # Redis lost the record: index it again
            if has_done and not owned.queue:
                del self.owned[task_id]
        if global_events:
            del self._global_queue[:len(global_events)]
            self._confirmed(self._keys.global_events, parse_entry_id(results[-1][-1]))
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
                for task_id, owned in list(self.owned.items()):
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
                    message = pubsub.get_message(timeout=_LISTEN_TIMEOUT)
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

    def close(self) -> None:
        self._written_all.wait(1.0)  # a last chance for what was emitted
        gevent.killall(self.greenlets, block=True, timeout=2)

