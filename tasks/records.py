"""The task record: statuses, the record's JSON shape, times and event ids.

A record is a plain dict in exactly the shape ``GET /api/tasks/<id>`` returns,
so it can be stored, streamed and served without conversion.
"""
from __future__ import annotations

import secrets
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Any

Record = dict[str, Any]


class Status(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_finished(self) -> bool:
        return self not in (Status.QUEUED, Status.RUNNING)


FINISHED = frozenset(s.value for s in Status if s.is_finished)
STATUSES = frozenset(s.value for s in Status)


def new_task_id() -> str:
    """128 random bits as URL-safe text (API.md asks for at least 122), never
    starting with '-': command lines (``flask tasks watch <id>``) would read
    such an id as an option. Drawing again loses under 0.03 bits."""
    while True:
        task_id = secrets.token_urlsafe(16)
        if not task_id.startswith("-"):
            return task_id


def format_time(ts: float) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, as API.md says."""
    moment = datetime.fromtimestamp(ts, tz=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def empty_progress() -> dict[str, Any]:
    return {"current": 0, "total": None, "percent": None,
            "message": None, "rate": None, "eta": None}


def new_record(task_id: str, name: str, params: dict[str, Any], *, now: float,
               owner: str | None = None) -> Record:
    """A queued task's record; in per-user mode it also names its ``owner``."""
    record = {
        "id": task_id, "name": name, "params": params,
        "status": Status.QUEUED.value, "progress": empty_progress(),
        "result": None, "error": None,
        "created_at": format_time(now), "started_at": None, "finished_at": None,
    }
    if owner is not None:
        record["owner"] = owner
    return record


def copy_record(record: Record) -> Record:
    """A copy safe to keep while the task goes on: the live record's progress
    dict is replaced on every update, the rest only at status changes."""
    return {**record, "progress": dict(record["progress"])}


def is_finished(record: Record) -> bool:
    return record["status"] in FINISHED


def event_id_now(after: int) -> int:
    """The next event id: microseconds of wall-clock time, kept strictly above
    ``after``.

    Ids that grow with time stay increasing across restarts of the server, so
    a client's ``Last-Event-ID`` from before a crash still compares correctly
    with ids issued after it (resume, and the 204 after ``done``).
    """
    return max(after + 1, int(time.time() * 1_000_000))
