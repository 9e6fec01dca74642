"""Task records in SQLite, without stalling the event loop.

In WAL mode with ``synchronous=NORMAL`` a commit appends to the WAL in the
page cache and never waits for the disk; only a checkpoint calls fsync. So the
short statements run right here on the loop, batched: one writer greenlet
commits every create and update queued during a loop iteration in one
transaction (newest state per task winning), and checkpoints run in gevent's
threadpool on a connection of their own. Statements in the threadpool would
cost a thread hop each and make the SQLite thread and the busy loop thread
take turns at the GIL (a switch interval, 5 ms, per turn) for no gain: on
S4 the two designs measured the same here (about 1,400 starts/s on a shared,
noisy machine).

A crash loses at most the last few milliseconds of updates; the next start
marks such tasks ``interrupted``.
"""
from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, TypeAlias

import gevent
import gevent.event

from ..records import Record, copy_record

_Stored: TypeAlias = "gevent.event.AsyncResult[tuple[Record, bool]]"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    done_id INTEGER,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (status, seq);
CREATE INDEX IF NOT EXISTS tasks_by_owner ON tasks (json_extract(record, '$.owner'), seq);
"""


class SQLiteStore:
    def __init__(self, path: str) -> None:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self._path = path
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None,
                                   timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints fsync: not on the loop
        self._db.executescript(_SCHEMA)
        self._commits_since_checkpoint = 0
        self._closed = False
        self._checkpoint: gevent.event.AsyncResult[None] | None = None
        self._creates: list[tuple[Record, str | None, _Stored]] = []
        self._saves: dict[str, tuple[Record, int | None]] = {}
        self._wakeup = gevent.event.Event()
        self._idle = gevent.event.Event()
        self._idle.set()
        self._writer: gevent.Greenlet[[], None] | None = None

    # -- writing -------------------------------------------------------------

    def create(self, record: Record, *,
               idempotency_key: str | None = None) -> tuple[Record, bool]:
        done: _Stored = gevent.event.AsyncResult()
        self._creates.append((dict(record), idempotency_key, done))
        self._kick()
        stored = done.get()
        assert stored is not None
        return stored

    def save(self, record: Record, *, done_id: int | None = None) -> None:
        self._saves[record["id"]] = (copy_record(record), done_id)
        self._kick()

    def flush(self) -> None:
        """Wait until every write queued so far is committed."""
        while self._creates or self._saves or not self._idle.is_set():
            self._kick()
            self._idle.wait()

    def _kick(self) -> None:
        self._idle.clear()
        self._wakeup.set()
        if self._writer is None or self._writer.dead:
            self._writer = gevent.spawn(self._write_forever)

    def _write_forever(self) -> None:
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            gevent.sleep(0)  # let this loop iteration's other writers join the batch
            while self._creates or self._saves:
                creates, self._creates = self._creates, []
                saves, self._saves = self._saves, {}
                try:
                    outcome = _write_batch(self._db, creates, saves)
                except sqlite3.Error as exc:  # e.g. disk full: creators must hear of it
                    for _, _, done in creates:
                        done.set_exception(exc)
                    gevent.get_hub().handle_error(None, type(exc), exc, exc.__traceback__)
                    continue
                for (_, _, done), stored in zip(creates, outcome):
                    done.set(stored)
                self._maybe_checkpoint()
            self._idle.set()

    def _maybe_checkpoint(self) -> None:
        self._commits_since_checkpoint += 1
        busy = self._checkpoint is not None and not self._checkpoint.ready()
        if self._commits_since_checkpoint >= _CHECKPOINT_EVERY and not busy:
            self._commits_since_checkpoint = 0
            self._checkpoint = gevent.get_hub().threadpool.spawn(_checkpoint, self._path)

    # -- reading -------------------------------------------------------------

    def get(self, task_id: str) -> tuple[Record, int | None] | None:
        if task_id in self._saves:
            record, done_id = self._saves[task_id]
            return copy_record(record), done_id
        row = self._db.execute("SELECT record, done_id FROM tasks WHERE id = ?",
                               (task_id,)).fetchone()
        return (json.loads(row[0]), row[1]) if row else None

    def list(self, *, status: str | None, limit: int, owner: str | None = None) -> list[Record]:
        self.flush()
        where, args = [], []
        if owner is not None:  # the expression tasks_by_owner indexes
            where.append("json_extract(record, '$.owner') = ?")
            args.append(owner)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        rows = self._db.execute(f"SELECT record FROM tasks {clause}ORDER BY seq DESC LIMIT ?",
                                (*args, limit)).fetchall()
        return [json.loads(row[0]) for row in rows]

    def interrupt_unfinished(self, *, finished_at: str, done_id: int) -> int:
        return _interrupt(self._db, finished_at, done_id)

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        if self._writer is not None:
            self._writer.kill()
        if self._checkpoint is not None:
            self._checkpoint.wait(timeout=10)
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()


#: Commits between two checkpoints (SQLite's own default is 1,000 pages).
_CHECKPOINT_EVERY = 200

#: Compact JSON for the record column (json.loads reads either form).
_encode = json.JSONEncoder(separators=(",", ":")).encode

_INSERT = "INSERT INTO tasks (id, status, record, idempotency_key) VALUES (?, ?, ?, ?)"
_UPDATE = "UPDATE tasks SET status = ?, record = ?, done_id = ? WHERE id = ?"


def _write_batch(db: sqlite3.Connection, creates: list[Any],
                 saves: dict[str, tuple[Record, int | None]]) -> list[tuple[Record, bool]]:
    """One transaction; runs of inserts and the updates each go in one
    executemany (a statement per row cost S4 a few % of a core)."""
    stored: list[tuple[Record, bool]] = []
    rows: list[tuple[str, str, str, str | None]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for record, key, _ in creates:
            if key is not None:
                db.executemany(_INSERT, rows)  # keep the insert order (seq) of requests
                rows = []
                row = db.execute("SELECT record FROM tasks WHERE idempotency_key = ?",
                                 (key,)).fetchone()
                if row:
                    stored.append((json.loads(row[0]), False))
                    continue
            rows.append((record["id"], record["status"], _encode(record), key))
            stored.append((record, True))
        db.executemany(_INSERT, rows)
        db.executemany(_UPDATE, [(record["status"], _encode(record), done_id, record["id"])
                                 for record, done_id in saves.values()])
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return stored


def _checkpoint(path: str) -> None:
    """Copy the WAL into the database (runs in a threadpool thread: it fsyncs)."""
    with sqlite3.connect(path, timeout=10) as db:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    db.close()


def _interrupt(db: sqlite3.Connection, finished_at: str, done_id: int) -> int:
    rows = db.execute("SELECT id, record FROM tasks WHERE status IN ('queued', 'running')"
                      ).fetchall()
    db.execute("BEGIN IMMEDIATE")
    for task_id, text in rows:
        record = json.loads(text)
        record.update(status="interrupted", finished_at=finished_at, error={
            "type": "Interrupted", "message": "the worker running this task stopped"})
        db.execute("UPDATE tasks SET status = 'interrupted', record = ?, done_id = ? "
                   "WHERE id = ?", (json.dumps(record), done_id, task_id))
    db.execute("COMMIT")
    return len(rows)
