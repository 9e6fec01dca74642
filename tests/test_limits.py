"""Overload limits: stream caps per worker and per client, and the rate of
task creation per client (tasks/limits.py)."""
import gevent
import pytest

from server import create_app
from tasks.config import ConfigError, load_settings
from tasks.errors import RateLimited
from tasks.limits import CreateRate
from tests.conftest import TestStream, wait_for


def start(client, **kwargs):
    return client.post("/api/tasks", json={"name": "demo", "params": {"steps": 1, "delay": 0}},
                       **kwargs)


def let_readers_connect():
    """On Redis, a stream closed the instant it opened kills its hub reader
    while it connects, and redis-py then leaks the socket (it closes it only
    on OSError): a ResourceWarning in some later test. Give readers a moment."""
    gevent.sleep(0.02)


def streams_open(app):
    return app.extensions["tasks_limits"].streams.open


def test_the_worker_stream_cap_answers_503_with_retry_after_and_frees_on_close(make_app):
    app = make_app(TASKS_MAX_STREAMS=2)
    client = app.test_client()
    first, second = TestStream(client.get("/api/events")), TestStream(client.get("/api/events"))
    try:
        assert first.read().startswith(b"retry:") and second.read().startswith(b"retry:")
        refused = client.get("/api/events")
        assert refused.status_code == 503
        assert refused.json["error"]["code"] == "too_many_streams"
        assert "TASKS_MAX_STREAMS=2" in refused.json["error"]["message"]
        assert int(refused.headers["Retry-After"]) >= 1
        first.close()
        assert streams_open(app) == 1
        third = TestStream(client.get("/api/events"))
        assert third.read().startswith(b"retry:")
        let_readers_connect()
        third.close()
    finally:
        let_readers_connect()
        first.close()
        second.close()
    assert streams_open(app) == 0


def test_the_per_client_cap_answers_429_and_counts_addresses_apart(make_app):
    app = make_app(TASKS_MAX_STREAMS_PER_CLIENT=1)
    client = app.test_client()
    mine = TestStream(client.get("/api/events"))
    other = TestStream(client.get("/api/events", environ_base={"REMOTE_ADDR": "10.0.0.9"}))
    try:
        refused = client.get("/api/events")
        assert refused.status_code == 429
        assert refused.json["error"]["code"] == "too_many_streams"
        assert "Retry-After" in refused.headers
        assert other.read().startswith(b"retry:")
    finally:
        let_readers_connect()
        mine.close()
        other.close()
    assert streams_open(app) == 0


def test_streams_that_never_open_give_their_place_back(make_app):
    """404, 204 and a finished task's short stream all release at once or on close."""
    app = make_app(TASKS_MAX_STREAMS=1)
    client = app.test_client()
    assert client.get("/api/tasks/nope/events").status_code == 404
    assert streams_open(app) == 0
    task_id = start(client).json["id"]
    stream = TestStream(client.get(f"/api/tasks/{task_id}/events"))
    events = stream.until_end()
    stream.close()
    assert events[-1].type == "done" and streams_open(app) == 0
    again = client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": events[-1].id})
    assert again.status_code == 204 and streams_open(app) == 0
    assert client.head(f"/api/tasks/{task_id}/events").status_code == 200
    assert streams_open(app) == 0


def test_task_creation_is_rate_limited_per_client_with_retry_after(make_app):
    client = make_app(TASKS_CREATE_RATE=0.5, TASKS_CREATE_BURST=2).test_client()
    assert [start(client).status_code for _ in range(2)] == [202, 202]
    refused = start(client)
    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) == 2
    assert start(client, environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 202


def test_a_rate_of_zero_turns_the_limit_off(make_app):
    client = make_app(TASKS_CREATE_RATE=0, TASKS_CREATE_BURST=1, TASKS_MAX_QUEUED=100).test_client()
    assert {start(client).status_code for _ in range(20)} == {202}


def test_the_bucket_refills_at_the_rate_and_stays_bounded():
    now = [0.0]
    bucket = CreateRate(rate=2, burst=3, clock=lambda: now[0])
    for _ in range(3):
        bucket.take("a")
    with pytest.raises(RateLimited):
        bucket.take("a")
    now[0] += 0.5  # one token back
    bucket.take("a")
    with pytest.raises(RateLimited):
        bucket.take("a")
    for i in range(12_000):
        bucket.take(f"10.0.{i // 256}.{i % 256}")
    assert len(bucket._buckets) <= 10_000


@pytest.mark.parametrize("name, value", [
    ("TASKS_MAX_STREAMS", "-1"), ("TASKS_CREATE_RATE", "fast"),
    ("TASKS_CORS_ORIGINS", "*"), ("TASKS_CORS_ORIGINS", "example.com"),
    ("TASKS_BLOCK_REPORT", "-0.5"),
])
def test_bad_limit_settings_stop_start_up_naming_them(name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({name: value})


def test_events_held_in_memory_stay_under_the_cap_finished_tasks_first(tmp_path):
    app = create_app({"TASKS_DB": str(tmp_path / "t.db"), "TASKS_MAX_EVENTS_HELD": 40})
    app.testing = True
    client, engine = app.test_client(), app.extensions["tasks"]
    try:
        ids = []
        for _ in range(6):  # about 15 events each: the cap holds under three tasks' worth
            rv = client.post("/api/tasks", json={"name": "t_burst",
                                                 "params": {"logs": 5, "progress": 5}})
            ids.append(rv.json["id"])
            wait_for(lambda: engine.get(ids[-1])["status"] == "succeeded", what="the burst")
            assert engine.hub.events_held <= 40 + 15
        assert engine.hub.record(ids[0]) is None  # the oldest went first
        assert engine.hub.record(ids[-1]) is not None  # the newest is still held
        assert client.get("/healthz").json["events_held"] == engine.hub.events_held
        # A forgotten task's stream still tells how it ended, from the record store.
        replay = client.get(f"/api/tasks/{ids[0]}/events").data.decode()
        assert "event: snapshot" in replay and "event: done" in replay
    finally:
        engine.close()
