"""The ``TASKS_*`` settings: one table, each setting once, parsed at start-up.

Values come from the environment, then from the ``config`` mapping given to
``create_app`` (which wins). A bad value stops start-up with a message naming
the variable and the value, rather than failing later under load.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping


_USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


class ConfigError(ValueError):
    """A ``TASKS_*`` setting has a value that cannot be used."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be above 0")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def _origins(text: str) -> tuple[str, ...]:
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        if origin == "*" or "://" not in origin:
            raise ValueError(f"{origin!r} is not an exact origin like https://example.com")
    return origins


def _backend(text: str) -> str:
    if text not in ("memory", "redis"):
        raise ValueError("must be 'memory' or 'redis'")
    return text


def _optional_str(text: str) -> str | None:
    return text or None


def _user_tokens(text: str) -> dict[str, str]:
    """``alice:token1,bob:token2`` as {user: token}."""
    users: dict[str, str] = {}
    pairs = [p.strip() for p in text.split(",") if p.strip()]
    for position, pair in enumerate(pairs, 1):
        user, sep, token = pair.partition(":")
        user, token = user.strip(), token.strip()
        if not sep or not _USER_NAME.fullmatch(user):
            # Not the text itself: without a ':' it may be all token.
            raise ValueError(f"entry {position}: write each user as name:token, the "
                             "name being 1 to 64 letters, digits, '.', '_', '@' or '-'")
        if len(token) < 16:
            raise ValueError(f"the token of {user!r} is shorter than 16 characters")
        if user in users:
            raise ValueError(f"{user!r} is listed twice")
        users[user] = token
    if len(set(users.values())) != len(users):
        raise ValueError("two users share one token")
    return users


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    parse: Callable[[str], Any]
    doc: str
    secret: bool = False  # never echoed in an error message


SETTINGS: tuple[Setting, ...] = (
    Setting("TASKS_BACKEND", "memory", _backend,
            "Where events live: 'memory' (one worker) or 'redis' (several)."),
    Setting("TASKS_REDIS_URL", "redis://127.0.0.1:6379/0", str,
            "Redis URL for the redis backend."),
    Setting("TASKS_REDIS_PREFIX", "taskstream", str,
            "Prefix (and Redis Cluster hash tag) of every key; apps sharing a "
            "Redis need different prefixes."),
    Setting("TASKS_REDIS_HEARTBEAT", 2.0, _positive_float,
            "Seconds between a worker's alive beats on Redis; a task whose worker "
            "misses three in a row ends interrupted."),
    Setting("TASKS_REDIS_MAX_READERS", 1000, _positive_int,
            "Redis connections a worker may hold for blocking reads: one per "
            "stream it serves (one per task, however many readers), plus one."),
    Setting("TASKS_DB", "var/tasks.sqlite3", str,
            "SQLite file keeping task records (memory backend)."),
    Setting("TASKS_MAX_RUNNING", 8, _positive_int,
            "Tasks running at once per worker."),
    Setting("TASKS_MAX_QUEUED", 100, _non_negative_int,
            "Tasks waiting per worker; past it POST /api/tasks answers 429."),
    Setting("TASKS_HEARTBEAT", 15.0, _positive_float,
            "Seconds of silence before a stream gets a keep-alive comment."),
    Setting("TASKS_API_TOKEN", None, _optional_str,
            "When set, every /api/ call needs this bearer token.", secret=True),
    Setting("TASKS_USER_TOKENS", {}, _user_tokens,
            "Per-user mode: comma-separated name:token pairs (alice:TOKEN,bob:TOKEN). "
            "Each task belongs to the user who started it; no one else sees it.", secret=True),
    Setting("TASKS_SECRET_KEY", None, _optional_str,
            "Signs the page's session cookies and stream tickets (per-user mode). "
            "Workers sharing a Redis need the same key; unset on memory: a random "
            "key per start.", secret=True),
    Setting("TASKS_TICKET_TTL", 300.0, _positive_float,
            "Seconds a stream ticket (POST /api/tickets) stays valid; a stream "
            "outliving it ends with a ticket-expired event."),
    Setting("TASKS_SESSION_MAX_AGE", 12 * 3600.0, _positive_float,
            "Seconds the page's sign-in cookie lasts (per-user mode)."),
    Setting("TASKS_EVENT_BUFFER", 1000, _positive_int,
            "Events each task's stream holds for resuming by Last-Event-ID."),
    Setting("TASKS_MAX_EVENTS_HELD", 1_000_000, _positive_int,
            "Events the memory backend holds across every task's log; past it the "
            "logs of finished tasks go first, even within TASKS_RETENTION."),
    Setting("TASKS_GLOBAL_EVENT_BUFFER", 5000, _positive_int,
            "Events the all-tasks stream (/api/events) holds for resuming."),
    Setting("TASKS_RETENTION", 300.0, _positive_float,
            "Seconds a finished task's events stay held for resuming, in memory "
            "or in Redis (at least 60)."),
    Setting("TASKS_SUBSCRIBER_BACKLOG", 1000, _positive_int,
            "Unsent status/log events one reader may owe before it is cut off "
            "and left to resume by id."),
    Setting("TASKS_STALL_TIMEOUT", 60.0, _positive_float,
            "Seconds a reader may take none of what waits for it before its stream "
            "is dropped (it resumes by id if it comes back); direct path."),
    Setting("TASKS_MAX_BODY", 1024 * 1024, _positive_int,
            "Largest request body in bytes (413 past it)."),
    Setting("TASKS_RETRY_MIN_MS", 1000, _positive_int,
            "Lowest reconnect delay sent in a stream's retry: field."),
    Setting("TASKS_RETRY_MAX_MS", 3000, _positive_int,
            "Highest reconnect delay sent in a stream's retry: field."),
    Setting("TASKS_FILES_ROOT", ".", str,
            "Folder the hash_files task may read under."),
    Setting("TASKS_FAST_PATH", True, _bool,
            "Write stream events straight to sockets under gunicorn's gevent worker."),
    Setting("TASKS_MAX_STREAMS", 20000, _non_negative_int,
            "Open event streams per worker; past it a stream request gets 503 "
            "(0: no cap)."),
    Setting("TASKS_MAX_STREAMS_PER_CLIENT", 0, _non_negative_int,
            "Open event streams per client address; past it 429 (0: no cap). Behind "
            "a proxy every client shares its address unless the real one is passed on."),
    Setting("TASKS_CREATE_RATE", 0.0, _non_negative_float,
            "Task creations per second per client address, on average; past it "
            "POST /api/tasks answers 429 (0, the default: no limit; 50 suits a "
            "public server)."),
    Setting("TASKS_CREATE_BURST", 200, _positive_int,
            "Task creations a client address may make at once before "
            "TASKS_CREATE_RATE applies."),
    Setting("TASKS_CORS_ORIGINS", (), _origins,
            "Comma-separated exact origins (https://a.example) whose pages may read "
            "/api/ with GET, event streams included; empty: no CORS."),
    Setting("TASKS_METRICS_TOKEN", None, _optional_str,
            "When set, GET /metrics needs this bearer token; else /metrics is open.", secret=True),
    Setting("TASKS_BLOCK_REPORT", 0.5, _non_negative_float,
            "Seconds a greenlet may hold the event loop before the server log names "
            "it (and its task) under gunicorn (0: off)."),
)


