from __future__ import annotations

from typing import Iterator

import pytest

from tests.live.server import LiveServer


@pytest.fixture
def live(tmp_path) -> Iterator[LiveServer]:
    """A gunicorn gevent server on a free port, stopped (SIGTERM) afterwards."""
    server = LiveServer(tmp_path, {"TASKS_HEARTBEAT": "1"}).start()
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
