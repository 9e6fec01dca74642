"""The page: ``/`` and the shareable ``/tasks/<id>`` detail view, and ``/healthz``."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app

bp = Blueprint("tasks_web", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    engine = current_app.extensions["tasks"]
    if not engine.accepting:
        return {"status": "shutting_down"}, 503
    return {"status": "ok"}


@bp.get("/")
def index() -> Any:
    return "<!doctype html><title>Taskstream</title><p>The page is coming.</p>"
