from __future__ import annotations

from typing import Iterator

import pytest

from tests.live.server import LiveServer


@pytest.fixture(params=["direct", "portable"])
def live(request, tmp_path) -> Iterator[LiveServer]:
    """A gunicorn gevent server on a free port, stopped (SIGTERM) afterwards;
    once with streams written straight to sockets, once through gunicorn's
    ordinary body writes (the path TLS or compressing middleware take)."""
    fast = "1" if request.param == "direct" else "0"
    server = LiveServer(tmp_path, {"TASKS_HEARTBEAT": "1", "TASKS_FAST_PATH": fast}).start()
    yield server
    server.stop()


@pytest.fixture
def make_live(tmp_path) -> Iterator:
    """Start servers with custom settings: ``make_live({"TASKS_...": "..."})``."""
    servers: list[LiveServer] = []

    def make(env: dict[str, str] | None = None, **kwargs) -> LiveServer:
        server = LiveServer(tmp_path, env, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
