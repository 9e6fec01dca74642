"""What can go wrong for a Taskstream client: an exception per kind of
answer (``error_from_response``) and per way a task can end other than
succeeding (``raise_for_outcome``)."""
from __future__ import annotations

from typing import Any

import httpx

Record = dict[str, Any]


class TaskstreamError(Exception):
    """Anything that went wrong talking to a Taskstream server.

    ``status`` is the HTTP status (None when no answer came), ``code`` the API's
    error code (``invalid_params``, ``not_found``...) and ``message`` its text.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code = message, status, code
        self.headers = dict(headers or {})

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}: " if self.status and self.code else ""
        return prefix + self.message


class BadRequest(TaskstreamError):
    """400: invalid params, unknown task type or a malformed request."""


class Unauthorized(TaskstreamError):
    """401: the API token is missing or wrong (pass ``token=`` or set TASKS_API_TOKEN)."""


class NotFound(TaskstreamError):
    """404: no such task (or path)."""


class Conflict(TaskstreamError):
    """409: cancelling a task that has already finished."""


class QueueFull(TaskstreamError):
    """429: too many tasks queued; ``retry_after`` says when to try again (seconds)."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        return float(value) if value and value.isdigit() else None


class ServerError(TaskstreamError):
    """5xx, or any other status the API does not define."""


class ConnectionFailed(TaskstreamError):
    """No answer from the server (refused, timed out, cut) after retrying."""


class ProtocolError(TaskstreamError):
    """The server answered something that is not the Taskstream API (a proxy's page?)."""


class TaskError(TaskstreamError):
    """The task ended without succeeding; ``record`` is its final record."""

    def __init__(self, record: Record) -> None:
        error = record.get("error") or {}
        detail = ": ".join(x for x in (error.get("type"), error.get("message")) if x)
        message = f"task {record.get('id')} ({record.get('name')}) {record.get('status')}"
        super().__init__(message + (f": {detail}" if detail else ""))
        self.record = record
        self.error: dict[str, str] | None = record.get("error")


class TaskFailed(TaskError):
    """The task raised; ``error`` holds its type and message."""


class TaskCancelled(TaskError):
    """Someone cancelled the task."""


class TaskInterrupted(TaskError):
    """The server's worker stopped before the task finished."""


_STATUS_ERRORS: dict[int, type[TaskstreamError]] = {
    400: BadRequest, 401: Unauthorized, 404: NotFound, 409: Conflict, 429: QueueFull,
}
_TASK_ERRORS: dict[str, type[TaskError]] = {
    "failed": TaskFailed, "cancelled": TaskCancelled, "interrupted": TaskInterrupted,
}


def error_from_response(response: httpx.Response) -> TaskstreamError:
    """The ``TaskstreamError`` for a non-2xx answer, reading ``{"error": {...}}``."""
    status = response.status_code
    cls = _STATUS_ERRORS.get(status, ServerError)
    headers = {k.lower(): v for k, v in response.headers.items()}
    try:
        error = response.json()["error"]
        return cls(str(error["message"]), status=status, code=str(error["code"]),
                   headers=headers)
    except (ValueError, KeyError, TypeError):
        # Not our JSON: a proxy's error page, most likely. Show its start.
        text = " ".join(response.text.split())[:200]
        return cls(f"HTTP {status} from {response.request.url} that is not Taskstream JSON"
                   f" (a proxy in between?): {text!r}", status=status, code=None, headers=headers)


def raise_for_outcome(record: Record) -> Any:
    """The result of a finished record, or its ``TaskError``."""
    status = record.get("status")
    if status == "succeeded":
        return record.get("result")
    raise _TASK_ERRORS.get(str(status), TaskError)(record)
