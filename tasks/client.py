"""A small Python client for the Taskstream HTTP API (API.md), on httpx.

``TaskClient`` starts, reads, lists and cancels tasks, and follows a task's
event stream as typed events, resuming by ``Last-Event-ID`` whenever the
connection drops, so a caller sees every event exactly once. It needs no
gevent: it runs in any plain Python process (and under gevent's monkey
patching, which httpx tolerates).

    client = TaskClient("http://127.0.0.1:8000", token=None)
    record = client.start("demo", {"steps": 5})
    for event in client.events(record["id"]):
        ...
    result = client.wait(record["id"])   # or TaskFailed / TaskCancelled / ...
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterator

import httpx
from httpx_sse import EventSource

from .client_errors import (BadRequest, Conflict, ConnectionFailed, NotFound, ProtocolError,
                            QueueFull, Record, ServerError, TaskCancelled, TaskError, TaskFailed,
                            TaskInterrupted, TaskstreamError, Unauthorized, error_from_response,
                            raise_for_outcome)
from .client_events import (Done, Log, Progress, Snapshot, Status, TaskEvent, decode_stream,
                            event_to_json, parse_event)

__all__ = [
    "TaskClient", "TaskEvent", "Snapshot", "Status", "Progress", "Log", "Done",
    "TaskstreamError", "BadRequest", "Unauthorized", "NotFound", "Conflict", "QueueFull",
    "ServerError", "ConnectionFailed", "ProtocolError",
    "TaskError", "TaskFailed", "TaskCancelled", "TaskInterrupted",
    "parse_event", "decode_stream", "event_to_json", "error_from_response", "raise_for_outcome",
]

#: Wait before the first reconnect when the server has not sent ``retry:``.
DEFAULT_RETRY_MS = 1000
#: Reconnect waits double after each failed attempt, up to this.
MAX_BACKOFF = 30.0


# -- the client ----------------------------------------------------------------

class TaskClient:
    """A Taskstream server at ``url``; ``token`` when it sets TASKS_API_TOKEN
    (or, in per-user mode, your own token from TASKS_USER_TOKENS).

    :param read_timeout: seconds of silence after which a stream counts as
        dead and is resumed; keep it above the server's TASKS_HEARTBEAT.
    :param give_up_after: seconds of failed reconnects after which ``events``
        raises ``ConnectionFailed`` instead of trying again.
    """

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 10.0,
                 read_timeout: float = 60.0, give_up_after: float = 60.0,
                 transport: httpx.BaseTransport | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, transport=transport,
                                  timeout=httpx.Timeout(timeout))
        self._stream_timeout = httpx.Timeout(timeout, read=read_timeout)
        self.give_up_after = give_up_after
        self._sleep = sleep

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "TaskClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plain calls ---------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {exc or type(exc).__name__} "
                                   "(is the server running? check --url / TASKS_URL)") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        try:
            return response.json()
        except ValueError:
            raise ProtocolError(f"{method} {path}: expected JSON, got "
                                f"{response.headers.get('content-type')!r}",
                                status=response.status_code) from None

    def task_types(self) -> list[dict[str, Any]]:
        """Every task type with its parameter schema."""
        return list(self._call("GET", "/api/task-types")["task_types"])

    def start(self, name: str, params: dict[str, Any] | None = None, *,
              idempotency_key: str | None = None) -> Record:
        """Queue a task; its record. A repeated ``idempotency_key`` returns the
        first task instead of starting another, so a retried call is safe."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = {"name": name, "params": params or {}}
        return dict(self._call("POST", "/api/tasks", json=body, headers=headers))

    def get(self, task_id: str) -> Record:
        return dict(self._call("GET", f"/api/tasks/{task_id}"))

    def list(self, status: str | None = None, limit: int | None = None) -> list[Record]:
        """Tasks, newest first."""
        query = {k: v for k, v in (("status", status), ("limit", limit)) if v is not None}
        return list(self._call("GET", "/api/tasks", params=query)["tasks"])

    def cancel(self, task_id: str) -> Record:
        """Ask a task to stop; its record now. ``Conflict`` once it has finished."""
        return dict(self._call("POST", f"/api/tasks/{task_id}/cancel"))

    # -- following ------------------------------------------------------------

    def events(self, task_id: str, *, last_event_id: int | None = None) -> Iterator[TaskEvent]:
        """The task's events as they happen, until ``done`` (or a 204, when
        ``last_event_id`` is already at or past it).

        A dropped or silent connection is resumed from the last event's id
        after the server's ``retry:`` wait, doubling on each failure, so every
        event comes exactly once. Errors the server states (404, 401) raise.
        """
        last_id, retry_ms, failing_since, attempt = last_event_id, DEFAULT_RETRY_MS, None, 0
        while True:
            headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
            try:
                for item in self._connect(task_id, headers):
                    if isinstance(item, int):  # the stream's retry: field
                        retry_ms = item
                        continue
                    if last_id is not None and item.id <= last_id:
                        continue  # never hand the caller an event twice
                    last_id, failing_since, attempt = item.id, None, 0
                    yield item
                    if isinstance(item, Done):
                        return
                # Ended without done (a restarting worker, a proxy): resume below;
                # the reconnect gets the rest, or 204 when done was already sent.
            except _EndOfStream:
                return
            except httpx.TransportError:
                pass  # cut, refused or silent past read_timeout: resume below
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.give_up_after:
                raise ConnectionFailed(f"lost the event stream of task {task_id} and could "
                                       f"not resume it for {self.give_up_after:.0f} s")
            attempt += 1
            self._sleep(_backoff(retry_ms, attempt))

    def _connect(self, task_id: str, headers: dict[str, str]) -> Iterator[TaskEvent | int]:
        path = f"/api/tasks/{task_id}/events"
        with self._http.stream("GET", path, headers={"Accept": "text/event-stream", **headers},
                               timeout=self._stream_timeout) as response:
            if response.status_code == 204:
                raise _EndOfStream
            if response.status_code >= 400:
                response.read()
                error = error_from_response(response)
                if isinstance(error, ServerError):  # a restarting server or proxy: retry
                    raise httpx.TransportError(str(error))
                raise error
            content_type = response.headers.get("content-type", "")
            if not content_type.startswith("text/event-stream"):
                raise ProtocolError(f"GET {path}: expected text/event-stream, got "
                                    f"{content_type!r}", status=response.status_code)
            for sse in EventSource(response).iter_sse():
                if sse.retry is not None:
                    yield sse.retry
                event = parse_event(sse)
                if event is not None:
                    yield event

    def wait(self, task_id: str) -> Any:
        """Follow the task to its end; its result, or ``TaskFailed``,
        ``TaskCancelled`` or ``TaskInterrupted`` carrying the error."""
        final: Record | None = None
        for event in self.events(task_id):
            if isinstance(event, Done):
                final = event.record
        if final is None:  # a 204: the stream was already past done
            final = self.get(task_id)
        return raise_for_outcome(final)


class _EndOfStream(Exception):
    """A 204: nothing more will come."""


def _backoff(retry_ms: int, attempt: int) -> float:
    """The server's retry wait, doubled per failed attempt, capped, with a
    little jitter so many clients do not come back in step (PITFALLS 10)."""
    base = min(MAX_BACKOFF, retry_ms / 1000 * 2.0 ** (attempt - 1))
    return base * random.uniform(0.8, 1.0)
