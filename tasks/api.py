"""The ``/api`` blueprint: task types, tasks, cancel and the event streams.

Every error under ``/api`` is JSON, ``{"error": {"code", "message"}}``, never
an HTML page and never a traceback (the traceback goes to the server log).
"""
from __future__ import annotations

import hmac
import logging
import re
from typing import Any, Callable

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from .engine import TaskEngine
from .errors import APIError, Unauthorized, UnsupportedMediaType
from .hub import Opening
from .limits import Limits
from .records import STATUSES
from .streaming import HEADERS, event_stream_response

log = logging.getLogger("tasks")

bp = Blueprint("tasks_api", __name__, url_prefix="/api")

_EVENT_ID = re.compile(r"[0-9]{1,18}")
_BEARER = re.compile(r"bearer\s+(.+)", re.IGNORECASE)
_MAX_IDEMPOTENCY_KEY = 200


def engine() -> TaskEngine:
    return current_app.extensions["tasks"]  # type: ignore[no-any-return]


def limits() -> Limits | None:
    return current_app.extensions.get("tasks_limits")


def client_address() -> str:
    """``remote_addr``: the proxy's, unless ProxyFix passes the client's on."""
    return request.remote_addr or "unknown"


@bp.before_request
def require_token() -> None:
    token = engine().settings["TASKS_API_TOKEN"]
    if token is None:
        return
    given = _given_token()
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise Unauthorized("missing or wrong API token: send 'Authorization: Bearer <token>' "
                           "(or ?token=<token> for EventSource)",
                           headers={"WWW-Authenticate": 'Bearer realm="tasks"'})


def _given_token() -> str | None:
    header = request.headers.get("Authorization")
    if header:
        match = _BEARER.fullmatch(header.strip())
        return match.group(1).strip() if match else None
    return request.args.get("token")


@bp.get("/task-types")
def task_types() -> Any:
    return {"task_types": [t.describe() for t in engine().task_types()]}


@bp.post("/tasks")
def create_task() -> Any:
    if (caps := limits()) is not None:
        caps.create.take(client_address())  # 429 past TASKS_CREATE_RATE
    body = _json_body()
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY:
        raise APIError(f"Idempotency-Key: must be 1 to {_MAX_IDEMPOTENCY_KEY} characters")
    unknown = sorted(set(body) - {"name", "params"})
    if unknown:
        raise APIError(f"{unknown[0]}: unknown field (send 'name' and 'params')")
    if "name" not in body:
        raise APIError("name: required (the task type, e.g. \"demo\")")
    record, created = engine().start(body["name"], body.get("params"), idempotency_key=key)
    response = jsonify(record)
    response.status_code = 202 if created else 200
    response.headers["Location"] = f"/api/tasks/{record['id']}"
    return response


@bp.get("/tasks")
def list_tasks() -> Any:
    status = request.args.get("status")
    if status is not None and status not in STATUSES:
        raise APIError(f"status: must be one of {', '.join(sorted(STATUSES))}, got {status[:50]!r}")
    limit = _int_arg("limit", default=100, low=1, high=1000)
    return {"tasks": engine().list(status=status, limit=limit)}


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Any:
    return engine().get(task_id)


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> Any:
    return engine().cancel(task_id), 202


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    if request.method == "HEAD":  # headers only: no subscriber to release later
        engine().get(task_id)
        return Response(headers=HEADERS, content_type="text/event-stream; charset=utf-8")
    return _stream(lambda last_id: engine().open_stream(task_id, last_id))


@bp.get("/events")
def all_events() -> Response:
    return _stream(engine().open_global_stream)


def _stream(open_: Callable[[int | None], Opening]) -> Response:
    """Take a place under the stream caps (503/429 past them), then open the
    stream; the response's close gives the place back."""
    caps = limits()
    release = caps.streams.acquire(client_address()) if caps is not None else None
    try:
        opening = open_(_last_event_id())
    except BaseException:
        if release is not None:
            release(None)
        raise
    if caps is not None:
        caps.streams.follow(opening.subscriber)
    settings = engine().settings
    return event_stream_response(
        opening, heartbeat=settings["TASKS_HEARTBEAT"],
        retry_range=(settings["TASKS_RETRY_MIN_MS"], settings["TASKS_RETRY_MAX_MS"]),
        unsubscribe=engine().hub.unsubscribe, on_close=release)


def _last_event_id() -> int | None:
    """The header wins over ``?lastEventId=``; anything but a non-negative
    integer counts as absent (API.md)."""
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        raw = request.args.get("lastEventId")
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if _EVENT_ID.fullmatch(raw) else None


def _json_body() -> dict[str, Any]:
    if not request.is_json:
        raise UnsupportedMediaType("send the body as JSON with 'Content-Type: application/json'")
    body = request.get_json(silent=True)
    if body is None:
        raise APIError("the body is not valid JSON")
    if not isinstance(body, dict):
        raise APIError("the body must be a JSON object like {\"name\": \"demo\", \"params\": {}}")
    return body


def _int_arg(name: str, *, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not low <= int(raw) <= high:
        raise APIError(f"{name}: must be a whole number from {low} to {high}, got {raw[:50]!r}")
    return int(raw)


# -- error handlers, for the whole app: no HTML error pages anywhere -------------

def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
        return error_response(exc.code or 500, code, exc.description or exc.name, headers)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:
        # The traceback stays in the server log; the client learns nothing of it.
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
