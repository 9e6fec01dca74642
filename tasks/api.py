"""The ``/api`` blueprint: task types, tasks, cancel and the event streams.

Every error under ``/api`` is JSON, ``{"error": {"code", "message"}}``, never
an HTML page and never a traceback (the traceback goes to the server log).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Callable

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from .auth import SAFE_METHODS, SESSION_COOKIE, Auth, Caller, CSRFFailed
from .engine import TaskEngine
from .errors import APIError, TaskNotFound, UnsupportedMediaType
from .hub import Opening
from .limits import Limits
from .records import STATUSES, format_time
from .streaming import HEADERS, event_stream_response

log = logging.getLogger("tasks")

bp = Blueprint("tasks_api", __name__, url_prefix="/api")
bp.record_once(lambda state: state.app.extensions.setdefault("tasks_auth",
                                                             Auth(state.app.config)))

_EVENT_ID = re.compile(r"[0-9]{1,18}")
_MAX_IDEMPOTENCY_KEY = 200


def engine() -> TaskEngine:
    return current_app.extensions["tasks"]  # type: ignore[no-any-return]


def auth() -> Auth:
    return current_app.extensions["tasks_auth"]  # type: ignore[no-any-return]


def limits() -> Limits | None:
    return current_app.extensions.get("tasks_limits")


def client_address() -> str:
    """``remote_addr``: the proxy's, unless ProxyFix passes the client's on."""
    return request.remote_addr or "unknown"


@bp.before_request
def identify_caller() -> None:
    """401 (or 403 for a missing CSRF header) unless the caller may use /api."""
    if request.method not in SAFE_METHODS and request.headers.get("Sec-Fetch-Site") == "cross-site":
        # Browsers say where a request comes from; no other site's page may
        # start, cancel or sign in (CORS opens GETs only), whatever it carries.
        raise CSRFFailed("a page on another site may not change anything here")
    if request.endpoint == "tasks_api.session" and request.method == "POST":
        return  # signing in: the token comes in the body
    g.caller = auth().caller(request)


def owner() -> str | None:
    """The calling user in per-user mode; None (everything visible) otherwise."""
    caller: Caller = g.caller
    return caller.user


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
    record, created = engine().start(body["name"], body.get("params"), idempotency_key=key,
                                     owner=owner())
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
    return {"tasks": engine().list(status=status, limit=limit, owner=owner())}


@bp.get("/tasks/<task_id>")
def get_task(task_id: str) -> Any:
    return engine().get(task_id, owner=owner())


@bp.post("/tasks/<task_id>/cancel")
def cancel_task(task_id: str) -> Any:
    return engine().cancel(task_id, owner=owner()), 202


@bp.get("/tasks/<task_id>/events")
def task_events(task_id: str) -> Response:
    if request.method == "HEAD":  # headers only: no subscriber to release later
        engine().get(task_id, owner=owner())
        return Response(headers=HEADERS, content_type="text/event-stream; charset=utf-8")
    return _stream(lambda last_id: engine().open_stream(task_id, last_id, owner=owner()))


@bp.get("/events")
def all_events() -> Response:
    return _stream(lambda last_id: engine().open_global_stream(last_id, owner=owner()))


# -- per-user mode: the page's sign-in, and stream tickets -----------------------

@bp.route("/session", methods=["GET", "POST", "DELETE"])
def session() -> Any:
    """Sign in (POST the token), see who is signed in (GET), sign out (DELETE)."""
    if auth().mode != "user":
        raise TaskNotFound("there are no sessions: per-user mode (TASKS_USER_TOKENS) is off")
    if request.method == "DELETE":
        response = Response(status=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
        return response
    if request.method == "GET":
        caller: Caller = g.caller
        return _session_answer(caller.user, caller.session)
    token = _json_body().get("token")
    if not isinstance(token, str):
        raise APIError("token: required, the user's token as a string")
    cookie, content = auth().sign_in(token)
    response = jsonify(_session_answer(content["u"], content))
    response.set_cookie(SESSION_COOKIE, cookie, max_age=int(auth().session_max_age), path="/",
                        secure=request.is_secure, httponly=True, samesite="Strict")
    return response


def _session_answer(user: str | None, content: dict[str, Any] | None) -> dict[str, Any]:
    return {"user": user, "csrf_token": content["c"] if content else None,
            "expires_at": format_time(content["e"]) if content else None}


@bp.post("/tickets")
def create_ticket() -> Any:
    """A short-lived, read-only ticket for one stream: ``{"task_id": id}`` for
    a task's, ``{}`` for the all-tasks stream (its owner's tasks only)."""
    body = _json_body()
    unknown = sorted(set(body) - {"task_id"})
    if unknown:
        raise APIError(f"{unknown[0]}: unknown field (send 'task_id', or nothing for /api/events)")
    task_id = body.get("task_id")
    if task_id is not None and not isinstance(task_id, str):
        raise APIError("task_id: must be a task id (a string)")
    if task_id is not None:
        engine().get(task_id, owner=owner())  # 404 unless it is the caller's
    ticket = auth().make_ticket(g.caller, task_id)
    url = (url_for(".task_events", task_id=task_id, ticket=ticket.value) if task_id is not None
           else url_for(".all_events", ticket=ticket.value))
    return {"ticket": ticket.value, "url": url,
            "expires_at": format_time(ticket.expires_at), "expires_in": auth().ticket_ttl}


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
    caller: Caller = g.caller
    return event_stream_response(
        opening, heartbeat=settings["TASKS_HEARTBEAT"], expires_at=caller.expires_at,
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
