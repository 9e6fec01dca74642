#!/usr/bin/env python3
"""Fan-out on the Redis backend beside the memory backend: delivered events
per second and latency, for one worker on memory, one worker on Redis and two
workers on Redis.

    .venv/bin/python bench/redis_fanout.py                  # all three, 100 and 500 readers
    .venv/bin/python bench/redis_fanout.py --readers 200 --json out.json

Readers are Python greenlets on plain sockets in this process (a C load
generator would measure the servers rather than the readers: bench/run.py).
Each run starts a fresh gunicorn (and one redis-server for the whole bench),
opens N streams on one `demo` task, and reads until `done`:

- `rate`: 300 steps, 10 ms apart: latency (now - the event's `ts`) of every
  progress event each reader gets, p50/p99/max.
- `fast`: steps with no delay, stopped (cancelled) after 8 s: delivered
  events/s over all readers and the task's own steps/s (progress merges at
  the emitter, so readers get fresh state rather than every step).

Only events emitted from 0.2 s after every reader has connected count (the
connection ramp's backlog is not the steady state).

Latencies include this process's own scheduling of N readers on a shared core.
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.live.server import LiveServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

_TS = re.compile(rb'"ts":([0-9.]+)')


class Reader:
    """One stream over a raw socket: undoes chunked framing, counts events,
    and times progress events against their ``ts``."""

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.events = 0
        self.latencies: list[float] = []
        self.first = self.last = 0.0
        self.done = False
        self.since = float("inf")  # count only events emitted after every reader is in
        self._raw = b""

    def read_head(self) -> None:
        while b"\r\n\r\n" not in self._raw:
            self._raw += self.sock.recv(65536)
        self._raw = self._raw.split(b"\r\n\r\n", 1)[1]

    def run(self) -> None:
        raw = self._raw
        body = b""
        while not self.done:
            # complete chunks -> body
            while True:
                end = raw.find(b"\r\n")
                if end < 0:
                    break
                size = int(raw[:end], 16)
                if len(raw) < end + 4 + size:
                    break
                if size == 0:
                    self.done = True
                    break
                body += raw[end + 2:end + 2 + size]
                raw = raw[end + 4 + size:]
            *complete, body = body.split(b"\n\n")
            now = time.time()
            for event in complete:
                if b"\nevent: " not in event:
                    continue
                if b"event: done" in event:
                    self.done = True
                found = _TS.search(event)
                if not found or float(found.group(1)) < self.since:
                    continue
                self.events += 1
                self.first = self.first or now
                self.last = now
                if b"event: progress" in event:
                    self.latencies.append(now - float(found.group(1)))
            if self.done:
                break
            data = self.sock.recv(262144)
            if not data:
                break
            raw += data
        self.sock.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def run_once(server: LiveServer, readers: int, *, steps: int, delay: float,
             run_for: float) -> dict[str, Any]:
    status, _, record = server.request("POST", "/api/tasks", {
        "name": "demo", "params": {"steps": steps, "delay": delay}})
    assert status == 202, record
    path = f"/api/tasks/{record['id']}/events"
    group = [Reader(server.port, path) for _ in range(readers)]
    gevent.joinall([gevent.spawn(r.read_head) for r in group], timeout=30, raise_error=True)
    since = time.time() + 0.2  # the connection ramp's backlog is not the steady state
    for reader in group:
        reader.since = since
    started = time.time()
    jobs = [gevent.spawn(r.run) for r in group]
    gevent.joinall(jobs, timeout=run_for)
    if not all(r.done for r in group):  # a task too slow to finish in time: stop it
        server.request("POST", f"/api/tasks/{record['id']}/cancel")
        gevent.joinall(jobs, timeout=30)
    finished = [r for r in group if r.done]
    task = server.request("GET", f"/api/tasks/{record['id']}")[2]
    events = sum(r.events for r in group)
    span = max(r.last for r in group) - min((r.first for r in group if r.first), default=0)
    latencies = [x * 1000 for r in group for x in r.latencies]
    for job in jobs:
        job.kill()
    return {
        "readers": readers, "got_done": len(finished), "events": events,
        "events_per_s": round(events / span) if span > 0 else None,
        "task_seconds": round(time.time() - started, 2),
        "task_steps_per_s": round(task["progress"]["current"] / max(1e-9, _duration(task))),
        "task_status": task["status"],
        "latency_ms": {"p50": round(percentile(latencies, 50), 1),
                       "p99": round(percentile(latencies, 99), 1),
                       "max": round(max(latencies, default=float("nan")), 1)},
    }


def _duration(record: dict[str, Any]) -> float:
    from datetime import datetime
    parse = lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()  # noqa: E731
    return parse(record["finished_at"]) - parse(record["started_at"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="redis-fanout-"))
    redis = RedisServer(folder).start()
    setups = [("memory, 1 worker", {"TASKS_BACKEND": "memory"}, []),
              ("redis, 1 worker", {"TASKS_BACKEND": "redis"}, []),
              ("redis, 2 workers", {"TASKS_BACKEND": "redis"}, ["-w", "2"])]
    results = []
    try:
        for name, env, extra in setups:
            env = {**env, "TASKS_REDIS_URL": redis.url, "TASKS_REDIS_PREFIX": f"bench{len(results)}",
                   "TASKS_MAX_STREAMS_PER_CLIENT": "0", "TASKS_CREATE_RATE": "0",
                   "TASKS_DB": str(folder / f"{len(results)}.sqlite3")}
            for readers in args.readers:
                for mode, steps, delay in (("rate", 300, 0.01), ("fast", 1_000_000, 0.0)):
                    server = LiveServer(folder, env, args=extra).start()
                    try:
                        result = run_once(server, readers, steps=steps, delay=delay, run_for=8)
                    finally:
                        server.stop()
                    result.update(setup=name, mode=mode)
                    results.append(result)
                    print(json.dumps(result), file=sys.stderr, flush=True)
    finally:
        redis.stop()
    print("| setup | readers | mode | delivered events/s | task steps/s | latency p50 / p99 / max ms | got done |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        lat = r["latency_ms"]
        print(f"| {r['setup']} | {r['readers']} | {r['mode']} | {r['events_per_s']:,} | "
              f"{r['task_steps_per_s']:,} | {lat['p50']} / {lat['p99']} / {lat['max']} | "
              f"{r['got_done']}/{r['readers']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
