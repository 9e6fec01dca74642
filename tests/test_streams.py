"""The event streams through Flask's test client: framing, order, resume, clean-up."""
import gevent
import pytest

from tests.conftest import wait_for
from tests.fixtures import GATES


def start(client, name="t_gate", **params):
    return client.post("/api/tasks", json={"name": name, "params": params}).json["id"]


def ids(events):
    return [int(e.id) for e in events]


def test_a_fresh_stream_starts_with_retry_then_snapshot_and_ends_after_done(client, open_stream):
    task_id = start(client, gate="g", steps=2)
    stream = open_stream(f"/api/tasks/{task_id}/events")
    assert stream.response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert stream.response.headers["Cache-Control"] == "no-cache"
    assert stream.response.headers["X-Accel-Buffering"] == "no"
    assert "Content-Encoding" not in stream.response.headers
    first = stream.read()
    assert first.startswith(b"retry: ")
    assert 1000 <= stream.parser.retry <= 3000
    GATES["g:1"].set()
    GATES["g:2"].set()
    events = stream.until_end()
    assert [e.type for e in events][0] == "snapshot"
    assert events[-1].type == "done" and events[-1].json["status"] == "succeeded"
    assert ids(events) == sorted(set(ids(events))), "ids must strictly increase"
    assert [e.json["current"] for e in events if e.type == "progress"][-1] == 2
    assert all({"task_id", "ts"} <= set(e.json) for e in events)
    snapshot = events[0].json
    assert snapshot["id"] == snapshot["task_id"] == task_id


def test_the_retry_field_is_jittered_per_connection(client, open_stream):
    task_id = start(client, gate="never")
    retries = set()
    for _ in range(8):
        stream = open_stream(f"/api/tasks/{task_id}/events")
        stream.read()
        retries.add(stream.parser.retry)
        stream.close()
    assert len(retries) > 1


