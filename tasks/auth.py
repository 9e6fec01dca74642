"""Who is calling: nobody in particular, the holder of the shared API token,
or, in per-user mode (``TASKS_USER_TOKENS``), one named user.

Per-user mode knows three credentials:

- ``Authorization: Bearer <user token>``: scripts, the CLI, curl.
- The page's session cookie, set by ``POST /api/session`` when a person signs
  in with their token. A forged cross-site form would carry the cookie too,
  so every unsafe request with it must also send ``X-CSRF-Token``, which only
  a same-origin script can read (from ``GET /api/session``).
- ``?ticket=``, for ``EventSource``, which cannot send headers: a token in a
  URL would end up in proxies' logs and the browser's history, so streams
  take a ticket instead, made by ``POST /api/tickets``. It names one user and
  one stream, opens nothing else, and expires after ``TASKS_TICKET_TTL``
  seconds; a stream that outlives it ends with a ``ticket-expired`` event.

Cookies and tickets are signed with ``TASKS_SECRET_KEY`` and carry a digest of
the user's token: changing a user's token (or removing the user) ends their
sessions and tickets everywhere. Tickets work with the shared token too.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeSerializer

from .errors import APIError, Unauthorized

SESSION_COOKIE = "taskstream_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_BEARER = re.compile(r"bearer\s+(.+)", re.IGNORECASE)
_STREAM_ENDPOINTS = {"tasks_api.task_events", "tasks_api.all_events"}
#: How every 401 here says to authenticate.
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tasks"'}


class CSRFFailed(APIError):
    status, code = 403, "csrf_failed"


class TicketExpired(Unauthorized):
    code = "ticket_expired"


@dataclass(frozen=True)
class Caller:
    """Who made this request. ``user`` is None outside per-user mode."""
    user: str | None
    session: dict[str, Any] | None = None  # the signed cookie's content, when it came with one
    expires_at: float | None = None        # a ticket's end: its stream ends then


_ANYONE = Caller(None)


@dataclass(frozen=True)
class Ticket:
    value: str
    expires_at: float


class Auth:
    def __init__(self, settings: dict[str, Any]) -> None:
        self.api_token: str | None = settings["TASKS_API_TOKEN"]
        self.users: dict[str, str] = settings["TASKS_USER_TOKENS"]
        self.ticket_ttl: float = settings["TASKS_TICKET_TTL"]
        self.session_max_age: float = settings["TASKS_SESSION_MAX_AGE"]
        # Unset, a key per process: fine for one worker; restarting signs everyone out.
        key = settings["TASKS_SECRET_KEY"] or secrets.token_urlsafe(32)
        self._sessions = URLSafeSerializer(key, salt="taskstream.session")
        self._tickets = URLSafeSerializer(key, salt="taskstream.ticket")

    @property
    def mode(self) -> str:
        """``user`` (per-user mode), ``token`` (one shared token) or ``none``."""
        return "user" if self.users else "token" if self.api_token else "none"

    # -- requests ------------------------------------------------------------------

    def caller(self, request: Any) -> Caller:
        """Who this request comes from; Unauthorized or CSRFFailed when it may not come."""
        if "ticket" in request.args:
            return self._from_ticket(request)
        if self.mode == "none":
            return _ANYONE
        given = bearer_token(request.headers.get("Authorization"))
        if self.mode == "token":
            if given is None:
                given = request.args.get("token")
            if given is not None and _same(given, self.api_token or ""):
                return Caller(None)
            raise _unauthorized("missing or wrong API token: send 'Authorization: Bearer "
                                "<token>' (or ?token=<token> for EventSource)")
        if given is not None:
            user = self.user_of(given)
            if user is None:
                raise _unauthorized("unknown user token")
            return Caller(user)
        session = self.read_session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise _unauthorized("sign in: send 'Authorization: Bearer <your token>', or POST "
                                "it to /api/session; streams take ?ticket= from POST /api/tickets")
        if request.method not in SAFE_METHODS and not _same(
                request.headers.get(CSRF_HEADER, ""), session["c"]):
            raise CSRFFailed(f"send the {CSRF_HEADER} header GET /api/session gives")
        return Caller(session["u"], session=session)

    def _from_ticket(self, request: Any) -> Caller:
        """A ticket opens one stream, read-only, until it expires."""
        content = _load(self._tickets, request.args["ticket"])
        if content is None or not self._key_valid(content.get("u"), content.get("k")):
            raise _unauthorized("this stream ticket is not valid: get one from POST /api/tickets")
        if content["e"] <= time.time():
            raise TicketExpired("this stream ticket has expired: get a new one from "
                                "POST /api/tickets and resume with ?lastEventId=",
                                headers=_CHALLENGE)
        scope = (request.view_args or {}).get("task_id", "")
        if (request.method not in ("GET", "HEAD") or request.endpoint not in _STREAM_ENDPOINTS
                or scope != content["t"]):
            raise _unauthorized("a stream ticket opens only the stream it was made for")
        return Caller(content["u"] or None, expires_at=content["e"])

    def user_of(self, token: str) -> str | None:
        found = None
        for user, known in self.users.items():  # compare with every one: constant time
            if _same(token, known):
                found = user
        return found

    # -- tickets and sessions ----------------------------------------------------------

    def make_ticket(self, caller: Caller, task_id: str | None) -> Ticket:
        expires_at = time.time() + self.ticket_ttl
        if caller.expires_at is not None:  # a ticket never makes a longer-lived one
            raise _unauthorized("a stream ticket cannot make tickets")
        value = self._tickets.dumps({"u": caller.user or "", "t": task_id or "",
                                     "k": self._key_of(caller.user), "e": round(expires_at, 3)})
        return Ticket(str(value), expires_at)

    def sign_in(self, token: str) -> tuple[str, dict[str, Any]]:
        """The cookie value and session for a user's token; Unauthorized if unknown."""
        user = self.user_of(token)
        if user is None:
            raise _unauthorized("unknown user token")
        session = {"u": user, "k": self._key_of(user), "c": secrets.token_urlsafe(24),
                   "e": round(time.time() + self.session_max_age, 3)}
        return str(self._sessions.dumps(session)), session

    def read_session(self, cookie: str | None) -> dict[str, Any] | None:
        content = _load(self._sessions, cookie) if cookie else None
        if content is None or content.get("e", 0) <= time.time():
            return None
        return content if self._key_valid(content.get("u"), content.get("k")) else None

    def _key_of(self, user: str | None) -> str:
        token = self.users.get(user or "") if user else self.api_token
        return hashlib.sha256((token or "").encode()).hexdigest()[:16]

    def _key_valid(self, user: Any, key: Any) -> bool:
        if not isinstance(user, str) or not isinstance(key, str):
            return False
        if self.mode == "user" and user not in self.users:
            return False
        return _same(key, self._key_of(user or None))


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    match = _BEARER.fullmatch(header.strip())
    return match.group(1).strip() if match else None


def _load(serializer: URLSafeSerializer, value: str) -> dict[str, Any] | None:
    try:
        content = serializer.loads(value)
    except (BadSignature, ValueError, TypeError):
        return None
    return content if isinstance(content, dict) else None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(message, headers=_CHALLENGE)
