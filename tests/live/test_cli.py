"""``flask --app server tasks ...`` run as a user runs it: a subprocess against
a real gunicorn, piped (plain lines), with ``--json``, and in a terminal
(tmux) where the bar must move."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.live.server import ROOT, LiveServer

pytestmark = pytest.mark.live

FLASK = str(Path(sys.executable).with_name("flask"))


@pytest.fixture
def cli_env(tmp_path) -> dict[str, str]:
    """The CLI's own app must not share (and mark interrupted) the server's
    records: it gets its own TASKS_DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKS_")}
    return {**env, "TASKS_DB": str(tmp_path / "cli.sqlite3"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def cli(live: LiveServer, cli_env) -> Callable[..., subprocess.CompletedProcess[str]]:
    def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([FLASK, "--app", "server", "tasks", *args], cwd=ROOT,
                              env={**cli_env, "TASKS_URL": live.url, **(env or {})},
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    return run


def popen_cli(live: LiveServer, cli_env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([FLASK, "--app", "server", "tasks", *args], cwd=ROOT,
                            env={**cli_env, "TASKS_URL": live.url}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)


def wait_for(predicate: Callable[[], Any], timeout: float = 15, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def running_task(live: LiveServer) -> dict[str, Any] | None:
    tasks = live.request("GET", "/api/tasks?status=running")[2]["tasks"]
    return tasks[0] if tasks else None


def test_run_prints_a_final_100_percent_line_and_exits_0(cli):
    result = cli("run", "demo", "--param", "steps=5", "--param", "delay=0.02")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    progress = [line for line in lines if "%" in line]
    assert progress and "100.0% 5/5 step 5" in progress[-1], result.stdout
    assert lines[-1] == 'succeeded: {"steps": 5}'
    assert "started demo task" in result.stderr


def test_a_failing_task_exits_1_with_its_error(cli):
    result = cli("run", "demo", "-p", "steps=5", "-p", "delay=0", "-p", "fail_at=2")
    assert result.returncode == 1
    assert "failed: RuntimeError: failed at step 2" in result.stderr


def test_json_prints_one_parsable_event_per_line(cli):
    result = cli("run", "demo", "-p", "steps=3", "-p", "delay=0.01", "--json")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["event"] == "snapshot" and events[-1]["event"] == "done"
    assert events[-1]["data"]["result"] == {"steps": 3}
    assert [e["id"] for e in events] == sorted({e["id"] for e in events})
    assert [e["data"]["current"] for e in events if e["event"] == "progress"][-1] == 3


def test_a_task_cancelled_elsewhere_exits_non_zero(live, cli_env):
    process = popen_cli(live, cli_env, "run", "demo", "-p", "steps=200", "-p", "delay=0.05")
    try:
        task = wait_for(lambda: running_task(live), what="the task to run")
        assert live.request("POST", f"/api/tasks/{task['id']}/cancel")[0] == 202
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130
    assert f"task {task['id']} cancelled" in err


def test_ctrl_c_with_cancel_on_interrupt_cancels_the_task(live, cli_env):
    process = popen_cli(live, cli_env, "run", "demo", "-p", "steps=200", "-p", "delay=0.05",
                        "--cancel-on-interrupt")
    try:
        task = wait_for(lambda: running_task(live), what="the task to run")
        time.sleep(0.3)  # let the CLI be reading the stream
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert live.request("GET", f"/api/tasks/{task['id']}")[2]["status"] == "cancelled"


def test_ctrl_c_without_a_terminal_leaves_the_task_running(live, cli_env):
    process = popen_cli(live, cli_env, "run", "demo", "-p", "steps=100", "-p", "delay=0.05")
    try:
        task = wait_for(lambda: running_task(live), what="the task to run")
        time.sleep(0.3)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130
    assert "still running" in err and f"tasks watch {task['id']}" in err
    assert live.request("GET", f"/api/tasks/{task['id']}")[2]["status"] == "running"
    live.request("POST", f"/api/tasks/{task['id']}/cancel")


def test_watch_list_and_cancel(live, cli):
    record = live.start_task(steps=3, delay=0.02)
    watched = cli("watch", record["id"])
    assert watched.returncode == 0 and "100.0% 3/3" in watched.stdout
    listed = cli("list", "--limit", "5")
    assert record["id"] in listed.stdout and "succeeded" in listed.stdout
    assert json.loads(cli("list", "--json").stdout.splitlines()[0])["id"] == record["id"]
    again = cli("cancel", record["id"])
    assert again.returncode == 1 and "already finished" in again.stderr
    long = live.start_task(steps=100, delay=0.05)
    cancelled = cli("cancel", long["id"])
    assert cancelled.returncode == 0 and long["id"] in cancelled.stdout


def test_params_are_typed_by_the_schema_and_bad_ones_named(cli):
    result = cli("run", "demo", "-p", "steps=2", "-p", "delay=0", "-p", "fail_at=null",
                 "-p", "message=tick", "--json")
    assert result.returncode == 0, result.stderr
    params = json.loads(result.stdout.splitlines()[0])["data"]["params"]
    assert params == {"steps": 2, "delay": 0, "fail_at": None, "message": "tick"}
    bad = cli("run", "demo", "-p", "steps=many")
    assert bad.returncode == 2 and "steps='many': expected an integer" in bad.stderr
    unknown = cli("run", "demo", "-p", "stepz=1")
    assert unknown.returncode == 2 and "demo takes steps, delay" in unknown.stderr
    server_says = cli("run", "demo", "-p", "steps=0")
    assert server_says.returncode == 4 and "params.steps" in server_says.stderr


def test_types_lists_parameters(cli):
    result = cli("types")
    assert result.returncode == 0
    assert "steps  integer 1..1000000 (default 20)" in result.stdout


def test_local_runs_without_a_server(cli_env):
    result = subprocess.run([FLASK, "--app", "server", "tasks", "run", "demo", "--local",
                             "-p", "steps=4", "-p", "delay=0.01"], cwd=ROOT, env=cli_env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "100.0% 4/4 step 4" in result.stdout
    assert "marked" not in result.stderr  # no records left unfinished by the last run


def test_token_comes_from_the_environment(make_live, cli_env):
    server = make_live({"TASKS_HEARTBEAT": "1", "TASKS_API_TOKEN": "tok"})
    base = [FLASK, "--app", "server", "tasks", "list", "--url", server.url]
    denied = subprocess.run(base, cwd=ROOT, env=cli_env, capture_output=True, text=True,
                            timeout=60)
    assert denied.returncode == 4 and "401" in denied.stderr
    allowed = subprocess.run(base, cwd=ROOT, env={**cli_env, "TASKS_API_TOKEN": "tok"},
                             capture_output=True, text=True, timeout=60)
    assert allowed.returncode == 0, allowed.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")
def test_the_bar_moves_in_a_terminal(live, cli_env):
    """In tmux the CLI sees a terminal: it draws a rich bar and redraws it in
    place as progress arrives, then leaves the 100% bar and the outcome."""
    socket_name = f"taskstream-{uuid.uuid4().hex[:8]}"
    tmux = ["tmux", "-L", socket_name]
    env_words = " ".join(f"{k}={v}" for k, v in (("TASKS_DB", cli_env["TASKS_DB"]),
                                                 ("TASKS_URL", live.url)))
    command = (f"cd {ROOT} && env {env_words} {FLASK} --app server tasks run demo "
               f"-p steps=40 -p delay=0.1; echo EXIT=$?; sleep 60")
    subprocess.run([*tmux, "new-session", "-d", "-x", "120", "-y", "20", "-s", "cli", command],
                   check=True, timeout=10)
    try:
        seen: list[float] = []
        deadline = time.monotonic() + 30
        screen = ""
        while time.monotonic() < deadline and "EXIT=" not in screen:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", "cli"],
                                    capture_output=True, text=True, timeout=10).stdout
            bars = re.findall(r"━.*?(\d+\.\d)% \d+/40", screen)
            if bars and (not seen or float(bars[-1]) != seen[-1]):
                seen.append(float(bars[-1]))
            time.sleep(0.2)
    finally:
        subprocess.run([*tmux, "kill-server"], timeout=10)
    assert "EXIT=0" in screen, screen
    assert len(seen) >= 4 and seen == sorted(seen) and seen[-1] == 100.0, seen
    assert len(re.findall(r"\d+\.\d% \d+/40", screen)) == 1, "redrawn in place, not repeated"
    assert "ETA" in screen and "/s" in screen and "step 40" in screen


def test_ctrl_c_in_a_local_run_cancels_the_task_quietly(cli_env):
    process = subprocess.Popen([FLASK, "--app", "server", "tasks", "run", "demo", "--local",
                                "-p", "steps=200", "-p", "delay=0.05"], cwd=ROOT, env=cli_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL, text=True)
    try:
        first = process.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("demo"), first
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert "cancelling task" in err and "cancelled" in err
    assert "KeyboardInterrupt" not in err and "Traceback" not in err
    assert out.rstrip().endswith("demo cancelled")
