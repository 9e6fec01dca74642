"""The benchmark's own load generator (bench/loadgen) against a real server.

Builds ``bench/sseload``, runs its parser self-test (CR, LF, CRLF line ends,
input split anywhere, chunked framing), then points it at a live gunicorn
server: 20 readers of a short demo task on both stream paths, idle streams
held, slow readers, and the POST mode that S4 uses.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.live.server import LiveServer

ROOT = Path(__file__).resolve().parents[1]
SSELOAD = ROOT / "bench" / "sseload"


@pytest.fixture(scope="module")
def sseload() -> Path:
    if shutil.which("gcc") is None or shutil.which("make") is None:
        pytest.skip("gcc and make are needed to build bench/loadgen")
    subprocess.run(["make", "-s", "-C", str(ROOT / "bench" / "loadgen")], check=True, timeout=120)
    return SSELOAD


def load(sseload: Path, *args: str, timeout: float = 40) -> dict[str, Any]:
    done = subprocess.run([str(sseload), "-q", *args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_selftest_parses_every_line_ending_and_split(sseload: Path) -> None:
    done = subprocess.run([str(sseload), "--selftest"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"selftest": "ok", "failures": 0}


@pytest.mark.live
@pytest.mark.parametrize("fast_path", ["1", "0"], ids=["direct", "portable"])
def test_twenty_readers_all_get_done(sseload: Path, tmp_path: Path, fast_path: str) -> None:
    server = LiveServer(tmp_path, {"TASKS_FAST_PATH": fast_path}).start()
    try:
        task = server.start_task("demo", steps=40, delay=0.02)
        rep = load(sseload, "-c", "20", "-d", "20", f"{server.url}/api/tasks/{task['id']}/events")
    finally:
        server.stop()
    assert rep["stop_reason"] == "all_ended"
    assert (rep["established"], rep["failed"], rep["got_done"], rep["closed_early"]) == (20, 0, 20, 0)
    assert rep["retry_first"] == 20  # the body starts with retry:
    assert rep["id_violations"] == 0 and rep["id_unparsed"] == 0 and rep["chunk_errors"] == 0
    assert rep["current_went_back"] == 0
    assert rep["events"]["snapshot"] == 20 and rep["events"]["done"] == 20
    assert rep["events"]["progress"] > 0
    assert rep["max_current"] == 40
    per = rep["per_conn"]
    assert per["conns"] == 20 and per["got_done"] == 20 and per["last_current_min"] == 40
    # (not <= 1: a snapshot racing a progress event shows up as progress_not_newer, a server finding)
    assert per["received_over_emitted"] > 0 and rep["progress_not_newer"] >= 0
    for key in ("latency_ms", "latency_progress_ms", "latency_done_ms"):
        assert set(rep[key]) >= {"n", "p50", "p90", "p99", "max", "mean"}
    assert rep["latency_ms"]["n"] == rep["events_total"]
    assert rep["latency_ms"]["negative"] == 0 and 0 <= rep["latency_ms"]["p50"] < 5000
    assert set(rep["window"]) >= {"ramp_complete", "events_per_s", "task_steps_per_s"}
    assert rep["window"]["ramp_complete"] is True

    # the driver's table takes this report as it is
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
    assert spec and spec.loader
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    table = run.tables({"servers": {"ts": {"runs": [
        {"scenario": "S1", "n": 20, "mode": "rate", "client": rep,
         "server": {"server_cpu_pct": 1.0, "rss_max_mb": 80.0, "server_alive": True}}]}}})
    assert "| ts | 20 | rate | 20/20 | 20 |" in table


@pytest.mark.live
def test_hold_slow_readers_and_posts(sseload: Path, tmp_path: Path) -> None:
    server = LiveServer(tmp_path, {"TASKS_CREATE_RATE": "0"}).start()
    try:
        silent = server.start_task("demo", steps=2, delay=60)
        held = load(sseload, "-c", "10", "-i", "1", "-d", "15", f"{server.url}/api/tasks/{silent['id']}/events")
        server.request("POST", f"/api/tasks/{silent['id']}/cancel")

        short = server.start_task("demo", steps=15, delay=0.01)
        slow = load(sseload, "-c", "6", "-S", "2:4000", "-d", "20",
                    f"{server.url}/api/tasks/{short['id']}/events")

        posts = load(sseload, "-p", "-c", "2", "-d", "1", "-B",
                     json.dumps({"name": "demo", "params": {"steps": 1, "delay": 0}}), f"{server.url}/api/tasks")
    finally:
        server.stop()
    assert held["mode"] == "hold" and held["stop_reason"] == "hold_elapsed"
    assert held["established"] == 10 and held["open_at_end"] == 10 and held["events"] == {"snapshot": 10}

    assert slow["slow"] == {"conns": 2, "bytes_per_s": 4000}
    assert slow["per_conn_slow"]["conns"] == 2 and slow["per_conn"]["conns"] == 4
    assert slow["got_done"] == 6 and slow["per_conn_slow"]["last_current_min"] == 15
    assert slow["latency_slow_ms"]["n"] > 0 and slow["freshness_slow_ms"]["n"] > 0

    assert posts["mode"] == "post" and posts["errors"] == 0 and posts["non_2xx"] == 0
    assert posts["ok_202"] == posts["requests"] > 0 and posts["ok_202_per_s"] > 0
