"""``/healthz`` (the worker can serve) and ``/readyz`` (it takes new tasks)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

bp = Blueprint("tasks_health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return {"status": "ok", **current_app.extensions["tasks"].stats}


@bp.get("/readyz")
def readyz() -> Any:
    if not current_app.extensions["tasks"].accepting:
        return {"status": "shutting_down"}, 503
    return {"status": "ready"}
