"""Hardening against a real gunicorn: the event-loop watchdog, SIGTERM with
100 open streams, HUP and max_requests recycling, the stream cap over
sockets, and a short soak (bench/soak.py).

The watchdog test needs a task type the stock server lacks, so its server is
``gunicorn 'tests.live.test_hardening:live_app()'``: importing this module in
the worker registers ``t_block_loop``.
"""
from __future__ import annotations

import importlib.util
import io
import signal
import sys
import time
from pathlib import Path

import pytest
from gevent import monkey

from tasks import TaskContext, task
from tests.live.server import ROOT, LiveServer, StreamReader, sigterm_while_reading

pytestmark = pytest.mark.live

#: time.sleep as it was before gevent patched it: it blocks the whole loop.
_blocking_sleep = monkey.get_original("time", "sleep")


@task
def t_block_loop(ctx: TaskContext, *, seconds: float = 1.0) -> str:
    """Blocks the event loop (an unpatched time.sleep), as careless task code does."""
    _blocking_sleep(seconds)
    return "woke"


def live_app():
    """The server app, with this module's task types registered (gunicorn
    imports this module to call it)."""
    from server import app
    return app


def events_path(record):
    return f"/api/tasks/{record['id']}/events"


def health(server):
    return server.request("GET", "/healthz")[2]


def wait_until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def worker_pid(server):
    path = next(Path(f"/proc/{server.process.pid}/task").glob("*/children"))
    return int(wait_until(lambda: path.read_text().split(), 10, "a worker")[0])


def test_the_watchdog_names_the_task_that_blocks_the_loop(tmp_path):
    server = LiveServer(tmp_path, {"TASKS_BLOCK_REPORT": "0.2"},
                       app_uri="tests.live.test_hardening:live_app()").start()
    try:
        record = server.start_task("t_block_loop", seconds=1.0)
        line = wait_until(lambda: next((line for line in server.log.splitlines()
                                        if "event loop blocked" in line), None), 10,
                          "the watchdog's line")
        assert "[WARNING]" in line
        assert f"task={record['id']} name=t_block_loop" in line, line
        assert "test_hardening.py" in line and "t_block_loop" in line, line
        wait_until(lambda: server.request("GET", f"/api/tasks/{record['id']}")[2]["status"]
                   == "succeeded", 10, "the task to end")
        assert f"task={record['id']} name=t_block_loop status=succeeded" in server.log
    finally:
        server.stop()


def test_a_block_report_of_zero_turns_the_watchdog_off(tmp_path):
    server = LiveServer(tmp_path, {"TASKS_BLOCK_REPORT": "0"},
                       app_uri="tests.live.test_hardening:live_app()").start()
    try:
        record = server.start_task("t_block_loop", seconds=0.6)
        wait_until(lambda: server.request("GET", f"/api/tasks/{record['id']}")[2]["status"]
                   == "succeeded", 10, "the task to end")
    finally:
        server.stop()
    assert "event loop blocked" not in server.log


