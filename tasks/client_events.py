"""The typed events a Taskstream client reads from a stream (API.md's
snapshot, status, progress, log and done), and the SSE decoding under them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from httpx_sse import ServerSentEvent
# The WHATWG line and field parsers httpx-sse uses itself; not re-exported, so
# this leans on the pinned 0.4.3 (requirements.txt) for frames without a response.
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from .client_errors import ProtocolError, Record


@dataclass(frozen=True)
class TaskEvent:
    """One event of a task's stream: its ``id``, ``task_id``, ``ts`` and raw ``data``."""
    id: int
    task_id: str
    ts: float
    data: dict[str, Any] = field(repr=False)

    @property
    def type(self) -> str:
        return type(self).__name__.lower()


@dataclass(frozen=True)
class _RecordEvent(TaskEvent):
    @property
    def record(self) -> Record:
        """The task record the event carries (its data without ``task_id`` and ``ts``)."""
        return {k: v for k, v in self.data.items() if k not in ("task_id", "ts")}


@dataclass(frozen=True)
class Snapshot(_RecordEvent):
    """The whole record, first on a new connection (or after a resume gap)."""


@dataclass(frozen=True)
class Status(TaskEvent):
    status: str = ""


@dataclass(frozen=True)
class Progress(TaskEvent):
    current: float = 0
    total: float | None = None
    percent: float | None = None
    message: str | None = None
    rate: float | None = None
    eta: float | None = None


@dataclass(frozen=True)
class Log(TaskEvent):
    level: str = "info"
    message: str = ""


@dataclass(frozen=True)
class Done(_RecordEvent):
    """The final record; the stream ends after it."""

    @property
    def status(self) -> str:
        return str(self.data.get("status"))


_EVENT_TYPES: dict[str, type[TaskEvent]] = {
    "snapshot": Snapshot, "status": Status, "progress": Progress, "log": Log, "done": Done,
}
_FIELDS: dict[type[TaskEvent], tuple[str, ...]] = {
    Status: ("status",), Progress: ("current", "total", "percent", "message", "rate", "eta"),
    Log: ("level", "message"),
}


def parse_event(sse: ServerSentEvent) -> TaskEvent | None:
    """A typed event from a parsed SSE event; None for one that carries no
    event (a bare ``retry:``) or a type this client does not know."""
    cls = _EVENT_TYPES.get(sse.event)
    if cls is None:
        return None
    try:
        event_id = int(sse.id)
        data = json.loads(sse.data)
    except ValueError as exc:
        raise ProtocolError(f"malformed {sse.event!r} event (id {sse.id!r}): {exc}") from None
    extra = {name: data.get(name) for name in _FIELDS.get(cls, ())}
    task_id = data.get("task_id") or data.get("id") or ""
    return cls(id=event_id, task_id=str(task_id), ts=float(data.get("ts") or 0.0),
               data=data, **extra)


def decode_stream(chunks: Iterable[bytes]) -> Iterator[ServerSentEvent]:
    """SSE events (retry-only ones included) from raw body bytes, as they come."""
    lines, decoder = SSELineDecoder(), SSEDecoder()
    for chunk in chunks:
        for line in lines.decode(chunk.decode("utf-8")):
            sse = decoder.decode(line)
            if sse is not None:
                yield sse
    for line in lines.flush():
        sse = decoder.decode(line)
        if sse is not None:
            yield sse


def event_to_json(event: TaskEvent) -> dict[str, Any]:
    """The event as one JSON-ready object: ``{"id", "event", "data"}``."""
    return {"id": event.id, "event": event.type, "data": event.data}
