#!/usr/bin/env python3
"""Taskstream benchmark driver (stdlib only).

Starts the server pinned to one CPU, runs our load generator (bench/sseload,
built from bench/loadgen) pinned to the other, restarts the server before every
run, samples the server's CPU and RSS every 0.25 s, prints Markdown tables and
writes JSON.

  .venv/bin/python bench/run.py                       # everything (~8 min)
  .venv/bin/python bench/run.py --quick               # smoke run (~2 min)
  .venv/bin/python bench/run.py --only S1,S3
  .venv/bin/python bench/run.py --env TASKS_FAST_PATH=0 --name portable
  .venv/bin/python bench/run.py --cmd 'node peer_node.js {port}' --cwd ../peers --name node
  .venv/bin/python bench/run.py --report bench/results.json bench/results-portable.json   # side by side

Scenarios (bench/README.md says what each figure means):
  S1 fan-out   1 task -> N readers (100, 1000, 5000); `rate` (delay 0.05 s) and `fast` (delay 0);
               GET /healthz is timed on the side during the `fast` runs
  S2 many      K tasks x 1 reader: K = 100, 1000 at delay 0.1 s; K = 100 at delay 0
  S3 idle      1000, 5000, 10000 streams on a silent task, held 30 s: RSS per stream, idle CPU
  S4 starts    POST /api/tasks from 16 keep-alive connections for 5 s
  S5 slow      100 readers of one task, 10 of them read 2 KB/s from a 4 KB receive buffer
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SSELOAD = os.path.join(BENCH, "sseload")
LOADGEN = os.path.join(BENCH, "loadgen")
RSS_CAP_KB = 8 * 1024 * 1024  # a run whose server passes 8 GiB is stopped
# no queue or creation-rate limits (S2 starts 1,000 tasks, S4 as many as it can); a short grace on stop
DEFAULT_ENV = {"TASKS_MAX_RUNNING": "20000", "TASKS_MAX_QUEUED": "1000000", "TASKS_CREATE_RATE": "0",
               "TASKS_GRACEFUL_TIMEOUT": "3"}


def log(*a: object) -> None:
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes
_started: list["Proc"] = []  # every process group we started and have not stopped


class Proc:
    """A command in its own process group (stopped by that group's id only),
    pinned to `cpu`, with the open files limit raised to the hard limit."""

    def __init__(self, argv: list[str], cpu: int | None, cwd: str | None = None,
                 env: dict[str, str] | None = None, stdout=None, stderr=None, logpath: str | None = None):
        pin = f"taskset -c {cpu} " if cpu is not None else ""
        script = f"ulimit -n $(ulimit -Hn); exec {pin}{shlex.join(argv)}"
        self.logf = open(logpath, "ab") if logpath else None
        self.p = subprocess.Popen(["bash", "-c", script], cwd=cwd, env={**os.environ, **(env or {})},
                                  stdout=stdout if stdout is not None else (self.logf or subprocess.DEVNULL),
                                  stderr=stderr if stderr is not None else (self.logf or subprocess.DEVNULL),
                                  start_new_session=True, text=stdout is not None)
        self.pid = self.p.pid
        _started.append(self)

    def alive(self) -> bool:
        return self.p.poll() is None

    def stop(self, grace: float = 3.0) -> None:
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if self.p.poll() is not None:
                break
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.p.wait(wait)
            except subprocess.TimeoutExpired:
                pass
        try:  # what is left of our group (a gunicorn worker)
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.logf:
            self.logf.close()
            self.logf = None
        if self in _started:
            _started.remove(self)


def stop_everything() -> None:
    for p in list(_started):
        p.stop(grace=1.0)


def _on_term(signum, frame):  # SIGTERM/SIGHUP: clean up like Ctrl-C
    raise KeyboardInterrupt


# ------------------------------------------------------------------ /proc
def tree_pids(root: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def rss_kb(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def cpu_s(pids: list[int]) -> float:
    total, tck = 0.0, os.sysconf("SC_CLK_TCK")
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tck
        except (OSError, IndexError, ValueError):
            pass
    return total


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    return (v[0] + v[1] + v[2] + v[5] + v[6]) / os.sysconf("SC_CLK_TCK")


def wait_machine_idle(limit: float) -> float | None:
    """Wait (up to `limit` s) until the machine is idle: < 10% of a core busy over 0.5 s."""
    t = time.time()
    while time.time() - t < limit:
        b0 = machine_busy_s()
        time.sleep(0.5)
        if machine_busy_s() - b0 < 0.05:
            return round(time.time() - t, 1)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ HTTP
class Api:
    def __init__(self, port: int):
        self.port = port
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: object = None, timeout: float = 30):
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
                data = json.dumps(body).encode() if body is not None else None
                self.conn.request(method, path, body=data,
                                  headers={"Content-Type": "application/json"} if data else {})
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                try:
                    return r.status, json.loads(raw) if raw else None
                except ValueError:
                    return r.status, raw[:200]
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def start(self, steps: int, delay: float) -> str:
        status, rec = self.request("POST", "/api/tasks", {"name": "demo", "params": {"steps": steps, "delay": delay}})
        if status != 202:
            raise RuntimeError(f"POST /api/tasks -> {status} {rec}")
        return rec["id"]

    def cancel(self, tid: str) -> None:
        try:
            self.request("POST", f"/api/tasks/{tid}/cancel", timeout=10)
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        if self.conn:
            self.conn.close()
        self.conn = None


class Server:
    """The server under test; a fresh process (and a fresh SQLite file) for every run."""

    def __init__(self, name: str, argv: list[str], cwd: str, env: dict[str, str], port: int, cpu: int | None,
                 workdir: str):
        self.name, self.argv, self.cwd, self.env, self.port, self.cpu = name, argv, cwd, env, port, cpu
        self.workdir = workdir
        self.proc: Proc | None = None
        self.api = Api(port)
        self.runs = 0

    def start(self) -> None:
        self.runs += 1
        env = {"TASKS_DB": os.path.join(self.workdir, f"tasks-{self.runs}.sqlite3"), **self.env}
        argv = [a.replace("{port}", str(self.port)) for a in self.argv]
        self.proc = Proc(argv, self.cpu, cwd=self.cwd, env=env, logpath=os.path.join(self.workdir, "server.log"))
        deadline = time.time() + 30
        while time.time() < deadline:  # any HTTP answer to /healthz: a peer may not have it
            if not self.proc.alive():
                raise RuntimeError(f"server exited with {self.proc.p.returncode}; log: {self.workdir}/server.log")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/healthz")
                c.getresponse().read()
                c.close()
                time.sleep(0.2)
                return
            except (OSError, http.client.HTTPException):
                time.sleep(0.1)
        raise RuntimeError(f"server did not answer on port {self.port} in 30 s; log: {self.workdir}/server.log")

    def stop(self) -> None:
        self.api.close()
        if self.proc:
            self.proc.stop()
            self.proc = None
            for suffix in ("", "-wal", "-shm"):  # the run's records are not needed afterwards
                try:
                    os.remove(os.path.join(self.workdir, f"tasks-{self.runs}.sqlite3{suffix}"))
                except OSError:
                    pass
        deadline = time.time() + 10  # the port must be free for the next start
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                time.sleep(0.1)
            except OSError:
                break

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid) if self.proc else []

    def wait_quiet(self, limit: float = 15.0) -> float | None:
        """Until the server uses < 5% CPU over 0.5 s (tasks cancelled, buffers drained)."""
        t = time.time()
        while time.time() - t < limit:
            pids = self.pids()
            a = cpu_s(pids)
            time.sleep(0.5)
            if cpu_s(pids) - a < 0.025:
                return round(time.time() - t, 1)
        return None


class Sampler(threading.Thread):
    """Server tree RSS and CPU every 0.25 s; stops the load when RSS passes the cap."""

    def __init__(self, server: Server):
        super().__init__(daemon=True)
        self.server = server
        self.halt = threading.Event()
        self.samples: list[tuple[float, int, float]] = []
        self.capped = False
        self.victim: Proc | None = None

    def run(self) -> None:
        t0 = time.time()
        while not self.halt.wait(0.25):
            pids = self.server.pids()
            r = rss_kb(pids)
            self.samples.append((round(time.time() - t0, 2), r, round(cpu_s(pids), 2)))
            if r > RSS_CAP_KB and not self.capped:
                self.capped = True
                log(f"  !! server RSS {r // 1024} MiB over the cap: stopping this run")
                if self.victim:
                    self.victim.stop(grace=0)


class HealthProbe(threading.Thread):
    """GET /healthz on a fresh connection every 50 ms, timed (5 s timeout)."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.halt = threading.Event()
        self.ms: list[float] = []
        self.failed = 0

    def run(self) -> None:
        while not self.halt.wait(0.05):
            t = time.perf_counter()
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/healthz")
                ok = c.getresponse().status == 200
                c.close()
            except (OSError, http.client.HTTPException):
                ok = False
            if ok:
                self.ms.append((time.perf_counter() - t) * 1e3)
            else:
                self.failed += 1

    def summary(self) -> dict:
        v = sorted(self.ms)
        pct = lambda p: round(v[min(len(v) - 1, max(0, int(len(v) * p / 100 + 0.999) - 1))], 2) if v else None
        return {"probes": len(v) + self.failed, "failed": self.failed, "p50_ms": pct(50), "p90_ms": pct(90),
                "p99_ms": pct(99), "max_ms": round(v[-1], 2) if v else None}


class Canceller:
    """Cancels tasks `after` s past the end of the ramp (or `latest` s after the
    client started, if the ramp has not ended by then), from its own thread."""

    def __init__(self, port: int, ids: list[str], after: float, latest: float):
        self.port, self.ids, self.after, self.latest = port, ids, after, latest
        self.stop_ev = threading.Event()
        self.ramp_ev = threading.Event()
        self.t_start = 0.0
        self.cancelled_at: float | None = None
        self.th = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.t_start = time.time()
        self.th.start()

    def on_ramp(self, line: str) -> None:
        self.ramp_ev.set()

    def _run(self) -> None:
        if self.ramp_ev.wait(self.latest):
            if self.stop_ev.wait(self.after):
                return
        if self.stop_ev.is_set():
            return
        api = Api(self.port)
        for tid in self.ids:
            api.cancel(tid)
        api.close()
        self.cancelled_at = time.time() - self.t_start

    def halt(self) -> None:
        self.stop_ev.set()
        self.ramp_ev.set()
        self.th.join(30)


# ------------------------------------------------------------------ one run
class Bench:
    def __init__(self, server: Server, client_cpu: int | None, quick: bool):
        self.server, self.client_cpu, self.quick = server, client_cpu, quick

    def client(self, args: list[str], timeout: float, on_ramp=None, on_start=None,
               sampler: Sampler | None = None) -> dict:
        """Run sseload (pinned) and return its JSON report; killed after `timeout` s."""
        p = Proc([SSELOAD, *args], self.client_cpu, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if on_start:
            on_start()
        if sampler:
            sampler.victim = p
        out: list[str] = []
        errs: list[str] = []

        def read_err():
            for line in p.p.stderr:
                errs.append(line.rstrip())
                if line.startswith("#ramp_done") and on_ramp:
                    on_ramp(line)

        threads = [threading.Thread(target=read_err, daemon=True),
                   threading.Thread(target=lambda: out.append(p.p.stdout.read()), daemon=True)]
        for th in threads:
            th.start()
        try:
            p.p.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"  !! load generator still running after {timeout:.0f} s: stopped")
        p.stop(grace=1)
        for th in threads:
            th.join(5)
        for line in errs:
            if line.startswith("#end") or line.startswith("#warning"):
                log("   ", line)
        try:
            return json.loads(out[0] if out else "")
        except ValueError:
            return {"error": "no report from sseload", "stderr": errs[-5:]}

    def measured(self, fn) -> tuple[object, dict]:
        """fn(sampler) with the server's CPU and RSS sampled; returns (fn's result, server figures)."""
        pids = self.server.pids()
        rss0, cpu0, t0 = rss_kb(pids), cpu_s(pids), time.time()
        busy0, own0 = machine_busy_s(), sum(os.times()[:4])
        sampler = Sampler(self.server)
        sampler.start()
        try:
            res = fn(sampler)
        finally:
            sampler.halt.set()
            sampler.join()
        pids = self.server.pids()
        cpu1, t1 = cpu_s(pids), time.time()
        busy1, own1 = machine_busy_s(), sum(os.times()[:4])
        wall = max(t1 - t0, 1e-9)
        ours = (cpu1 - cpu0) + (own1 - own0)  # the server, the driver and its waited children (sseload)
        return res, {
            "rss_before_mb": round(rss0 / 1024, 1),
            "rss_max_mb": round(max([s[1] for s in sampler.samples] + [rss0]) / 1024, 1),
            "server_cpu_pct": round(100 * (cpu1 - cpu0) / wall, 1), "wall_s": round(wall, 2),
            "other_cpu_pct": round(100 * ((busy1 - busy0) - ours) / wall, 1),
            "rss_capped": sampler.capped, "server_alive": bool(self.server.proc and self.server.proc.alive()),
            "samples": sampler.samples,
        }

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.port}{path}"

    # S1 ---------------------------------------------------------------
    def s1(self, n: int, mode: str) -> dict:
        win = 3 if self.quick else 6
        ramp = 2 + n / 1000  # time allowed for connecting
        if mode == "rate":
            delay = 0.05
            steps = int((ramp + win) / delay) + 20
            limit = steps * delay + ramp + 15  # readers end at `done`
        else:  # as fast as it goes, cancelled `win` s after the ramp: every reader should then get `done`
            delay, steps = 0.0, 1_000_000
            limit = ramp + win + (5 if self.quick else 10)
        tid = self.server.api.start(steps, delay)
        args = ["-c", str(n), "-d", str(limit), "-t", "30", self.url(f"/api/tasks/{tid}/events")]
        probe = HealthProbe(self.server.port) if mode == "fast" else None
        canceller = Canceller(self.server.port, [tid], win, ramp + win) if mode == "fast" else None
        if probe:
            probe.start()
        try:
            rep, m = self.measured(lambda s: self.client(args, limit + 30, sampler=s,
                                                         on_ramp=canceller.on_ramp if canceller else None,
                                                         on_start=canceller.start if canceller else None))
        finally:
            if probe:
                probe.halt.set()
                probe.join()
            if canceller:
                canceller.halt()
        self.server.api.cancel(tid)
        m["quiet_after_s"] = self.server.wait_quiet()
        r = {"scenario": "S1", "n": n, "mode": mode, "steps": steps, "delay": delay, "client": rep, "server": m}
        if probe:
            r["healthz"] = probe.summary()
        return r

    # S2 ---------------------------------------------------------------
    def s2(self, k: int, mode: str) -> dict:
        win = 3 if self.quick else 6
        if mode == "rate":
            delay = 0.1
            steps = int((win + 4 + k / 500) / delay)
            limit = steps * delay + 15
        else:  # cancelled `win` s after the ramp, as in S1
            delay, steps = 0.0, 1_000_000
            limit = 4 + k / 500 + win + (5 if self.quick else 10)
        t = time.time()
        ids = [self.server.api.start(steps, delay) for _ in range(k)]
        post_s = time.time() - t
        pathfile = os.path.join(self.server.workdir, "paths.txt")
        with open(pathfile, "w") as f:
            f.write("".join(f"/api/tasks/{i}/events\n" for i in ids))
        args = ["-c", str(k), "-P", pathfile, "-d", str(limit), "-t", "30", self.url("/")]
        canceller = Canceller(self.server.port, ids, win, 4 + k / 500 + win) if mode == "fast" else None
        try:
            rep, m = self.measured(lambda s: self.client(args, limit + 30, sampler=s,
                                                         on_ramp=canceller.on_ramp if canceller else None,
                                                         on_start=canceller.start if canceller else None))
        finally:
            if canceller:
                canceller.halt()
        for i in ids:
            self.server.api.cancel(i)
        m["quiet_after_s"] = self.server.wait_quiet()
        return {"scenario": "S2", "k": k, "mode": mode, "steps": steps, "delay": delay, "post_s": round(post_s, 2),
                "client": rep, "server": m}

    # S3 ---------------------------------------------------------------
    def s3(self, c: int) -> dict:
        hold = 10 if self.quick else 30
        tid = self.server.api.start(2, 60.0)  # a snapshot, then nothing for 60 s
        self.server.api.close()  # our own keep-alive connection would count as a stream's memory
        time.sleep(0.5)
        rss0 = rss_kb(self.server.pids())
        marks: dict[str, float] = {}

        def on_ramp(line: str) -> None:
            marks["ramp"] = time.time()

            def later():  # idle CPU from 1 s after the ramp to 3 s before the end; RSS at the end of it
                time.sleep(1)
                marks["cpu_a"], marks["t_a"] = cpu_s(self.server.pids()), time.time()
                time.sleep(max(hold - 4, 1))
                pids = self.server.pids()
                marks["cpu_b"], marks["t_b"], marks["rss_hold"] = cpu_s(pids), time.time(), rss_kb(pids)

            threading.Thread(target=later, daemon=True).start()

        args = ["-c", str(c), "-i", str(hold), "-d", str(hold + 60), "-t", "30", self.url(f"/api/tasks/{tid}/events")]
        rep, m = self.measured(lambda s: self.client(args, hold + 90, on_ramp=on_ramp, sampler=s))
        self.server.api.cancel(tid)
        opened, rss1 = rep.get("open_at_end") or 0, marks.get("rss_hold")
        m.update({
            "rss_idle_before_mb": round(rss0 / 1024, 1),
            "rss_hold_mb": round(rss1 / 1024, 1) if rss1 else None,
            "rss_per_stream_kb": round((rss1 - rss0) / opened, 1) if opened and rss1 else None,
            "idle_cpu_pct": round(100 * (marks["cpu_b"] - marks["cpu_a"]) / (marks["t_b"] - marks["t_a"]), 2)
            if "t_b" in marks else None,
        })
        return {"scenario": "S3", "c": c, "hold_s": hold, "client": rep, "server": m}

    # S4 ---------------------------------------------------------------
    def s4(self) -> dict:
        dur, conns = (3 if self.quick else 5), 16
        body = json.dumps({"name": "demo", "params": {"steps": 1, "delay": 0}})
        args = ["-p", "-c", str(conns), "-d", str(dur), "-B", body, "-q", self.url("/api/tasks")]
        rep, m = self.measured(lambda s: self.client(args, dur + 30, sampler=s))
        m["quiet_after_s"] = self.server.wait_quiet(30)
        return {"scenario": "S4", "connections": conns, "duration_s": dur, "client": rep, "server": m}

    # S5 ---------------------------------------------------------------
    def s5(self, mode: str) -> dict:
        n, slow, bps = 100, 10, 2000
        if mode == "fast":  # as the shared bench: a task at delay 0 for a fixed time
            steps, delay = 1_000_000, 0.0
            limit = 6 if self.quick else 10
        else:  # `finish`: a task that ends; do the slow readers end at 100% and `done`, and how fresh?
            steps, delay = (600 if self.quick else 2000), 0.005
            limit = steps * delay + (10 if self.quick else 20)
        tid = self.server.api.start(steps, delay)
        args = ["-c", str(n), "-S", f"{slow}:{bps}", "-d", str(limit), "-t", "30", "-q",
                self.url(f"/api/tasks/{tid}/events")]
        rep, m = self.measured(lambda s: self.client(args, limit + 30, sampler=s))
        self.server.api.cancel(tid)
        m["quiet_after_s"] = self.server.wait_quiet()
        return {"scenario": "S5", "mode": mode, "n": n, "slow": slow, "slow_bps": bps, "steps": steps,
                "delay": delay, "client": rep, "server": m}


