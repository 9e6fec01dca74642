"""Task records in Redis, shared by every worker on every machine.

A record is a hash (``record`` JSON, ``status``, ``done_id``, ``owner``,
``last_id``, ``floor``); listing uses a sorted set of all tasks and one per
status, scored by creation time. Records stay until deleted by hand; finished
tasks' event streams expire (``TASKS_RETENTION``).

``interrupt_unfinished`` cannot mean "everything unfinished" here as it does
on SQLite: other workers' tasks are alive. It ends the tasks whose worker
stopped refreshing their alive key (kill -9, a lost machine), and writes their
``status`` and ``done`` events so open streams everywhere end.
"""
from __future__ import annotations

import builtins
import json
import logging
import time
from datetime import datetime, timezone
from typing import Any

import gevent
import gevent.event

from ..records import FINISHED, STATUSES, Record, copy_record, format_time
from ..redis_support import REDIS_ERRORS, Connections, backend_errors
from ..sse import encode_data

log = logging.getLogger("tasks.redis")

#: Records read per round when listing one user's tasks.
_OWNER_PAGE = 200

#: How long an idempotency key keeps pointing at its task.
IDEMPOTENCY_TTL = 24 * 3600

_REINDEX = """
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then
  score = ARGV[3]
  redis.call('ZADD', KEYS[1], score, ARGV[1])
end
for i = 2, #KEYS do
  if KEYS[i] == ARGV[2] then redis.call('ZADD', KEYS[i], score, ARGV[1])
  else redis.call('ZREM', KEYS[i], ARGV[1]) end
end
return 1
"""


