"""Soak: minutes of clients that connect, read a little and vanish, while
tasks start and end, sampling the worker's memory and open files.

    .venv/bin/python bench/soak.py                  # starts gunicorn, 3 minutes
    .venv/bin/python bench/soak.py --minutes 10 --clients 400
    .venv/bin/python bench/soak.py --url http://127.0.0.1:8000 --pid 12345

Each client loops: maybe start a task (sometimes cancelling one), open a
stream (a recent task's, or /api/events), read for a moment, then go: a
clean close, an RST (SO_LINGER 0: the server learns on its next write), or
reading to the task's end. Every few seconds a row shows the worker's RSS,
open fds, subscribers and tasks. The verdict compares the last third of the
samples with the first third after warm-up: "flat" or "growing" (PITFALLS 3,
12). At the end it waits for every subscriber to go, and reports the fds
against the baseline taken after warm-up.
"""
from __future__ import annotations

if __name__ == "__main__":  # patch before anything imports socket or threading
    from gevent import monkey

    monkey.patch_all()

import argparse
import json
import os
import random
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Sample:
    t: float
    rss_kib: int
    fds: int
    subscribers: int
    running: int
    queued: int


@dataclass
class Counts:
    tasks: int = 0
    refused: int = 0
    streams: int = 0
    clean: int = 0
    reset: int = 0
    to_end: int = 0
    cancels: int = 0
    errors: int = 0
    recent: list[str] = field(default_factory=list)


# -- the worker ----------------------------------------------------------------------

def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's only child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for path in Path(f"/proc/{master}/task").glob("*/children"):
            children = path.read_text().split()
            if children:
                return int(children[0])
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn {master} has no worker")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request(url: str, method: str = "GET", body: Any = None, timeout: float = 10
            ) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, None


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str, Path]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    folder = Path(tempfile.mkdtemp(prefix="soak-"))
    log_path = folder / "gunicorn.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py",
             "server:app", "-b", f"127.0.0.1:{port}"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "TASKS_DB": str(folder / "tasks.sqlite3"),
                 "TASKS_HEARTBEAT": "1", "TASKS_GRACEFUL_TIMEOUT": "5",
                 # Finished tasks' events stay held this long (API.md's minimum):
                 # the soak reaches its steady state after it.
                 "TASKS_RETENTION": "60", **env})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if request(url + "/healthz", timeout=1)[0] == 200:
                return process, url, log_path
        except OSError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"gunicorn did not start:\n{log_path.read_text()}")


# -- the clients ---------------------------------------------------------------------

def _open_stream(url: str, path: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n"
                 .encode())
    return sock


def _read_for(sock: socket.socket, seconds: float, *, until_end: bool = False) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(min(left, 1.0))
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        if not data or (until_end and data.endswith(b"0\r\n\r\n")):
            return


def client(url: str, deadline: float, counts: Counts, task_rate: float) -> None:
    rng = random.Random()
    while time.monotonic() < deadline:
        try:
            if rng.random() < task_rate:
                status, record = request(url + "/api/tasks", "POST", {
                    "name": "demo", "params": {"steps": rng.randint(5, 60),
                                               "delay": rng.choice([0.01, 0.05, 0.1])}})
                if status == 202:
                    counts.tasks += 1
                    counts.recent = (counts.recent + [record["id"]])[-50:]
                else:
                    counts.refused += 1
            if counts.recent and rng.random() < 0.03:
                request(url + f"/api/tasks/{rng.choice(counts.recent)}/cancel", "POST")
                counts.cancels += 1
            path = ("/api/events" if not counts.recent or rng.random() < 0.2
                    else f"/api/tasks/{rng.choice(counts.recent)}/events")
            sock = _open_stream(url, path)
            counts.streams += 1
            how = rng.random()
            try:
                if how < 0.2 and path != "/api/events":
                    _read_for(sock, 15, until_end=True)
                    counts.to_end += 1
                else:
                    _read_for(sock, rng.uniform(0.05, 2.0))
                    if how < 0.6:
                        counts.clean += 1
                    else:  # vanish with an RST, as a phone losing its network does
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                        struct.pack("ii", 1, 0))
                        counts.reset += 1
            finally:
                sock.close()
        except OSError:
            counts.errors += 1
            gevent.sleep(0.5)
        gevent.sleep(rng.uniform(0, 0.2))


# -- sampling and the verdict ------------------------------------------------------------

def idle_baseline(url: str, pid: int) -> int:
    """The worker's open fds when idle, after one task and one stream have
    run (the first ones open the SQLite WAL and the threadpool's wake-up fd)."""
    status, record = request(url + "/api/tasks", "POST",
                             {"name": "demo", "params": {"steps": 1, "delay": 0}})
    if status == 202:
        sock = _open_stream(url, f"/api/tasks/{record['id']}/events")
        _read_for(sock, 5, until_end=True)
        sock.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, health = request(url + "/healthz")
        if health and not health["subscribers"] and not health["running"]:
            break
        gevent.sleep(0.2)
    return open_fds(pid)


