"""``tasks doctor`` against our own gunicorn (all clear) and through test
proxies that buffer, compress or time out idle streams (each named, with its
fix)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.doctor import FAIL, OK, Finding, run_checks
from tests.live.proxy import Proxy
from tests.live.server import ROOT

pytestmark = pytest.mark.live

FLASK = str(Path(sys.executable).with_name("flask"))


def doctor_cli(url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKS_")}
    env["TASKS_DB"] = str(tmp_path / "cli.sqlite3")
    return subprocess.run([FLASK, "--app", "server", "tasks", "doctor", url, *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def test_our_server_passes(live, tmp_path):
    result = doctor_cli(live.url, tmp_path, "--idle", "2.5", "--resumes", "4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no problems found" in result.stdout
    for check in ("headers", "compression", "latency", "idle", "resume", "end"):
        assert f"ok    {check}" in result.stdout, result.stdout


def test_a_buffering_proxy_is_named_with_the_fix(live, tmp_path):
    with Proxy(live.url, "buffer") as proxy:
        result = doctor_cli(proxy.url, tmp_path, "--idle", "1", "--resumes", "2")
    assert result.returncode == 1, result.stdout
    assert "FAIL  buffering    events arrive in lumps" in result.stdout
    assert "proxy_buffering off;" in result.stdout and "flush_interval -1" in result.stdout
    assert "X-Accel-Buffering: no is missing" in result.stdout


def test_a_gzip_proxy_is_named(live, tmp_path):
    with Proxy(live.url, "gzip") as proxy:
        result = doctor_cli(proxy.url, tmp_path, "--idle", "1", "--resumes", "2", "--json")
    assert result.returncode == 1, result.stdout
    findings = {f["check"]: f for f in json.loads(result.stdout)["findings"]}
    assert findings["compression"]["level"] == FAIL
    assert "Content-Encoding: gzip" in findings["compression"]["summary"]
    assert "gzip off" in findings["compression"]["nginx"]
    assert "text/event-stream" in findings["compression"]["caddy"]
    assert findings["resume"]["level"] == OK, findings["resume"]["summary"]


def test_a_proxy_idle_timeout_shorter_than_the_heartbeat_is_named(make_live):
    server = make_live({"TASKS_HEARTBEAT": "10"})
    with Proxy(server.url, "pass", idle_timeout=1.5) as proxy:
        findings = by_check(run_checks(proxy.url, idle=4, resumes=1, seed=2))
    assert findings["idle"].level == FAIL, findings["idle"].summary
    assert "proxy_read_timeout" in findings["idle"].nginx
    assert findings["latency"].level == OK


def test_resume_through_a_cutting_proxy_stays_exact(live):
    """Connections that break by themselves, on top of the doctor's own drops."""
    with Proxy(live.url, "cut", cut_after=300, cuts=3) as proxy:
        findings = by_check(run_checks(proxy.url, idle=1, resumes=3, seed=3))
    assert findings["resume"].level == OK, findings["resume"].summary