class RedisStore:
    def __init__(self, connections: Connections) -> None:
        self._redis: Any = connections.commands
        self._conn = connections
        self._keys = connections.keys
        self._reindex = self._redis.register_script(_REINDEX)
        self._saves: dict[str, tuple[Record, int | None]] = {}
        self._wakeup = gevent.event.Event()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._writer: gevent.Greenlet[Any, Any] | None = None
        #: Creation time (µs) of the newest task this worker created; event ids stay above it.
        self.last_created = 0

    # -- writing -------------------------------------------------------------

    def create(self, record: Record, *,
               idempotency_key: str | None = None) -> tuple[Record, bool]:
        task_id = record["id"]
        with backend_errors("storing a new task"):
            if idempotency_key is not None:
                key = self._keys.idempotency(idempotency_key)
                if not self._redis.set(key, task_id, nx=True, ex=IDEMPOTENCY_TTL):
                    return self._first_of(key), False
            self.last_created = created = max(self.last_created + 1, int(time.time() * 1e6))
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self._keys.record(task_id), mapping={
                "record": json.dumps(record), "status": record["status"],
                "owner": self._conn.worker_id, "floor": created, "last_id": created})
            pipe.set(self._keys.alive(task_id), self._conn.worker_id,
                     px=self._conn.alive_ttl_ms)
            self.index(pipe, task_id, record["status"], created)
            if "owner" in record:  # per-user mode: the owner's list
                pipe.zadd(self._keys.owned(record["owner"]), {task_id: created})
            pipe.execute()
        return record, True

    def _first_of(self, key: str) -> Record:
        """The task an idempotency key points at; its creator may still be writing it."""
        deadline = time.monotonic() + 2
        while True:
            task_id = self._redis.get(key)
            found = self.get(task_id.decode()) if task_id else None
            if found is not None:
                return found[0]
            if time.monotonic() > deadline:
                raise RuntimeError(f"idempotency key {key!r} points at a task that was never "
                                   "stored; delete the key or use another")
            gevent.sleep(0.02)

    def index(self, pipe: Any, task_id: str, status: str, created: int) -> None:
        keys = [self._keys.all_tasks, *(self._keys.status(s) for s in sorted(STATUSES))]
        self._reindex(keys=keys, args=[task_id, self._keys.status(status), created],
                      client=pipe)

    def save(self, record: Record, *, done_id: int | None = None) -> None:
        """Queued and written by one writer greenlet, newest state per task
        winning, retried while Redis is away (a task never fails for it)."""
        self._saves[record["id"]] = (copy_record(record), done_id)
        self._idle.clear()
        self._wakeup.set()
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._write_forever)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every save queued so far is written (or ``timeout``)."""
        self._idle.wait(timeout)

    def _write_forever(self) -> None:
        delay = 0.05
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            while self._saves:
                task_id, (record, done_id) = next(iter(self._saves.items()))
                try:
                    self._write(record, done_id)
                except REDIS_ERRORS as exc:
                    log.warning("saving task %s: Redis unavailable (%s); retrying in %.1f s",
                                task_id, exc, delay)
                    gevent.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                if self._saves.get(task_id, (None,))[0] is record:
                    del self._saves[task_id]
            self._idle.set()

    def _write(self, record: Record, done_id: int | None) -> None:
        task_id = record["id"]
        scripts = self._conn.scripts
        applied = scripts.save_record(keys=[self._keys.record(task_id)], args=[
            json.dumps(record), record["status"], "" if done_id is None else done_id])
        if applied:
            pipe = self._redis.pipeline(transaction=False)
            self.index(pipe, task_id, record["status"], created_us(record))
            pipe.execute()

    # -- reading -------------------------------------------------------------

    def get(self, task_id: str) -> tuple[Record, int | None] | None:
        if task_id in self._saves:
            record, done_id = self._saves[task_id]
            return copy_record(record), done_id
        with backend_errors("reading a task"):
            raw, done_id = self._redis.hmget(self._keys.record(task_id), "record", "done_id")
        if raw is None:
            return None
        return json.loads(raw), int(done_id) if done_id is not None else None

    def list(self, *, status: str | None, limit: int,
             owner: str | None = None) -> builtins.list[Record]:
        if owner is None:
            key = self._keys.all_tasks if status is None else self._keys.status(status)
            with backend_errors("listing tasks"):
                ids = self._redis.zrevrange(key, 0, limit - 1)
            return self._records(ids, status)
        # Per-user mode: the owner's own index, newest first, a page at a time.
        found: builtins.list[Record] = []
        start = 0
        while len(found) < limit:
            with backend_errors("listing tasks"):
                ids = self._redis.zrevrange(self._keys.owned(owner), start,
                                            start + _OWNER_PAGE - 1)
            found += self._records(ids, status)
            if len(ids) < _OWNER_PAGE:
                break
            start += _OWNER_PAGE
        return found[:limit]

    def _records(self, raw_ids: builtins.list[bytes], status: str | None) -> builtins.list[Record]:
        """The records of ``raw_ids`` (those with ``status``), in that order."""
        ids = [i.decode() for i in raw_ids]
        with backend_errors("listing tasks"):
            pipe = self._redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(self._keys.record(task_id), "record")
            raws = pipe.execute() if ids else []
        records = []
        for task_id, raw in zip(ids, raws):
            pending = self._saves.get(task_id)
            if pending is not None:
                raw = json.dumps(pending[0])
            if raw is not None:
                records.append(json.loads(raw))
        return [r for r in records if status is None or r["status"] == status]

    def unfinished(self) -> builtins.list[Record]:
        """Every queued or running task, oldest first (the all-tasks snapshot)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self._keys.status("queued"), 0, -1, withscores=True)
        pipe.zrange(self._keys.status("running"), 0, -1, withscores=True)
        with backend_errors("listing unfinished tasks"):
            queued, running = pipe.execute()
            ids = [i.decode() for i, _ in sorted(queued + running, key=lambda p: p[1])]
            pipe = self._redis.pipeline(transaction=False)
            for task_id in ids:
                pipe.hget(self._keys.record(task_id), "record")
            raws = pipe.execute() if ids else []
        records = [json.loads(raw) for raw in raws if raw is not None]
        return [r for r in records if r["status"] not in FINISHED]

    # -- dead workers ----------------------------------------------------------

    def interrupt_unfinished(self, *, finished_at: str, done_id: int = 0) -> int:
        """End the unfinished tasks whose worker is gone (alive key expired);
        ``done_id`` is not used: the ids come from the task's stream. With
        Redis away this finds none: every worker's hub reaps again each beat."""
        try:
            return len(self.reap(finished_at=finished_at))
        except REDIS_ERRORS as exc:
            log.warning("looking for tasks of stopped workers: Redis unavailable (%s)", exc)
            return 0

    def reap(self, *, finished_at: str | None = None) -> builtins.list[str]:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrange(self._keys.status("queued"), 0, -1)
        pipe.zrange(self._keys.status("running"), 0, -1)
        queued, running = pipe.execute()
        candidates = [i.decode() for i in queued + running]
        if not candidates:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for task_id in candidates:
            pipe.exists(self._keys.alive(task_id))
            pipe.hmget(self._keys.record(task_id), "record", "owner")
        answers = pipe.execute()
        reaped = []
        for task_id, alive, (raw, owner) in zip(candidates, answers[::2], answers[1::2]):
            if alive or raw is None or (owner and owner.decode() == self._conn.worker_id):
                continue
            if self._interrupt(task_id, raw, finished_at or format_time(time.time())):
                reaped.append(task_id)
        return reaped

    def _interrupt(self, task_id: str, raw: bytes, finished_at: str) -> bool:
        record = json.loads(raw)
        if record["status"] in FINISHED:
            return False
        record.update(status="interrupted", finished_at=finished_at, result=None, error={
            "type": "Interrupted", "message": "the worker running this task stopped"})
        ts = time.time()
        status_data = encode_data({"status": "interrupted", "task_id": task_id, "ts": ts})
        done_data = encode_data({**record, "task_id": task_id, "ts": ts})
        conn, keys = self._conn, self._keys
        ids = conn.scripts.interrupt(
            keys=[keys.record(task_id), keys.events(task_id), keys.alive(task_id)],
            args=[raw, json.dumps(record), status_data, done_data, int(ts * 1e6),
                  conn.event_buffer, conn.retention])
        if not ids:
            return False  # its worker came back, or someone else reaped it first
        pipe = self._redis.pipeline(transaction=False)
        self.index(pipe, task_id, "interrupted", created_us(record))
        conn.scripts.append_global(
            keys=[keys.global_events, keys.global_floor],
            args=[int(ts * 1e6), conn.global_buffer, "status", task_id, status_data,
                  "done", task_id, done_data], client=pipe)
        pipe.execute()
        log.warning("task %s interrupted: its worker stopped", task_id)
        return True

    def close(self) -> None:
        """Write what is pending (briefly), then release the worker's connections."""
        self.flush()
        if self._writer is not None:
            self._writer.kill()
        self._conn.close()


def created_us(record: Record) -> int:
    """A sort score from ``created_at`` (used only when the index lost the task)."""
    moment = datetime.strptime(record["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    return int(moment.replace(tzinfo=timezone.utc).timestamp() * 1e6)
