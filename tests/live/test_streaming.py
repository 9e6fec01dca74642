"""Streams over real sockets against a real gunicorn gevent worker."""
import signal
import subprocess
import time

import gevent
import httpx
import pytest

from tests.live.server import (GUNICORN, ROOT, LiveServer, StreamReader, free_port,
                               sigterm_while_reading)

pytestmark = pytest.mark.live


def events_path(record):
    return f"/api/tasks/{record['id']}/events"


def health(live):
    return live.request("GET", "/healthz")[2]


def test_headers_framing_and_order_over_a_socket(live):
    record = live.start_task(steps=5, delay=0.02, message="a\nb\rc")
    with StreamReader(live.url, events_path(record)) as stream:
        assert stream.status == 200 and stream.chunked
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers["cache-control"] == "no-cache"
        assert stream.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in stream.headers
        assert stream.headers.get("connection", "").lower() != "keep-alive"
        events = stream.until_done()
        stream.until_end()
    assert stream.body.startswith(b"retry: ")
    assert [int(e.id) for e in events] == sorted({int(e.id) for e in events})
    assert [e.json["message"] for e in events if e.type == "progress"][-1] == "a\nb\rc 5"


def test_two_hundred_readers_of_one_task_all_get_done(live):
    record = live.start_task(steps=40, delay=0.05)
    readers = [StreamReader(live.url, events_path(record)) for _ in range(200)]
    try:
        jobs = [gevent.spawn(reader.until_end, 30) for reader in readers]
        gevent.joinall(jobs, timeout=40, raise_error=True)
        for reader in readers:
            assert reader.events[-1].type == "done"
            assert reader.events[-1].json["progress"]["current"] == 40
            assert reader.complete, "every response ends with its last chunk"
    finally:
        for reader in readers:
            reader.close()


def test_resume_over_the_wire_with_last_event_id(live):
    record = live.start_task(steps=30, delay=0.03)
    with StreamReader(live.url, events_path(record)) as first:
        seen = first.until(lambda evs: sum(e.type == "progress" for e in evs) >= 5)
    last = seen[-1]
    with StreamReader(live.url, events_path(record), {"Last-Event-ID": last.id}) as again:
        rest = again.until_done()
    assert rest[0].type != "snapshot" and int(rest[0].id) > int(last.id)
    assert rest[-1].json["status"] == "succeeded"
    progress = [e.json["current"] for e in seen + rest if e.type == "progress"]
    assert progress == sorted(progress) and progress[-1] == 30
    status, _, _ = live.request("GET", events_path(record),
                                headers={"Last-Event-ID": rest[-1].id})
    assert status == 204


def test_keep_alive_comments_flow_and_a_vanished_client_is_forgotten(live):
    record = live.start_task(steps=1, delay=30)
    stream = StreamReader(live.url, events_path(record))
    stream.until(lambda evs: evs and evs[0].type == "snapshot")
    deadline = time.monotonic() + 5
    while not stream.parser.comments:
        assert time.monotonic() < deadline, "no keep-alive within 5 s (heartbeat 1 s)"
        stream.read_some(1)
    assert health(live)["subscribers"] == 1
    direct = live.env["TASKS_FAST_PATH"] == "1"
    assert health(live)["direct_streams"] == (1 if direct else 0), "the path under test"
    assert health(live)["handed_off_streams"] == (1 if direct else 0), "no greenlet holds it"
    stream.close()
    deadline = time.monotonic() + 5
    while health(live)["subscribers"] or health(live)["handed_off_streams"]:
        assert time.monotonic() < deadline, "the server kept a vanished client's stream"
        time.sleep(0.2)
    live.request("POST", f"/api/tasks/{record['id']}/cancel")


def test_a_direct_stream_ends_its_connection_with_it(live):
    record = live.start_task(steps=3, delay=0.02)
    direct = live.env["TASKS_FAST_PATH"] == "1"
    with StreamReader(live.url, events_path(record)) as stream:
        assert stream.until_end()[-1].type == "done"
        assert stream.complete, "the response ends with its last chunk, then the connection"
        if direct:  # handed over: the connection cannot go back to gunicorn's request loop
            assert stream.headers.get("connection", "").lower() == "close"
            stream.sock.settimeout(3)
            assert stream.sock.recv(1) == b"", "the server should close its end"


