"""``/healthz`` (the worker can serve) and ``/readyz`` (it takes new tasks:
not shutting down, and its backend answers).

A load balancer takes a worker out of rotation on a 503 from ``/readyz``;
``/healthz`` stays 200 meanwhile, so the worker is not restarted for an outage
that is not its own. On Redis, readiness is a ``PING`` bounded to a second.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

bp = Blueprint("tasks_health", __name__)

#: Longest wait for the backend's answer before the worker counts as unready.
PING_TIMEOUT = 1.0


@bp.get("/healthz")
def healthz() -> Any:
    handed_off = getattr(current_app, "handed_off", None)  # streams.py's direct path
    return {"status": "ok", **current_app.extensions["tasks"].stats,
            "handed_off_streams": len(handed_off) if handed_off is not None else 0}


@bp.get("/readyz")
def readyz() -> Any:
    engine = current_app.extensions["tasks"]
    if not engine.accepting:
        return {"status": "shutting_down"}, 503, {"Retry-After": "2"}
    problem = engine.hub.backend_problem(timeout=PING_TIMEOUT)
    if problem is not None:
        return {"status": "backend_unavailable", "message": problem}, 503, {"Retry-After": "2"}
    return {"status": "ready"}
