from __future__ import annotations

import itertools
from typing import Any, Callable, Iterator

import gevent
import pytest
from flask import Flask

import tests.fixtures  # noqa: F401  (registers the t_* task types)
from server import create_app
from tasks.engine import TaskEngine
from tests.fixtures import GATES
from tests.redis_server import RedisServer
from tests.sse_parser import SSEEvent, SSEParser


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """One real redis-server for the session (each test gets its own key prefix)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    if not server.available:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server.start()
    yield server
    server.stop()


_prefixes = itertools.count()


@pytest.fixture(params=["memory", "redis"])
def backend(request) -> dict[str, Any]:
    """The engine suite runs on both backends; on Redis each test has its own prefix."""
    if request.param == "memory":
        return {"TASKS_BACKEND": "memory"}
    server = request.getfixturevalue("redis_server")
    if server.process is None:
        server.start()  # an outage test left it stopped
    return {"TASKS_BACKEND": "redis", "TASKS_REDIS_URL": server.url,
            "TASKS_REDIS_PREFIX": f"test{next(_prefixes)}", "TASKS_REDIS_HEARTBEAT": 0.5}


@pytest.fixture
def make_app(tmp_path, backend) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = create_app({"TASKS_DB": str(tmp_path / "tasks.sqlite3"),
                          "TASKS_HEARTBEAT": 0.2, **backend, **config})
        app.testing = True
        apps.append(app)
        return app

    yield make
    leaked = {id(a): a.extensions["tasks"].hub.subscriber_count() for a in apps}
    for app in apps:
        app.extensions["tasks"].close()
    GATES.clear()
    assert not any(leaked.values()), f"subscribers left open after the test: {leaked}"


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def engine(app) -> TaskEngine:
    return app.extensions["tasks"]  # type: ignore[no-any-return]


def wait_for(predicate: Callable[[], Any], timeout: float = 5, what: str = "") -> Any:
    """Poll ``predicate`` (letting other greenlets run) until it is truthy."""
    with gevent.Timeout(timeout, AssertionError(f"timed out waiting for {what or predicate}")):
        while not (value := predicate()):
            gevent.sleep(0.01)
    return value


class TestStream:
    """A stream read through Flask's test client, every wait bounded."""

    __test__ = False

    def __init__(self, response) -> None:
        self.response = response
        self.parser = SSEParser()
        self._chunks = iter(response.response)
        self.raw = b""
        self.ended = False

    def read(self, timeout: float = 5) -> bytes:
        with gevent.Timeout(timeout, AssertionError("no bytes from the stream in time")):
            try:
                chunk = next(self._chunks)
            except StopIteration:
                self.ended = True
                return b""
        self.raw += chunk
        self.parser.feed(chunk.decode())
        return chunk

    def until(self, predicate: Callable[[list[SSEEvent]], bool], timeout: float = 5
              ) -> list[SSEEvent]:
        with gevent.Timeout(timeout, AssertionError(
                f"timed out; events: {[e.type for e in self.parser.events]}")):
            while not predicate(self.parser.events):
                assert not self.ended, f"ended; events: {[e.type for e in self.parser.events]}"
                self.read(timeout)
        return self.parser.events

    def until_type(self, event_type: str, timeout: float = 5) -> list[SSEEvent]:
        return self.until(lambda events: any(e.type == event_type for e in events), timeout)

    def until_end(self, timeout: float = 5) -> list[SSEEvent]:
        while not self.ended:
            self.read(timeout)
        return self.parser.events

    @property
    def events(self) -> list[SSEEvent]:
        return self.parser.events

    def close(self) -> None:
        self.response.close()


@pytest.fixture
def open_stream(client) -> Iterator[Callable[..., TestStream]]:
    streams: list[TestStream] = []

    def open_(path: str, **kwargs: Any) -> TestStream:
        stream = TestStream(client.get(path, **kwargs))
        streams.append(stream)
        return stream

    yield open_
    for stream in streams:
        stream.close()
