"""What only the Redis backend has: one Redis reader per stream per worker,
apps sharing one Redis, dead workers' tasks reaped, Redis outages as 503."""
from __future__ import annotations

import time

import gevent
import pytest

from tests.conftest import TestStream, wait_for
from tests.fixtures import GATES

pytestmark = [pytest.mark.redis, pytest.mark.parametrize("backend", ["redis"], indirect=True)]


def start(client, name="t_gate", **params):
    rv = client.post("/api/tasks", json={"name": name, "params": params})
    assert rv.status_code == 202, rv.json
    return rv.json["id"]


def test_fifty_readers_of_one_task_share_one_redis_reader(client, engine, open_stream):
    """PITFALLS 3: readers of one task on one worker must not each hold a
    Redis connection; the reader ends with its last subscriber."""
    task_id = start(client, gate="fan", steps=1)
    streams = [open_stream(f"/api/tasks/{task_id}/events") for _ in range(50)]
    for stream in streams:
        stream.until_type("snapshot")
    assert engine.hub.subscriber_count(task_id) == 50
    assert engine.hub.reader_count() == 1
    GATES["fan:1"].set()
    for stream in streams:
        assert stream.until_end()[-1].type == "done"
    wait_for(lambda: engine.hub.reader_count() == 0, what="the reader to end with its readers")


def test_two_apps_on_one_redis_serve_each_others_tasks(make_app):
    """Two apps in one process stand for two workers: separate hubs, one Redis."""
    one, two = make_app().test_client(), make_app().test_client()
    task_id = start(one, gate="shared", steps=2)
    stream = TestStream(two.get(f"/api/tasks/{task_id}/events"))
    try:
        stream.until_type("snapshot")
        GATES["shared:1"].set()
        stream.until(lambda evs: any(e.type == "progress" for e in evs))
        assert two.post(f"/api/tasks/{task_id}/cancel").status_code == 202
        events = stream.until_end()
    finally:
        stream.close()
    assert events[-1].type == "done" and events[-1].json["status"] == "cancelled"
    assert two.get(f"/api/tasks/{task_id}").json["status"] == "cancelled"
    assert two.post(f"/api/tasks/{task_id}/cancel").status_code == 409


def test_a_worker_that_stops_beating_has_its_tasks_interrupted(make_app):
    dying, survivor = make_app(), make_app()
    task_id = start(dying.test_client(), gate="orphan")
    stream = TestStream(survivor.test_client().get(f"/api/tasks/{task_id}/events"))
    try:
        stream.until_type("snapshot")
        hub = dying.extensions["tasks"].hub
        gevent.killall(hub.writer.greenlets)  # as kill -9 would: no more alive beats, no writes
        started = time.monotonic()
        events = stream.until_type("done", timeout=6)
    finally:
        stream.close()
    assert events[-1].json["status"] == "interrupted"
    assert time.monotonic() - started < 4  # alive keys live 3 beats of 0.5 s
    record = survivor.test_client().get(f"/api/tasks/{task_id}").json
    assert record["status"] == "interrupted" and record["error"]["type"] == "Interrupted"
    GATES["orphan:1"].set()


def test_while_redis_is_down_the_api_answers_503_quickly_and_comes_back(
        client, redis_server, open_stream):
    task_id = start(client, "demo", steps=1, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    waiting = start(client, gate="outage")
    stream = open_stream(f"/api/tasks/{waiting}/events")
    stream.until_type("snapshot")
    redis_server.stop()
    try:
        started = time.monotonic()
        for rv in (client.get("/api/tasks"), client.get(f"/api/tasks/{task_id}"),
                   client.post("/api/tasks", json={"name": "demo"}),
                   client.get(f"/api/tasks/{task_id}/events")):
            assert rv.status_code == 503, rv.data
            assert rv.json["error"]["code"] == "backend_unavailable"
            assert rv.headers["Retry-After"].isdigit()
        assert time.monotonic() - started < 3
        stream.until_end()
        assert stream.raw.rstrip().split(b"\n")[-1].startswith(b"retry: ")
    finally:
        redis_server.start()
    wait_for(lambda: client.get("/api/tasks").status_code == 200, timeout=5)
    GATES["outage:1"].set()
    wait_for(lambda: client.get(f"/api/tasks/{waiting}").json["status"] == "succeeded",
             what="the task to finish after Redis came back")
