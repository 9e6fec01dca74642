"""API errors: one class per status, each carrying its JSON ``code``.

Views raise these; the handlers in ``api.py`` turn them into
``{"error": {"code", "message"}}`` with headers such as ``Retry-After``.
"""
from __future__ import annotations


class APIError(Exception):
    status, code = 400, "bad_request"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message, self.headers = message, dict(headers or {})


class InvalidParams(APIError):
    status, code = 400, "invalid_params"


class UnknownTaskType(APIError):
    status, code = 400, "unknown_task_type"


class Unauthorized(APIError):
    status, code = 401, "unauthorized"


class TaskNotFound(APIError):
    status, code = 404, "not_found"


class TaskFinished(APIError):
    status, code = 409, "task_finished"


class UnsupportedMediaType(APIError):
    status, code = 415, "unsupported_media_type"


class QueueFull(APIError):
    status, code = 429, "queue_full"


class RateLimited(APIError):
    status, code = 429, "rate_limited"


class TooManyClientStreams(APIError):
    status, code = 429, "too_many_streams"


class TooManyStreams(APIError):
    status, code = 503, "too_many_streams"


class ShuttingDown(APIError):
    status, code = 503, "shutting_down"


class BackendUnavailable(APIError):
    """Redis is down or unreachable: the client should retry shortly."""
    status, code = 503, "backend_unavailable"
