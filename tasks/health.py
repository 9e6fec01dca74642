"""``/healthz`` (the worker can serve) and ``/readyz`` (it takes new tasks:
not shutting down, and its backend answers).

A load balancer takes a worker out of rotation on a 503 from ``/readyz``;
``/healthz`` stays 200 meanwhile, so the worker is not restarted for an outage
that is not its own. On Redis, readiness is a ``PING`` bounded to a second.
"""
from __future__ import annotations

from typing import Any

import gevent
from flask import Blueprint, current_app

bp = Blueprint("tasks_health", __name__)

#: Longest wait for the backend's answer before the worker counts as unready.
PING_TIMEOUT = 1.0


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok", **current_app.extensions["tasks"].stats}


@bp.get("/readyz")
def readyz() -> Any:
    engine = current_app.extensions["tasks"]
    if not engine.accepting:
        return {"status": "shutting_down"}, 503, {"Retry-After": "2"}
    problem = _backend_problem(engine)
    if problem is not None:
        return {"status": "backend_unavailable", "message": problem}, 503, {"Retry-After": "2"}
    return {"status": "ready"}


def _backend_problem(engine: Any) -> str | None:
    """Why the backend cannot be reached, or None (the memory backend always can)."""
    connections = getattr(engine.hub, "_conn", None)  # redis_support.Connections
    commands = getattr(connections, "commands", None)
    if commands is None:
        return None
    from .redis_support import REDIS_ERRORS
    timeout = gevent.Timeout(PING_TIMEOUT)
    timeout.start()
    try:
        commands.ping()
    except gevent.Timeout as exc:
        if exc is not timeout:
            raise  # someone else's time-out: not ours to swallow
        return f"Redis did not answer PING within {PING_TIMEOUT:g} s"
    except REDIS_ERRORS as exc:
        return f"Redis is unreachable: {exc}"
    finally:
        timeout.close()
    return None
