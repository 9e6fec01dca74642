"""Record stores: where task records outlive the process.

Every backend implements ``RecordStore``. Records are the API's JSON dicts;
``done_id`` is the id of a finished task's ``done`` event, kept so a stream of
a task the event hub has forgotten can still end with the right ids.
"""
from __future__ import annotations

from typing import Protocol

from ..records import Record


class RecordStore(Protocol):
    def create(self, record: Record, *,
               idempotency_key: str | None = None) -> tuple[Record, bool]:
        """Store a new record durably and return it with True; or, when an
        earlier create used the same ``idempotency_key``, that record and False."""

    def save(self, record: Record, *, done_id: int | None = None) -> None:
        """Store a record's new state; may return before it is durable."""

    def get(self, task_id: str) -> tuple[Record, int | None] | None:
        """The record and its done event id, or None for an unknown id."""

    def list(self, *, status: str | None, limit: int, owner: str | None = None) -> list[Record]:
        """Records newest first, optionally only those with ``status``, and
        only ``owner``'s when given (per-user mode)."""

    def interrupt_unfinished(self, *, finished_at: str, done_id: int) -> int:
        """Mark records left queued or running by a dead worker ``interrupted``."""

    def flush(self) -> None:
        """Wait until every save queued so far is written (shutdown)."""

    def close(self) -> None:
        """Write what is pending and release the database."""