def test_a_finished_task_gives_snapshot_then_done_then_the_end(client, open_stream):
    task_id = start(client, "demo", steps=2, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    events = open_stream(f"/api/tasks/{task_id}/events").until_end()
    assert [e.type for e in events] == ["snapshot", "done"]
    assert int(events[0].id) < int(events[1].id)
    assert events[0].json["status"] == "succeeded"


def test_an_id_from_before_the_task_replays_its_whole_history(client, open_stream):
    task_id = start(client, "demo", steps=3, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    for how in ({"headers": {"Last-Event-ID": "0"}}, {"query_string": {"lastEventId": "0"}}):
        events = open_stream(f"/api/tasks/{task_id}/events", **how).until_end()
        types = [e.type for e in events]
        assert "snapshot" not in types, "nothing was evicted: the history, not a snapshot"
        assert types[0] == "status" and types.count("log") == 2 and types[-1] == "done"


def test_resume_continues_exactly_after_the_last_event_id(client, open_stream):
    task_id = start(client, gate="r", steps=4)
    stream = open_stream(f"/api/tasks/{task_id}/events")
    GATES["r:1"].set()
    GATES["r:2"].set()
    seen = stream.until(lambda events: any(e.type == "progress" and e.json["current"] == 2
                                           for e in events))
    stream.close()
    last = seen[-1].id
    GATES["r:3"].set()
    GATES["r:4"].set()
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    for how in ({"headers": {"Last-Event-ID": last}}, {"query_string": {"lastEventId": last}}):
        resumed = open_stream(f"/api/tasks/{task_id}/events", **how).until_end()
        assert resumed[0].type != "snapshot"
        # 3 and 4 came in one burst: the hub may merge them (the newest wins)
        assert [e.json.get("current") for e in resumed if e.type == "progress"][-1] == 4
        assert all(e.json.get("current", 3) >= 3 for e in resumed if e.type == "progress")
        assert int(resumed[0].id) > int(last) and resumed[-1].type == "done"


def test_the_header_wins_over_the_query_and_junk_ids_count_as_absent(client, open_stream):
    task_id = start(client, "demo", steps=2, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    events = open_stream(f"/api/tasks/{task_id}/events").until_end()
    done_id = events[-1].id
    rv = client.get(f"/api/tasks/{task_id}/events?lastEventId=5",
                    headers={"Last-Event-ID": done_id})
    assert rv.status_code == 204
    for junk in ("-1", "abc", "1.5", "", "٣", "9" * 40):
        stream = open_stream(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": junk})
        assert stream.until_end()[0].type == "snapshot", junk


def test_a_reconnect_at_or_past_done_gets_204(client, open_stream):
    task_id = start(client, "demo", steps=1, delay=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    done_id = int(open_stream(f"/api/tasks/{task_id}/events").until_end()[-1].id)
    for last in (done_id, done_id + 1):
        rv = client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(last)})
        assert rv.status_code == 204 and rv.data == b""
    before = client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": str(done_id - 1)})
    assert b"event: done" in before.data and b"event: snapshot" not in before.data


def test_a_gap_no_longer_held_gets_a_fresh_snapshot(make_app):
    client = make_app(TASKS_EVENT_BUFFER=3).test_client()
    # Redis trims its streams in whole nodes of about 100 entries: emit plenty.
    task_id = start(client, "t_burst", logs=400, progress=0)
    wait_for(lambda: client.get(f"/api/tasks/{task_id}").json["status"] == "succeeded")
    all_events = client.get(f"/api/tasks/{task_id}/events").data
    early = all_events  # snapshot + done only: the early log lines are gone
    assert b"event: snapshot" in early
    rv = client.get(f"/api/tasks/{task_id}/events", headers={"Last-Event-ID": "1"})
    assert rv.data.count(b"event: snapshot") == 1


def test_silence_brings_keep_alive_comments(client, open_stream):
    task_id = start(client, gate="quiet")
    stream = open_stream(f"/api/tasks/{task_id}/events")
    stream.until_type("snapshot")
    with gevent.Timeout(2, AssertionError("no keep-alive within 2 s (heartbeat is 0.2 s)")):
        while b": keep-alive\n" not in stream.raw:
            stream.read()


def test_messages_with_newlines_and_html_arrive_intact(client, open_stream):
    text = "line one\nline two\r\n<img src=x onerror=alert(1)>\rend"
    task_id = start(client, "t_burst", logs=1, progress=1, text=text)
    events = open_stream(f"/api/tasks/{task_id}/events").until_end()
    logs = [e.json["message"] for e in events if e.type == "log"]
    done = events[-1].json
    assert done["status"] == "succeeded"
    assert logs == [f"{text} 0"] or done["result"] == 1


def test_a_closed_stream_releases_its_subscriber(client, engine, open_stream):
    task_id = start(client, gate="never")
    stream = open_stream(f"/api/tasks/{task_id}/events")
    stream.read()
    assert engine.hub.subscriber_count(task_id) == 1
    stream.close()
    assert engine.hub.subscriber_count(task_id) == 0


def test_a_head_request_or_unread_stream_leaks_nothing(client, engine):
    task_id = start(client, gate="never")
    head = client.head(f"/api/tasks/{task_id}/events")
    assert head.status_code == 200 and head.headers["Content-Type"].startswith("text/event-stream")
    head.close()
    rv = client.get(f"/api/tasks/{task_id}/events")
    rv.close()
    assert engine.hub.subscriber_count() == 0


def test_a_slow_reader_gets_merged_progress_and_every_log_and_done(client, engine, open_stream):
    task_id = start(client, gate="slow", steps=1)
    stream = open_stream(f"/api/tasks/{task_id}/events")
    stream.until_type("snapshot")
    burst = start(client, "t_burst", logs=5, progress=500)
    slow = open_stream(f"/api/tasks/{burst}/events")
    slow.read()  # subscribed, then reads nothing while the task runs
    wait_for(lambda: client.get(f"/api/tasks/{burst}").json["status"] == "succeeded")
    events = slow.until_end()
    types = [e.type for e in events]
    assert types.count("log") == 5 and types[-1] == "done" and "status" in types
    progress = [e.json["current"] for e in events if e.type == "progress"]
    assert progress[-1] == 500 and len(progress) < 500
    GATES["slow:1"].set()


def test_a_reader_owing_too_many_control_events_is_cut_and_resumes(make_app):
    app = make_app(TASKS_SUBSCRIBER_BACKLOG=5)
    client = app.test_client()
    task_id = start(client, gate="hold")
    from tests.conftest import TestStream
    stream = TestStream(client.get(f"/api/tasks/{task_id}/events"))
    stream.read()
    burst = start(client, "t_burst", logs=20, progress=0)
    cut = TestStream(client.get(f"/api/tasks/{burst}/events"))
    cut.read()
    wait_for(lambda: client.get(f"/api/tasks/{burst}").json["status"] == "succeeded")
    before = cut.until_end()  # ended early: it owed more than 5 events
    assert before[-1].type != "done"
    resumed = client.get(f"/api/tasks/{burst}/events",
                         headers={"Last-Event-ID": before[-1].id}).data.decode()
    assert "event: done" in resumed
    assert resumed.count("event: log") + sum(e.type == "log" for e in before) == 20
    stream.close()
    GATES["hold:1"].set()


def test_cancel_shows_on_the_stream_within_a_second(client, open_stream):
    task_id = start(client, gate="c")
    stream = open_stream(f"/api/tasks/{task_id}/events")
    stream.until(lambda events: any(e.type == "status" for e in events)
                 or events and events[0].json["status"] == "running")
    client.post(f"/api/tasks/{task_id}/cancel")
    events = stream.until_type("done", timeout=1)
    assert events[-1].json["status"] == "cancelled"
    assert [e.json["status"] for e in events if e.type == "status"][-1] == "cancelled"


def test_the_global_stream_starts_with_unfinished_tasks_and_carries_every_task(
        client, open_stream):
    waiting = start(client, gate="gw")
    stream = open_stream("/api/events")
    snapshot = stream.until_type("snapshot")[0].json
    assert [t["id"] for t in snapshot["tasks"]] == [waiting] and "ts" in snapshot
    other = start(client, "demo", steps=2, delay=0)
    events = stream.until(lambda evs: any(e.type == "done" and e.json["task_id"] == other
                                          for e in evs))
    mine = [e for e in events if e.json.get("task_id") == other]
    assert [e.type for e in mine][0] == "snapshot" and mine[-1].type == "done"
    assert ids(events) == sorted(set(ids(events)))
    resumed = open_stream("/api/events", headers={"Last-Event-ID": events[0].id})
    again = resumed.until(lambda evs: any(e.type == "done" for e in evs))
    assert [e.id for e in again] == [e.id for e in events[1:]][:len(again)]
    GATES["gw:1"].set()


def test_streams_of_unknown_tasks_are_404_json(client):
    rv = client.get("/api/tasks/unknown/events")
    assert rv.status_code == 404 and rv.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("readers", [50])
def test_many_readers_of_one_task_all_get_everything(client, open_stream, readers):
    task_id = start(client, "demo", steps=20, delay=0.001)
    streams = [open_stream(f"/api/tasks/{task_id}/events") for _ in range(readers)]
    jobs = [gevent.spawn(s.until_end, 10) for s in streams]
    gevent.joinall(jobs, timeout=15, raise_error=True)
    for stream in streams:
        assert stream.events[-1].type == "done"
        assert stream.events[-1].json["progress"]["current"] == 20
