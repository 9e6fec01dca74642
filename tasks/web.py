"""The page: ``/`` (start tasks, watch them all) and the shareable
``/tasks/<id>`` detail view (one task's log and result).

Both render ``templates/index.html``; every URL the scripts need travels as a
``data-`` attribute filled by ``url_for``, so the page has no inline script
and keeps working under a strict Content-Security-Policy, which it sends.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, render_template

bp = Blueprint("tasks_web", __name__)

# default-src 'self' is the policy the page is written for (no inline script
# or style); the rest closes what default-src does not cover.
_CSP = ("default-src 'self'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'; object-src 'none'")


@bp.get("/")
def index() -> Any:
    return render_template("index.html", task_id=None, auth_mode=_auth_mode())


@bp.get("/tasks/<task_id>")
def task_page(task_id: str) -> Any:
    """The detail view; an unknown id is reported by the page (the API answers
    404), so the page itself never tells without the token whether a task exists."""
    return render_template("index.html", task_id=task_id, auth_mode=_auth_mode())


def _auth_mode() -> str:
    """How the page signs in: ``user`` (per-user mode), ``token`` or ``none``."""
    return str(current_app.extensions["tasks_auth"].mode)


@bp.after_request
def page_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