def plan(quick: bool, only: list[str]) -> list[tuple[str, dict]]:
    runs: list[tuple[str, dict]] = []
    if "S1" in only:
        for n in ([100, 1000] if quick else [100, 1000, 5000]):
            for mode in ("rate", "fast"):
                runs.append(("S1", {"n": n, "mode": mode}))
    if "S2" in only:
        for k in ([100] if quick else [100, 1000]):
            runs.append(("S2", {"k": k, "mode": "rate"}))
        runs.append(("S2", {"k": 100, "mode": "fast"}))
    if "S3" in only:
        for c in ([1000] if quick else [1000, 5000, 10000]):
            runs.append(("S3", {"c": c}))
    if "S4" in only:
        runs.append(("S4", {}))
    if "S5" in only:
        runs.append(("S5", {"mode": "fast"}))
        runs.append(("S5", {"mode": "finish"}))
    return runs


# ------------------------------------------------------------------ tables
def f(v, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def lat(d: dict | None, nd: int = 1) -> str:
    d = d or {}
    return " / ".join(f(d.get(k), nd) for k in ("p50", "p90", "p99")) + " / " + f(d.get("max"), 0)


def notes(r: dict) -> str:
    out = []
    s, c = r.get("server", {}), r.get("client", {})
    if r.get("error"):
        out.append(f"error: {r['error']}")
    if c.get("error"):
        out.append(c["error"])
    if s.get("other_cpu_pct") is not None and s["other_cpu_pct"] > 15:
        out.append(f"other work on the machine: {s['other_cpu_pct']:.0f}% of a core")
    if s.get("rss_capped"):
        out.append("stopped: RSS cap")
    if s and not s.get("server_alive", True):
        out.append("server died")
    if c.get("window", {}).get("ramp_complete") is False:
        out.append(f"only {c.get('established')}/{c.get('connections')} connected within {c.get('duration_s'):.0f} s")
    if c.get("closed_early"):
        out.append(f"{c['closed_early']} streams ended before `done`")
    if c.get("id_violations"):
        out.append(f"{c['id_violations']} id violations")
    if c.get("progress_not_newer"):
        out.append(f"{c['progress_not_newer']} progress events not newer than the stream had")
    return "; ".join(out)


def tables(results: dict) -> str:
    out = []
    rows = [(name, r) for name, sv in results["servers"].items() for r in sv["runs"]]

    def section(title: str, head: list[str], scen: str, fn) -> None:
        sel = [(n, r) for n, r in rows if r.get("scenario") == scen]
        if not sel:
            return
        out.append(f"### {title}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for n, r in sel:
            if "client" not in r:
                out.append(f"| {n} | " + " | ".join(["-"] * (len(head) - 2)) + f" | {notes(r)} |")
            else:
                out.append("| " + " | ".join([n] + fn(r) + [notes(r)]) + " |")
        out.append("")

    def fanout(r: dict) -> list[str]:
        c, s = r["client"], r["server"]
        w, pc = c.get("window", {}), c.get("per_conn", {})
        dagger = "" if w.get("ramp_complete", True) else " †"
        want = r.get("n") or r.get("k")
        return [f(want), r["mode"], f"{f(c.get('established'))}/{f(want)}", f"{f(c.get('got_done'))}",
                f(w.get("events_per_s"), 0) + dagger, f(w.get("task_steps_per_s"), 0) + dagger,
                lat(c.get("latency_ms")), f(pc.get("received_over_emitted"), 3), f(s.get("server_cpu_pct"), 0),
                f(s.get("rss_max_mb"), 0)]

    head = ["delivered ev/s", "task steps/s", "latency p50 / p90 / p99 / max ms", "progress recv/emitted",
            "server CPU %", "RSS max MB", "notes"]
    section("S1 fan-out: 1 task, N readers", ["server", "N", "mode", "connected", "got done"] + head, "S1", fanout)
    section("S2 many tasks: K tasks, 1 reader each", ["server", "K", "mode", "connected", "got done"] + head, "S2", fanout)

    def idle(r: dict) -> list[str]:
        c, s = r["client"], r["server"]
        ramp = c.get("ramp_s") or 0
        rate = f" ({c.get('established', 0) / ramp:,.0f}/s)" if ramp > 0 else ""
        return [f(r["c"]), f(c.get("established")), f(c.get("open_at_end")), f(ramp, 2) + rate,
                f"{f(s.get('rss_idle_before_mb'), 0)} → {f(s.get('rss_hold_mb'), 0)}", f(s.get("rss_per_stream_kb")),
                f(s.get("idle_cpu_pct"), 2)]

    section("S3 idle streams held (30 s; 10 s with --quick)",
            ["server", "C", "connected", "open at the end", "ramp s (streams/s)", "RSS before → held MB",
             "KB per stream", "CPU % while idle", "notes"], "S3", idle)

    def starts(r: dict) -> list[str]:
        c, s = r["client"], r["server"]
        lm = c.get("latency_ms", {})
        return [f(c.get("ok_202_per_s"), 0), f(lm.get("p50"), 2), f(lm.get("p90"), 2), f(lm.get("p99"), 2),
                f(c.get("non_2xx")), f(c.get("errors")), f(s.get("server_cpu_pct"), 0)]

    section("S4 task starts (POST /api/tasks, 16 keep-alive connections)",
            ["server", "202/s", "p50 ms", "p90 ms", "p99 ms", "non-2xx", "errors", "server CPU %", "notes"], "S4",
            starts)

    def slow(r: dict) -> list[str]:
        c, s = r["client"], r["server"]
        ps, fr, lm = c.get("per_conn_slow", {}), c.get("freshness_slow_ms", {}), c.get("latency_ms", {})
        sec = lambda v: f(v / 1e3 if v is not None else None, 2)
        return [r["mode"], f(c.get("window", {}).get("task_steps_per_s"), 0),
                f"{f(lm.get('p50'), 1)} / {f(lm.get('p99'), 1)}",
                f"{f(c.get('per_conn', {}).get('got_done'))}/{r['n'] - r['slow']}",
                f(ps.get("progress_mean"), 0), f"{f(ps.get('got_done'))}/{r['slow']}",
                f"{f(ps.get('last_current_min'))} of {f(r['steps'])}",
                f"{sec(fr.get('p50'))} / {sec(fr.get('p99'))} / {sec(fr.get('max'))}",
                f"{f(s.get('rss_before_mb'), 0)} → {f(s.get('rss_max_mb'), 0)}"]

    section("S5 slow readers: 100 readers of one task, 10 read 2 KB/s (4 KB receive buffer)",
            ["server", "mode", "task steps/s", "other readers latency p50 / p99 ms", "others got done",
             "slow: progress events got", "slow: got done", "slow: lowest last current",
             "slow: freshness p50 / p99 / max s", "RSS before → max MB", "notes"], "S5", slow)

    hz = [(n, r) for n, r in rows if r.get("healthz")]
    if hz:
        out.append("### GET /healthz while S1 `fast` runs (a probe every 50 ms, fresh connection)\n")
        out.append("| server | during | probes | p50 ms | p90 ms | p99 ms | max ms | failed |")
        out.append("|---|---|---|---|---|---|---|---|")
        for n, r in hz:
            h = r["healthz"]
            out.append(f"| {n} | S1 N={r['n']:,} fast | {h['probes']} | {f(h['p50_ms'], 2)} | {f(h['p90_ms'], 2)} | "
                       f"{f(h['p99_ms'], 2)} | {f(h['max_ms'], 1)} | {h['failed']} |")
        out.append("")
    return "\n".join(out)


def report(paths: list[str]) -> str:
    """The tables of several result files (e.g. the fast path, the portable path), one row per server."""
    merged: dict = {"servers": {}}
    for path in paths:
        with open(path) as fh:
            res = json.load(fh)
        for name, sv in res["servers"].items():
            key = name if name not in merged["servers"] else f"{name} ({os.path.basename(path)})"
            merged["servers"][key] = sv
    return tables(merged)


def row_line(name: str, r: dict) -> str:
    """One line per run on stderr while running."""
    c, s = r.get("client", {}), r.get("server", {})
    if "error" in r and not c:
        return f"{name} {r['scenario']}: ERROR {r['error']}"
    if r["scenario"] in ("S1", "S2", "S5"):
        w = c.get("window", {})
        return (f"est {c.get('established')} done {c.get('got_done')} | {f(w.get('events_per_s'), 0)} ev/s, task "
                f"{f(w.get('task_steps_per_s'), 0)} st/s | lat {lat(c.get('latency_ms'), 2)} ms | cpu "
                f"{s.get('server_cpu_pct')}% rss {s.get('rss_max_mb')} MB"
                + (f" | healthz p99 {r['healthz']['p99_ms']} ms" if r.get("healthz") else ""))
    if r["scenario"] == "S3":
        return (f"open {c.get('open_at_end')}/{r['c']} | {s.get('rss_per_stream_kb')} KB/stream | idle cpu "
                f"{s.get('idle_cpu_pct')}%")
    return f"{f(c.get('ok_202_per_s'), 0)} starts/s, p99 {c.get('latency_ms', {}).get('p99')} ms, cpu {s.get('server_cpu_pct')}%"


def machine() -> dict:
    m: dict = {"nproc": os.cpu_count(), "python": sys.version.split()[0], "kernel": os.uname().release}
    try:
        with open("/proc/cpuinfo") as fh:
            m["cpu"] = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
        with open("/proc/meminfo") as fh:
            m["mem_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return m


def build_loadgen() -> None:
    src = os.path.join(LOADGEN, "sseload.c")
    if not os.path.exists(SSELOAD) or os.path.getmtime(SSELOAD) < os.path.getmtime(src):
        subprocess.run(["make", "-s", "-C", LOADGEN], check=True, timeout=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter runs (a smoke test, ~2 min)")
    ap.add_argument("--only", default="S1,S2,S3,S4,S5", help="scenarios, e.g. S1,S3")
    ap.add_argument("--cmd", help="server command to benchmark instead of ours; {port} is replaced")
    ap.add_argument("--cwd", default=ROOT, help="directory the server command runs in (default: the repo)")
    ap.add_argument("--name", help="name of the server in the tables (default: taskstream, or custom with --cmd)")
    ap.add_argument("--env", action="append", default=[], metavar="K=V", help="server environment (repeatable)")
    ap.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--idle-wait", type=float, default=None,
                    help="wait up to this many s before each run for the machine to be idle (default 20; 3 with --quick)")
    ap.add_argument("--out", default=os.path.join(BENCH, "results.json"), help="JSON results (default bench/results.json)")
    ap.add_argument("--report", nargs="+", metavar="JSON",
                    help="run nothing: print the tables of these result files, their servers side by side")
    a = ap.parse_args()
    if a.report:
        print(report(a.report))
        return 0

    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGHUP, _on_term)
    ncpu = os.cpu_count() or 1
    server_cpu: int | None = a.server_cpu
    client_cpu: int | None = a.client_cpu
    if ncpu < 2 or shutil.which("taskset") is None:
        log("!! fewer than 2 CPUs or no taskset: server and load generator are not pinned apart")
        server_cpu = client_cpu = None
    else:
        os.sched_setaffinity(0, {client_cpu})  # the driver and its probes stay off the server's CPU
    build_loadgen()

    if a.cmd:
        argv, name = shlex.split(a.cmd), a.name or "custom"
    else:
        gunicorn = os.path.join(ROOT, ".venv", "bin", "gunicorn")
        if not os.path.exists(gunicorn):
            gunicorn = shutil.which("gunicorn") or gunicorn
        argv, name = [gunicorn, "-c", "gunicorn.conf.py", "server:app", "-b", "127.0.0.1:{port}"], a.name or "taskstream"
    env = dict(DEFAULT_ENV)
    for kv in a.env:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--env wants K=V, got {kv!r}")
        env[k] = v
    only = [s.strip().upper() for s in a.only.split(",") if s.strip()]
    idle_wait = a.idle_wait if a.idle_wait is not None else (3 if a.quick else 20)
    workdir = tempfile.mkdtemp(prefix="taskstream-bench-")
    server = Server(name, argv, os.path.abspath(a.cwd), env, a.port or free_port(), server_cpu, workdir)
    bench = Bench(server, client_cpu, a.quick)
    results: dict = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": a.quick,
                     "server_cpu": server_cpu, "client_cpu": client_cpu,
                     "servers": {name: {"cmd": shlex.join(argv), "cwd": os.path.abspath(a.cwd), "env": env,
                                        "runs": []}}}
    runs = results["servers"][name]["runs"]
    log(f"server {name}: {shlex.join(argv)} (port {server.port}, logs and databases in {workdir})")
    t_all = time.time()
    try:
        for scen, params in plan(a.quick, only):
            label = f"{scen} " + " ".join(f"{k}={v}" for k, v in params.items())
            log(f"-- {name} {label}")
            t = time.time()
            waited = wait_machine_idle(idle_wait)
            try:
                server.start()
                r = getattr(bench, scen.lower())(**params)
            except KeyboardInterrupt:
                raise
            except Exception as e:  # a server that falls over is a result, not a crash of the driver
                r = {"scenario": scen, **params, "error": f"{type(e).__name__}: {e}"}
            finally:
                server.stop()
            r["run_s"] = round(time.time() - t, 1)
            r["waited_for_idle_s"] = waited
            log("   " + row_line(name, r))
            runs.append(r)
            with open(a.out, "w") as fh:  # after every run: an interrupted bench keeps what it measured
                json.dump(results, fh, indent=1)
    except KeyboardInterrupt:
        log("interrupted: stopping what was started")
        return_code = 130
    else:
        return_code = 0
    finally:
        server.stop()
        stop_everything()
    results["total_s"] = round(time.time() - t_all, 1)
    with open(a.out, "w") as fh:
        json.dump(results, fh, indent=1)
    print(f"## {name}: {time.strftime('%Y-%m-%d')}, {results['machine'].get('cpu', '?')}, "
          f"{results['machine']['nproc']} CPUs; server on CPU {server_cpu}, load generator on CPU {client_cpu}"
          + (" (quick smoke run)" if a.quick else "") + "\n")
    print(tables(results))
    log(f"results: {a.out} ({results['total_s']:.0f} s)")
    return return_code


if __name__ == "__main__":
    sys.exit(main())