def test_a_reader_that_takes_nothing_is_dropped_after_the_stall_timeout(make_live):
    live = make_live({"TASKS_STALL_TIMEOUT": "2", "TASKS_HEARTBEAT": "1"})
    record = live.start_task(steps=3000, delay=0, message="x" * 150)
    stalled = StreamReader(live.url, events_path(record), recv_buffer=4096)
    stalled.until(lambda evs: bool(evs))  # then reads nothing more
    deadline = time.monotonic() + 15
    while live.request("GET", f"/api/tasks/{record['id']}")[2]["status"] != "succeeded":
        assert time.monotonic() < deadline, "the stalled reader held the task up"
        time.sleep(0.2)
    deadline = time.monotonic() + 10
    while health(live)["handed_off_streams"] or health(live)["subscribers"]:
        assert time.monotonic() < deadline, "a reader that takes nothing was held for ever"
        time.sleep(0.2)
    stalled.close()


def wrapped_app():
    """The server app behind a middleware that takes ``start_response``, as
    compressing middleware does (gunicorn imports this module to call it)."""
    from server import app

    def add_header(environ, start_response):
        def start(status, headers, exc_info=None):
            return start_response(status, [*headers, ("X-Wrapped", "1")], exc_info)
        return app(environ, start)
    return add_header


def test_a_middleware_that_takes_start_response_gets_the_portable_path(make_live):
    live = make_live(app_uri="tests.live.test_streaming:wrapped_app()")
    record = live.start_task(steps=20, delay=0.05)
    with StreamReader(live.url, events_path(record)) as stream:
        stream.until(lambda evs: bool(evs))
        assert stream.headers["x-wrapped"] == "1"
        assert health(live)["handed_off_streams"] == 0
        assert health(live)["direct_streams"] == 0
        assert stream.until_done()[-1].json["status"] == "succeeded"


def test_a_stalled_reader_does_not_slow_the_task_or_others(live):
    record = live.start_task(steps=3000, delay=0, message="x" * 150)
    stalled = StreamReader(live.url, events_path(record), recv_buffer=4096)
    stalled.until(lambda evs: bool(evs))  # then reads nothing more
    with StreamReader(live.url, events_path(record)) as healthy:
        healthy.until_done(timeout=30)
    assert live.request("GET", f"/api/tasks/{record['id']}")[2]["status"] == "succeeded"
    stalled.close()
    deadline = time.monotonic() + 10
    while health(live)["subscribers"]:
        assert time.monotonic() < deadline, "the stalled reader's subscriber was never freed"
        time.sleep(0.2)


def test_cancel_and_failure_over_http(live):
    record = live.start_task(steps=100, delay=0.05)
    with StreamReader(live.url, events_path(record)) as stream:
        stream.until(lambda evs: any(e.type == "progress" for e in evs))
        started = time.monotonic()
        assert live.request("POST", f"/api/tasks/{record['id']}/cancel")[0] == 202
        events = stream.until_done(timeout=2)
        assert time.monotonic() - started < 1
    assert events[-1].json["status"] == "cancelled"
    failing = live.start_task(steps=5, delay=0.01, fail_at=3)
    with StreamReader(live.url, events_path(failing)) as stream:
        done = stream.until_done()[-1].json
    assert done["status"] == "failed"
    assert done["error"] == {"type": "RuntimeError", "message": "failed at step 3"}
    assert "Traceback" not in stream.body.decode() and "Traceback" in live.log