def sample(url: str, pid: int, started: float) -> Sample:
    _, health = request(url + "/healthz")
    health = health or {}
    return Sample(round(time.monotonic() - started, 1), rss_kib(pid), open_fds(pid),
                  health.get("subscribers", -1), health.get("running", -1),
                  health.get("queued", -1))


def verdict(samples: list[Sample], *, warm_up: float) -> dict[str, Any]:
    """Compare the last third of the samples after warm-up with the first third."""
    steady = [s for s in samples if s.t >= warm_up] or samples
    third = max(1, len(steady) // 3)
    first, last = steady[:third], steady[-third:]
    rss_first = statistics.mean(s.rss_kib for s in first)
    rss_last = statistics.mean(s.rss_kib for s in last)
    fds_first = statistics.mean(s.fds for s in first)
    fds_last = statistics.mean(s.fds for s in last)
    growth = rss_last - rss_first
    # Allocator noise and caches: a few MiB or 5 %, whichever is more, is flat.
    growing = growth > max(4096, 0.05 * rss_first)
    return {"rss_first_kib": round(rss_first), "rss_last_kib": round(rss_last),
            "rss_growth_kib": round(growth), "fds_first": round(fds_first, 1),
            "fds_last": round(fds_last, 1), "verdict": "growing" if growing else "flat"}


def run(url: str, pid: int, *, seconds: float, clients: int, every: float,
        task_rate: float = 0.08, warm_up: float | None = None,
        out: Any = sys.stdout) -> dict[str, Any]:
    """Soak ``url`` (worker ``pid``) for ``seconds``; returns the figures."""
    warm_up = min(seconds / 2, 90) if warm_up is None else warm_up
    counts = Counts()
    started = time.monotonic()
    deadline = started + seconds
    samples: list[Sample] = []
    baseline_fds = idle_baseline(url, pid)
    print(f"{'t (s)':>7} {'RSS MiB':>8} {'fds':>6} {'subs':>6} {'running':>8} {'queued':>7}",
          file=out)

    def take() -> None:
        s = sample(url, pid, started)
        samples.append(s)
        print(f"{s.t:>7} {s.rss_kib / 1024:>8.1f} {s.fds:>6} {s.subscribers:>6} "
              f"{s.running:>8} {s.queued:>7}", file=out, flush=True)

    take()
    workers = [gevent.spawn(client, url, deadline, counts, task_rate) for _ in range(clients)]
    while time.monotonic() < deadline:
        gevent.sleep(min(every, max(0.0, deadline - time.monotonic())))
        take()
    gevent.joinall(workers, timeout=30)
    gevent.killall([w for w in workers if not w.dead], timeout=5)
    # Vanished readers are noticed on the next keep-alive write: wait for them.
    settle = time.monotonic() + 30
    while time.monotonic() < settle:
        end = sample(url, pid, started)
        if end.subscribers == 0 and end.running == 0 and end.queued == 0:
            break
        gevent.sleep(0.5)
    idle = sample(url, pid, started)
    figures = {**verdict(samples, warm_up=warm_up), "seconds": seconds, "clients": clients,
               "tasks_started": counts.tasks, "tasks_refused": counts.refused,
               "streams": counts.streams, "closed_cleanly": counts.clean,
               "reset": counts.reset, "read_to_end": counts.to_end, "cancels": counts.cancels,
               "client_errors": counts.errors, "fds_idle_start": baseline_fds, "fds_idle_end": idle.fds,
               "rss_start_kib": samples[0].rss_kib, "rss_idle_end_kib": idle.rss_kib,
               "subscribers_end": idle.subscribers, "running_end": idle.running}
    print(json.dumps(figures, indent=2), file=out)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start gunicorn)")
    parser.add_argument("--pid", type=int, help="its worker's pid (with --url)")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, help="overrides --minutes")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--warm-up", type=float,
                        help="seconds left out of the verdict (default: half the run, at most "
                             "90; finished tasks stay held TASKS_RETENTION seconds, so memory "
                             "climbs until then)")
    parser.add_argument("--task-rate", type=float, default=0.08,
                        help="chance per client round of starting a task")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    process = None
    if args.url:
        if args.pid is None:
            parser.error("--url needs --pid (the worker's, to read its memory and fds)")
        url, pid = args.url.rstrip("/"), args.pid
    else:
        process, url, log_path = start_server({})
        pid = worker_pid(process.pid)
        print(f"gunicorn on {url}, worker {pid}, log {log_path}")
    try:
        figures = run(url, pid, seconds=seconds, clients=args.clients, every=args.every,
                      task_rate=args.task_rate, warm_up=args.warm_up)
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
    print(f"verdict: memory {figures['verdict']} "
          f"({figures['rss_growth_kib'] / 1024:+.1f} MiB last third vs first), "
          f"fds {figures['fds_idle_start']} idle at the start -> {figures['fds_idle_end']} idle "
          f"at the end, subscribers at the end {figures['subscribers_end']}")
    return 0 if figures["verdict"] == "flat" and figures["subscribers_end"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
