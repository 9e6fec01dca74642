"""``tasks.client`` against a real gunicorn: calls, typed errors, and a stream
that survives dropped connections with every event exactly once."""
from __future__ import annotations

from typing import Iterator

import pytest

from tasks.client import (BadRequest, ConnectionFailed, Conflict, Done, Log, NotFound,
                          Progress, Snapshot, Status, TaskCancelled, TaskClient, TaskFailed,
                          TaskInterrupted, Unauthorized)
from tests.live.proxy import Proxy
from tests.live.server import LiveServer, free_port

pytestmark = pytest.mark.live

FAST_RETRY = {"TASKS_HEARTBEAT": "1", "TASKS_RETRY_MIN_MS": "100", "TASKS_RETRY_MAX_MS": "200"}


@pytest.fixture
def server(make_live) -> LiveServer:
    return make_live(FAST_RETRY)


@pytest.fixture
def client(server: LiveServer) -> Iterator[TaskClient]:
    with TaskClient(server.url, read_timeout=10, give_up_after=20) as c:
        yield c


def test_events_are_typed_and_end_at_done(client):
    record = client.start("demo", {"steps": 3, "delay": 0.02})
    events = list(client.events(record["id"]))
    assert isinstance(events[0], Snapshot) and events[0].record["id"] == record["id"]
    assert isinstance(events[-1], Done) and events[-1].status == "succeeded"
    assert [e.current for e in events if isinstance(e, Progress)][-1] == 3
    assert any(isinstance(e, Log) and e.message for e in events)
    assert any(isinstance(e, Status) and e.status == "succeeded" for e in events)
    ids = [e.id for e in events]
    assert ids == sorted(set(ids)), "ids strictly increase"


def test_a_dropped_connection_is_resumed_with_every_event_exactly_once(server, client):
    """The proxy cuts the stream mid-event three times; the client resumes by
    Last-Event-ID and yields what an uninterrupted replay holds, no more, no less."""
    with Proxy(server.url, "cut", cut_after=700, cuts=3) as proxy, \
            TaskClient(proxy.url, read_timeout=10, give_up_after=20) as cut_client:
        record = cut_client.start("demo", {"steps": 30, "delay": 0.05})
        seen = list(cut_client.events(record["id"]))
        assert proxy.cut_count == 3, "the proxy should have cut the stream three times"
    assert isinstance(seen[0], Snapshot) and isinstance(seen[-1], Done)
    assert sum(isinstance(e, Snapshot) for e in seen) == 1, "a resume fell back to a snapshot"
    # The server still holds the task's events: replay them all from the first snapshot.
    reference = list(client.events(record["id"], last_event_id=seen[0].id))
    assert [e.id for e in seen[1:]] == [e.id for e in reference]
    assert [e.current for e in seen if isinstance(e, Progress)] == list(range(1, 31))


def test_wait_returns_the_result(client):
    record = client.start("demo", {"steps": 2, "delay": 0})
    assert client.wait(record["id"]) == {"steps": 2}
    assert client.get(record["id"])["status"] == "succeeded"


def test_wait_raises_task_failed_with_the_error(client):
    record = client.start("demo", {"steps": 5, "delay": 0, "fail_at": 2})
    with pytest.raises(TaskFailed) as info:
        client.wait(record["id"])
    assert info.value.error == {"type": "RuntimeError", "message": "failed at step 2"}
    assert "failed at step 2" in str(info.value)


def test_cancel_then_wait_raises_task_cancelled(client):
    record = client.start("demo", {"steps": 100, "delay": 0.1})
    assert client.cancel(record["id"])["id"] == record["id"]
    with pytest.raises(TaskCancelled):
        client.wait(record["id"])
    with pytest.raises(Conflict) as info:
        client.cancel(record["id"])
    assert info.value.status == 409 and info.value.code == "task_finished"


def test_a_stream_already_past_done_ends_quietly(client):
    record = client.start("demo", {"steps": 1, "delay": 0})
    done = list(client.events(record["id"]))[-1]
    assert list(client.events(record["id"], last_event_id=done.id)) == []  # the 204


def test_server_errors_are_typed_with_status_code_and_message(client):
    with pytest.raises(BadRequest) as info:
        client.start("no-such-type")
    assert info.value.code == "unknown_task_type" and "no-such-type" in info.value.message
    with pytest.raises(BadRequest) as info:
        client.start("demo", {"steps": 0})
    assert info.value.code == "invalid_params" and "steps" in info.value.message
    with pytest.raises(NotFound):
        client.get("missing")
    with pytest.raises(NotFound):
        list(client.events("missing"))


def test_list_filters_and_limits(client):
    first = client.start("demo", {"steps": 1, "delay": 0})
    client.wait(first["id"])
    second = client.start("demo", {"steps": 1, "delay": 0})
    client.wait(second["id"])
    assert [r["id"] for r in client.list(limit=2)] == [second["id"], first["id"]]
    assert all(r["status"] == "succeeded" for r in client.list(status="succeeded"))
    assert {t["name"] for t in client.task_types()} >= {"demo", "primes"}


def test_token_is_sent_on_calls_and_streams(make_live):
    server = make_live({**FAST_RETRY, "TASKS_API_TOKEN": "s3cret"})
    with TaskClient(server.url) as anonymous, pytest.raises(Unauthorized) as info:
        anonymous.list()
    assert info.value.status == 401
    with TaskClient(server.url, token="s3cret") as client:
        record = client.start("demo", {"steps": 2, "delay": 0})
        assert client.wait(record["id"]) == {"steps": 2}


def test_no_server_raises_connection_failed():
    with TaskClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client, \
            pytest.raises(ConnectionFailed, match="cannot reach"):
        client.list()


def test_events_follow_a_task_across_a_server_restart(make_live):
    """kill -9 mid-task, a new server on the same port and database: the
    client reconnects on its own and ends with the task ``interrupted``."""
    server = make_live(FAST_RETRY)
    with TaskClient(server.url, read_timeout=10, give_up_after=30) as client:
        record = client.start("demo", {"steps": 200, "delay": 0.05})
        events = client.events(record["id"])
        seen = []
        for event in events:
            seen.append(event)
            if isinstance(event, Progress) and event.current >= 3:
                break
        server.kill_worker()
        make_live(FAST_RETRY, port=server.port)
        seen += list(events)
        with pytest.raises(TaskInterrupted) as info:
            client.wait(record["id"])
    assert isinstance(seen[-1], Done) and seen[-1].status == "interrupted"
    assert info.value.error and info.value.error["type"] == "Interrupted"
    ids = [e.id for e in seen]
    assert ids == sorted(set(ids))