def test_kill_9_mid_task_then_restart_marks_it_interrupted(tmp_path):
    server = LiveServer(tmp_path).start()
    record = server.start_task(steps=100, delay=0.1)
    with StreamReader(server.url, events_path(record)) as stream:
        stream.until(lambda evs: any(e.type == "progress" for e in evs))
        last_id = stream.events[-1].id
    server.kill_worker()
    again = LiveServer(tmp_path, port=server.port).start()
    try:
        status, _, body = again.request("GET", f"/api/tasks/{record['id']}")
        assert status == 200 and body["status"] == "interrupted"
        with StreamReader(again.url, events_path(record), {"Last-Event-ID": last_id}) as stream:
            events = stream.until_end()
        assert stream.status == 200 and events, (stream.status, stream.body, last_id)
        assert events[-1].type == "done" and events[-1].json["status"] == "interrupted"
        assert int(events[-1].id) > int(last_id), "done after a crash still sorts after"
    finally:
        again.stop()


def test_sigterm_ends_streams_and_interrupts_tasks_within_the_grace_period(make_live):
    live = make_live({"TASKS_GRACEFUL_TIMEOUT": "5"})
    short = live.start_task(steps=10, delay=0.1)
    long = live.start_task(steps=1000, delay=0.1)
    streams = [StreamReader(live.url, events_path(long)) for _ in range(20)]
    streams += [StreamReader(live.url, events_path(short)) for _ in range(20)]
    streams += [StreamReader(live.url, "/api/events") for _ in range(10)]
    for stream in streams:
        stream.until(lambda evs: bool(evs))
    sigterm_while_reading(live, streams, grace=5)
    for stream in streams[:20]:
        assert stream.events[-1].type == "done"
        assert stream.events[-1].json["status"] == "interrupted"
    for stream in streams[20:40]:
        assert stream.events[-1].json["status"] == "succeeded"
    for stream in streams[40:]:
        assert stream.body.rstrip().split(b"\n")[-1].startswith(b"retry: ")
    for stream in streams:
        stream.close()


def test_sigterm_gives_running_tasks_their_grace_with_no_stream_open(make_live):
    """No request handler keeps gunicorn's worker waiting then: the worker
    must still wait for its tasks (gunicorn.conf.py, worker_exit)."""
    live = make_live({"TASKS_GRACEFUL_TIMEOUT": "6"})
    short = live.start_task(steps=10, delay=0.1)
    long = live.start_task(steps=1000, delay=0.1)
    live.signal(signal.SIGTERM)
    assert live.wait(10) == 0
    restarted = make_live()
    assert restarted.request("GET", f"/api/tasks/{short['id']}")[2]["status"] == "succeeded"
    assert restarted.request("GET", f"/api/tasks/{long['id']}")[2]["status"] == "interrupted"
    assert "marked" not in restarted.log, "the worker left a record unfinished"


def test_two_workers_on_the_memory_backend_are_refused(tmp_path):
    port = free_port()
    result = subprocess.run(
        [GUNICORN, "-c", "gunicorn.conf.py", "server:app", "-w", "2", "-b", f"127.0.0.1:{port}"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
        env={"PATH": "/usr/bin:/bin", "TASKS_DB": str(tmp_path / "db.sqlite3")})
    assert result.returncode != 0
    assert "TASKS_BACKEND=redis" in result.stdout + result.stderr


def test_sseclient_py_reads_the_stream(live):
    import sseclient
    record = live.start_task(steps=3, delay=0.01)
    with httpx.Client(timeout=10) as http, http.stream("GET", live.url + events_path(record)
                                                       ) as stream:
        client = sseclient.SSEClient(stream.iter_bytes())
        types = [event.event for event in client.events()]
    assert types[0] == "snapshot" and types[-1] == "done"


def test_httpx_sse_reads_the_stream(live):
    from httpx_sse import connect_sse
    record = live.start_task(steps=3, delay=0.01)
    with httpx.Client(timeout=10) as client:
        with connect_sse(client, "GET", live.url + events_path(record)) as source:
            # httpx-sse reports the data-less retry: block as an event of its own
            events = [e for e in source.iter_sse() if e.data]
    assert events[0].event == "snapshot" and events[-1].event == "done"
    assert events[-1].json()["result"] == {"steps": 3}
    assert all(int(e.id) for e in events)
