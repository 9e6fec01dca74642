"""The page: ``/`` and the shareable ``/tasks/<id>`` detail view."""
from __future__ import annotations

from typing import Any

from flask import Blueprint

bp = Blueprint("tasks_web", __name__)


@bp.get("/")
def index() -> Any:
    return "<!doctype html><title>Taskstream</title><p>The page is being built.</p>"
