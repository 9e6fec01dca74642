"""Security headers on every response, and CORS for other sites' pages.

Every response gets a strict Content-Security-Policy (no inline script or
style), ``nosniff``, ``X-Frame-Options: DENY`` and ``Referrer-Policy:
no-referrer``: EventSource URLs may carry ``?token=`` (PITFALLS 8). A view that
sets one of these itself (the page, web.py) keeps its own.

CORS is off unless ``TASKS_CORS_ORIGINS`` lists exact origins: then a GET
under ``/api/`` (event streams included, so ``new EventSource(url)`` works from
those sites) from a listed ``Origin`` gets ``Access-Control-Allow-Origin``
naming it, never ``*``, and never ``Allow-Credentials``: the API authenticates
with a bearer token, not cookies. Preflights for such GETs are answered here,
before the token check (browsers send them without credentials).
"""
from __future__ import annotations

from flask import Flask, Response, current_app, request

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

_CORS_METHODS = ("GET", "HEAD")
_CORS_REQUEST_HEADERS = "Authorization, Last-Event-ID, Cache-Control, Accept"
_PREFLIGHT_MAX_AGE = "600"


def init_app(app: Flask) -> None:
    app.before_request(answer_preflight)
    app.after_request(add_headers)


def _allowed_origin() -> str | None:
    """The request's Origin when it may read this response cross-site."""
    origin = request.headers.get("Origin")
    if origin is None or not request.path.startswith("/api/"):
        return None
    origins = current_app.config.get("TASKS_CORS_ORIGINS") or ()
    return origin if origin.rstrip("/") in origins else None


def answer_preflight() -> Response | None:
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return None
    origin = _allowed_origin()
    if origin is None:
        return None  # no CORS headers: the browser refuses the real request
    response = Response(status=204)
    if request.headers["Access-Control-Request-Method"].upper() in _CORS_METHODS:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ", ".join(_CORS_METHODS)
        response.headers["Access-Control-Allow-Headers"] = _CORS_REQUEST_HEADERS
        response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
    response.vary.add("Origin")
    return response


#: HEADERS with each name lowercased, to compare with the response's own.
_HEADERS_BY_KEY = [(name.lower(), name, value) for name, value in HEADERS.items()]


def add_headers(response: Response) -> Response:
    # One pass over the response's headers, not one setdefault scan per name
    # (a few % of every request on S4).
    present = {name.lower() for name, _ in response.headers}
    for key, name, value in _HEADERS_BY_KEY:
        if key not in present:
            response.headers.add(name, value)
    if request.path.startswith("/api/") and current_app.config.get("TASKS_CORS_ORIGINS"):
        response.vary.add("Origin")  # caches must not serve one origin's answer to another
        origin = _allowed_origin()
        if origin is not None and request.method in _CORS_METHODS:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After"
    return response
