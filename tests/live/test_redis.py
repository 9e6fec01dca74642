"""Several workers and several machines on one real Redis.

Machine A is ``gunicorn -w 2``, machine B another gunicorn on another port:
whatever worker or machine a request lands on, every stream is complete, in
order, resumable, cancellable; a killed machine's task ends ``interrupted``;
a Redis restart mid-stream is survived.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Iterator

import gevent
import pytest

from tests.live.server import LiveServer, StreamReader
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.live, pytest.mark.redis]

_prefixes = itertools.count()


def redis_env(redis: RedisServer, **extra: str) -> dict[str, str]:
    return {"TASKS_BACKEND": "redis", "TASKS_REDIS_URL": redis.url,
            "TASKS_REDIS_PREFIX": f"live{next(_prefixes)}", "TASKS_HEARTBEAT": "1",
            "TASKS_REDIS_HEARTBEAT": "0.5", **extra}


def events_path(record: dict[str, Any]) -> str:
    return f"/api/tasks/{record['id']}/events"


def progress_of(events: list[Any]) -> list[int]:
    return [e.json["current"] for e in events if e.type == "progress"]


def assert_in_order(events: list[Any]) -> None:
    ids = [int(e.id) for e in events]
    assert ids == sorted(set(ids)), "ids must strictly increase"
    progress = progress_of(events)
    assert progress == sorted(progress), f"progress out of order: {progress}"


@pytest.fixture(scope="module")
def redis(tmp_path_factory) -> Iterator[RedisServer]:
    # Not the session's redis_server: these tests kill and restart theirs.
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    if not server.available:
        pytest.skip("redis-server is not installed (.ci/run installs it)")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def machines(tmp_path_factory, redis) -> Iterator[tuple[LiveServer, LiveServer]]:
    """A: two workers; B: one more worker on another port (another machine)."""
    env = redis_env(redis)
    folder = tmp_path_factory.mktemp("machines")
    a = LiveServer(folder, env, args=["-w", "2"]).start()
    b = LiveServer(folder, env).start()
    yield a, b
    a.stop()
    b.stop()


def test_a_task_started_on_one_machine_streams_through_every_worker(machines):
    a, b = machines
    record = a.start_task(steps=30, delay=0.03)
    readers = [StreamReader(b.url, events_path(record)) for _ in range(3)]
    readers += [StreamReader(a.url, events_path(record)) for _ in range(6)]  # both workers
    try:
        jobs = [gevent.spawn(reader.until_done, 20) for reader in readers]
        gevent.joinall(jobs, timeout=25, raise_error=True)
        for reader in readers:
            events = reader.events
            assert events[0].type == "snapshot" and events[-1].type == "done"
            assert events[-1].json["status"] == "succeeded"
            assert events[-1].json["result"] == {"steps": 30}
            assert_in_order(events)
            assert progress_of(events)[-1] == 30
    finally:
        for reader in readers:
            reader.close()
    status, _, body = b.request("GET", f"/api/tasks/{record['id']}")
    assert status == 200 and body["status"] == "succeeded"
    listed = b.request("GET", "/api/tasks?status=succeeded")[2]["tasks"]
    assert record["id"] in [t["id"] for t in listed]


def test_the_all_tasks_stream_on_one_machine_carries_tasks_of_the_other(machines):
    a, b = machines
    with StreamReader(b.url, "/api/events") as everything:
        everything.until(lambda evs: bool(evs) and evs[0].type == "snapshot")
        record = a.start_task(steps=3, delay=0.01)
        events = everything.until(lambda evs: any(
            e.type == "done" and e.json["task_id"] == record["id"] for e in evs))
    mine = [e for e in events if e.json.get("task_id") == record["id"]]
    assert mine[0].type == "snapshot" and mine[-1].type == "done"
    assert_in_order(events)


def test_resume_on_another_machine_gets_exactly_the_missed_events(machines):
    a, b = machines
    record = a.start_task(steps=40, delay=0.03)
    with StreamReader(a.url, events_path(record)) as first:
        seen = first.until(lambda evs: len(progress_of(evs)) >= 5)
    last = seen[-1]
    with StreamReader(b.url, events_path(record), {"Last-Event-ID": last.id}) as again:
        rest = again.until_done(timeout=20)
    assert rest[0].type != "snapshot" and int(rest[0].id) > int(last.id)
    assert rest[-1].json["status"] == "succeeded"
    assert_in_order(seen + rest)
    assert progress_of(seen + rest)[-1] == 40
    for server in (a, b):
        status, _, _ = server.request("GET", events_path(record),
                                      headers={"Last-Event-ID": rest[-1].id})
        assert status == 204


def test_cancel_on_one_machine_stops_the_task_on_the_other(machines):
    a, b = machines
    record = b.start_task(steps=200, delay=0.05)
    with StreamReader(a.url, events_path(record)) as stream:
        stream.until(lambda evs: any(e.type == "progress" for e in evs))
        started = time.monotonic()
        status, _, body = a.request("POST", f"/api/tasks/{record['id']}/cancel")
        assert status == 202 and body["id"] == record["id"]
        events = stream.until_done(timeout=5)
        assert time.monotonic() - started < 2, "the cancel took too long to arrive"
    assert events[-1].json["status"] == "cancelled"
    assert a.request("POST", f"/api/tasks/{record['id']}/cancel")[0] == 409


def test_the_queue_limit_holds_per_worker(tmp_path, redis):
    server = LiveServer(tmp_path, redis_env(redis, TASKS_MAX_RUNNING="1",
                                            TASKS_MAX_QUEUED="1")).start()
    try:
        records = [server.start_task(steps=1, delay=20) for _ in range(2)]
        status, headers, body = server.request("POST", "/api/tasks", {"name": "demo"})
        assert status == 429 and body["error"]["code"] == "queue_full"
        assert headers["Retry-After"].isdigit()
        for record in records:
            server.request("POST", f"/api/tasks/{record['id']}/cancel")
    finally:
        server.stop()


def test_a_killed_machines_task_ends_interrupted_on_the_other(tmp_path, redis):
    env = redis_env(redis)
    a = LiveServer(tmp_path, env).start()
    b = LiveServer(tmp_path, env).start()
    try:
        record = a.start_task(steps=1000, delay=0.05)
        with StreamReader(b.url, events_path(record)) as stream:
            stream.until(lambda evs: any(e.type == "progress" for e in evs))
            killed = time.monotonic()
            a.kill_worker()
            events = stream.until_done(timeout=15)
            took = time.monotonic() - killed
        assert events[-1].json["status"] == "interrupted"
        assert events[-1].json["error"]["type"] == "Interrupted"
        assert [e.json["status"] for e in events if e.type == "status"][-1] == "interrupted"
        assert_in_order(events)
        # alive keys live 3 beats of 0.5 s; the survivors look every 0.5 s
        assert took < 6, f"the dead machine's task took {took:.1f} s to end"
        status, _, body = b.request("GET", f"/api/tasks/{record['id']}")
        assert status == 200 and body["status"] == "interrupted" and body["finished_at"]
    finally:
        a.stop()
        b.stop()


def test_a_redis_restart_mid_stream_is_survived(tmp_path):
    redis = RedisServer(tmp_path)
    if not redis.available:
        pytest.skip("redis-server is not installed")
    redis.start()
    server = LiveServer(tmp_path, redis_env(redis)).start()
    try:
        record = server.start_task(steps=60, delay=0.05)
        stream = StreamReader(server.url, events_path(record))
        seen = stream.until(lambda evs: len(progress_of(evs)) >= 3)
        redis.stop()
        started = time.monotonic()
        status, _, body = server.request("GET", "/api/tasks", timeout=10)
        assert status == 503 and body["error"]["code"] == "backend_unavailable"
        assert time.monotonic() - started < 3, "the API hung while Redis was down"
        stream.until_end(timeout=10)  # the reader lost Redis: the stream ends...
        assert stream.body.rstrip().split(b"\n")[-1].startswith(b"retry: ")  # ...saying come back
        stream.close()
        time.sleep(1)  # the task keeps running; its events wait in the worker
        redis.start()
        events = list(stream.events)
        deadline = time.monotonic() + 20
        while not (events and events[-1].type == "done"):  # the client comes back, resuming
            assert time.monotonic() < deadline, f"never got done; last: {events[-1:]}"
            with StreamReader(server.url, events_path(record),
                              {"Last-Event-ID": events[-1].id}) as again:
                if again.status != 200:
                    time.sleep(0.2)
                    continue
                again.until_end(timeout=15)
                events += again.events
        assert events[-1].json["status"] == "succeeded"
        assert_in_order([e for e in events if e.type != "snapshot"])
        status, _, body = server.request("GET", f"/api/tasks/{record['id']}")
        assert status == 200 and body["status"] == "succeeded" and body["result"] == {"steps": 60}
        assert len(seen) >= 3
        assert "writing events: Redis unavailable" in server.log
    finally:
        server.stop()
        redis.stop()