def test_sigterm_with_100_streams_and_running_tasks_ends_in_time_and_loses_no_record(make_live,
                                                                                      tmp_path):
    # Tasks get TASKS_GRACEFUL_TIMEOUT - 3 s to finish (gunicorn.conf.py): 5 s here.
    live = make_live({"TASKS_GRACEFUL_TIMEOUT": "8", "TASKS_HEARTBEAT": "1"})
    short = [live.start_task(steps=20, delay=0.15) for _ in range(4)]   # end within the grace
    long = [live.start_task(steps=1000, delay=0.1) for _ in range(4)]   # interrupted
    queued = [live.start_task(steps=5, delay=0.1) for _ in range(2)]    # past TASKS_MAX_RUNNING=8
    records = short + long + queued
    streams = [StreamReader(live.url, events_path(r)) for r in records for _ in range(9)]
    streams += [StreamReader(live.url, "/api/events") for _ in range(10)]
    assert len(streams) == 100
    for stream in streams:
        stream.until(lambda evs: bool(evs))
    assert health(live)["subscribers"] == 100
    sigterm_while_reading(live, streams, grace=8)
    for stream in streams:
        stream.close()
    for stream in streams[:90]:
        assert stream.events[-1].type == "done", stream.summary()
    again = LiveServer(tmp_path, port=live.port).start()
    try:
        final = {r["id"]: again.request("GET", f"/api/tasks/{r['id']}")[2]["status"]
                 for r in records}
    finally:
        again.stop()
    assert set(final.values()) <= {"succeeded", "interrupted"}, final
    assert all(final[r["id"]] == "succeeded" for r in short), final
    assert all(final[r["id"]] == "interrupted" for r in long + queued), final
    for index, stream in enumerate(streams[:90]):
        assert stream.events[-1].json["status"] == final[records[index // 9]["id"]]


def test_the_stream_cap_answers_503_over_a_socket_and_frees_on_disconnect(make_live):
    live = make_live({"TASKS_MAX_STREAMS": "3", "TASKS_HEARTBEAT": "0.5"})
    held = [StreamReader(live.url, "/api/events") for _ in range(3)]
    try:
        with StreamReader(live.url, "/api/events") as refused:
            assert refused.status == 503 and refused.headers["retry-after"]
        held.pop().close()
        wait_until(lambda: health(live)["subscribers"] == 2, 5, "the closed stream to go")
        with StreamReader(live.url, "/api/events") as admitted:
            assert admitted.status == 200
    finally:
        for stream in held:
            stream.close()
    status, headers, text = live.request("GET", "/metrics")
    assert status == 200 and "taskstream_refused_total" in text


def test_hup_and_max_requests_recycle_workers_that_finish_their_tasks(tmp_path):
    """HUP (and --reload, which restarts workers the same way) and max_requests
    retire a worker gracefully: its shutdown hook lets a short task end and
    its streams get their last retry:, and a new worker serves."""
    live = LiveServer(tmp_path, {"TASKS_GRACEFUL_TIMEOUT": "5"},
                      args=["--max-requests", "40"]).start()
    try:
        first = worker_pid(live)
        record = live.start_task(steps=10, delay=0.1)
        with StreamReader(live.url, events_path(record)) as stream:
            stream.until(lambda evs: bool(evs))
            live.process.send_signal(signal.SIGHUP)  # the master only: workers die of HUP
            events = stream.until_end(timeout=10)
        assert events[-1].type == "done" and events[-1].json["status"] == "succeeded"
        second = wait_until(lambda: (pid := worker_pid(live)) != first and pid, 15,
                            "a new worker after HUP")
        wait_until(lambda: live.request("GET", "/healthz")[0] == 200, 10, "the new worker")
        for _ in range(45):  # past --max-requests: the worker retires and a new one starts
            live.request("GET", "/healthz")
        wait_until(lambda: (pid := worker_pid(live)) != second and pid, 15,
                   "a new worker after max_requests")
        assert live.request("GET", f"/api/tasks/{record['id']}")[2]["status"] == "succeeded"
        assert "Taskstream shut down in" in live.log
        assert "Traceback" not in live.log
    finally:
        live.stop()


def _soak_module():
    if "bench_soak" in sys.modules:
        return sys.modules["bench_soak"]
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "bench" / "soak.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_soak"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_short_soak_leaves_no_subscriber_and_no_fd_behind(make_live):
    """Clients connecting, reading and vanishing (clean closes and RSTs) for
    20 s: afterwards no subscriber is left and the worker's open fds are back
    at their idle baseline. Memory is reported (bench/README.md), not asserted."""
    soak = _soak_module()
    live = make_live({"TASKS_HEARTBEAT": "1"})
    figures = soak.run(live.url, worker_pid(live), seconds=20, clients=60, every=2,
                       out=io.StringIO())
    assert figures["streams"] > 200 and figures["reset"] > 20, figures
    assert figures["subscribers_end"] == 0, figures
    # +2: the SQLite store's checkpoint opens and closes a second connection,
    # and SQLite defers closing that fd while the first holds locks on the
    # file (reused by the next open: bounded, not a leak).
    assert figures["fds_idle_end"] <= figures["fds_idle_start"] + 2, figures


@pytest.mark.parametrize("how", ["SIGINT", "reload"])
def test_quick_shutdown_and_reload_still_end_tasks_interrupted_with_done(tmp_path, how):
    """SIGINT/SIGQUIT and ``--reload`` give no grace period (gunicorn exits the
    worker 0.1 s after its worker_int hook), yet the running task ends
    ``interrupted`` and its stream gets ``done``."""
    watched = tmp_path / "watched.py"
    watched.write_text("x = 1\n")
    args = ["--reload", "--reload-extra-file", str(watched)] if how == "reload" else []
    live = LiveServer(tmp_path, {"TASKS_HEARTBEAT": "1"}, args=args).start()
    try:
        record = live.start_task(steps=1000, delay=0.1)
        with StreamReader(live.url, events_path(record)) as stream:
            stream.until(lambda evs: any(e.type == "progress" for e in evs))
            if how == "reload":
                time.sleep(1.5)  # the reloader polls mtimes once a second
                watched.write_text("x = 2\n")
            else:
                live.process.send_signal(signal.SIGINT)
            events = stream.until_end(timeout=15)
        assert events[-1].type == "done", stream.summary()
        assert events[-1].json["status"] == "interrupted"
    finally:
        live.stop()