def load_settings(environ: Mapping[str, str],
                  overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Parse every setting from ``environ``; ``overrides`` win and may hold
    already-typed values (as tests pass them)."""
    overrides = overrides or {}
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides:
            raw = overrides[setting.name]
        elif setting.name in environ:
            raw = environ[setting.name]
        else:
            values[setting.name] = setting.default
            continue
        values[setting.name] = _parse(setting, raw)
    _check(values)
    return values


def _parse(setting: Setting, raw: Any) -> Any:
    if raw is None:
        return None if setting.default is None else setting.default
    text = raw if isinstance(raw, str) else str(raw).lower() if isinstance(raw, bool) else str(raw)
    try:
        return setting.parse(text)
    except ValueError as exc:
        shown = "(value hidden)" if setting.secret else repr(raw)
        raise ConfigError(f"{setting.name}={shown}: {exc}") from None


def _check(values: dict[str, Any]) -> None:
    if values["TASKS_RETRY_MIN_MS"] > values["TASKS_RETRY_MAX_MS"]:
        raise ConfigError(
            f"TASKS_RETRY_MIN_MS={values['TASKS_RETRY_MIN_MS']} is above "
            f"TASKS_RETRY_MAX_MS={values['TASKS_RETRY_MAX_MS']}")
    if values["TASKS_USER_TOKENS"] and values["TASKS_API_TOKEN"]:
        raise ConfigError("TASKS_API_TOKEN and TASKS_USER_TOKENS are both set: per-user "
                          "tokens replace the shared token, so set only one")
    if (values["TASKS_USER_TOKENS"] and values["TASKS_BACKEND"] == "redis"
            and not values["TASKS_SECRET_KEY"]):
        raise ConfigError("TASKS_USER_TOKENS on the redis backend needs TASKS_SECRET_KEY, "
                          "the same on every worker (it signs cookies and stream tickets)")
    if values["TASKS_RETENTION"] < 60:
        raise ConfigError(
            f"TASKS_RETENTION={values['TASKS_RETENTION']}: must be at least 60 "
            "(API.md: finished streams stay resumable for 60 s)")
