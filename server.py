"""The Taskstream app: ``create_app(config=None)`` and ``app`` for gunicorn.

Run it with ``gunicorn -c gunicorn.conf.py server:app`` (``make run``), or for
a quick look ``python server.py`` (gevent's own WSGI server, one process).
"""
if __name__ == "__main__":  # patch before anything imports socket, ssl or threading
    from gevent import monkey

    monkey.patch_all()

import logging
import os
from typing import Any, Mapping

from flask import Flask

from tasks import limits, metrics, security
from tasks.api import bp as api_blueprint, register_error_handlers
from tasks.cli import tasks_cli
from tasks.config import load_settings
from tasks.engine import TaskEngine
from tasks.health import bp as health_blueprint
from tasks.streaming import StreamingFlask
from tasks.web import bp as web_blueprint


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = StreamingFlask(__name__)
    settings = load_settings(os.environ, config)
    app.config.update(settings)
    app.config.update({k: v for k, v in (config or {}).items() if not k.startswith("TASKS_")})
    app.config["MAX_CONTENT_LENGTH"] = settings["TASKS_MAX_BODY"]
    app.json.sort_keys = False  # records keep the field order of API.md
    TaskEngine(app)
    limits.init_app(app)
    metrics.init_app(app)
    security.init_app(app)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(web_blueprint)
    app.register_blueprint(health_blueprint)
    app.cli.add_command(tasks_cli)
    register_error_handlers(app)
    return app


app = create_app()


def _without_query(request_line: str) -> str:
    """``GET /a?token=x HTTP/1.1`` as ``GET /a HTTP/1.1``."""
    method, _, rest = request_line.partition(" ")
    target, _, version = rest.rpartition(" ")
    return f"{method} {target.split('?', 1)[0]} {version}" if target else request_line

if __name__ == "__main__":
    from gevent.pywsgi import WSGIHandler, WSGIServer

    class QuietHandler(WSGIHandler):
        """gevent's access log without query strings: they may hold ?token= or ?ticket=."""

        def format_request(self) -> str:
            line, self.requestline = self.requestline, _without_query(self.requestline or "")
            try:
                return str(super().format_request())
            finally:
                self.requestline = line

    logging.basicConfig(level=logging.INFO)
    from tasks import watchdog

    watchdog.start(app.config["TASKS_BLOCK_REPORT"])
    port = int(os.environ.get("PORT", "8000"))
    print(f"Taskstream on http://127.0.0.1:{port}/ (Ctrl-C stops)")
    app.extensions["tasks"].recover()
    try:
        WSGIServer(("127.0.0.1", port), app, handler_class=QuietHandler).serve_forever()
    except KeyboardInterrupt:
        app.extensions["tasks"].close()
