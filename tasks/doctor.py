"""``flask tasks doctor URL``: check a deployment's event streams from outside.

Users' most common complaint is progress that arrives in one lump behind a
proxy (PITFALLS 1). The doctor starts small ``demo`` probe tasks through the
given URL, as a browser would reach it, and measures what the proxies in
between do: compression, buffering, a missing ``X-Accel-Buffering``, idle
time-outs, and resumes that lose or repeat events. Each finding carries the
fix for nginx and Caddy. It needs only httpx, no gevent.
"""
from __future__ import annotations

import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import click
import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

from .client import TaskClient, TaskEvent, parse_event

OK, WARN, FAIL = "ok", "warn", "FAIL"

NGINX_STREAM = ("location /api/ {\n    proxy_pass http://taskstream;\n"
                "    proxy_http_version 1.1;\n    proxy_set_header Connection \"\";\n"
                "    proxy_buffering off;\n    proxy_cache off;\n    gzip off;\n"
                "    proxy_read_timeout 1h;\n}")
CADDY_STREAM = ("reverse_proxy 127.0.0.1:8000 {\n    flush_interval -1\n}")
CADDY_ENCODE = ("encode {\n    match {\n        header Content-Type text/html*\n"
                "        header Content-Type application/json*\n    }\n}\n"
                "# list what to compress; leave text/event-stream out")


@dataclass
class Finding:
    """One check's verdict, with the fixes when it is not ``ok``."""
    check: str
    level: str
    summary: str
    nginx: str = ""
    caddy: str = ""


@dataclass
class Arrival:
    """Something read from a stream, and when (``time.time()``) it was read."""
    at: float
    read: int                       # which network read brought it
    event: TaskEvent | None = None
    comment: str | None = None


@dataclass
class Reading:
    """A stream as read: status, headers, what arrived, and how it ended."""
    status: int
    headers: dict[str, str]
    arrivals: list[Arrival] = field(default_factory=list)
    ended: str = "done"             # "done", "closed" (before done), "timeout", "dropped"
    lasted: float = 0.0

    @property
    def events(self) -> list[TaskEvent]:
        return [a.event for a in self.arrivals if a.event is not None]


def read_stream(http: httpx.Client, path: str, *, last_id: int | None = None,
                timeout: float = 30, byte_budget: int | None = None) -> Reading:
    """Read a task's stream to ``done`` (or its end, or ``timeout`` of silence);
    with ``byte_budget`` drop the connection after that many body bytes."""
    headers = {"Accept": "text/event-stream", "Accept-Encoding": "gzip, deflate"}
    if last_id is not None:
        headers["Last-Event-ID"] = str(last_id)
    started = time.monotonic()
    with http.stream("GET", path, headers=headers,
                     timeout=httpx.Timeout(10, read=timeout)) as response:
        reading = Reading(response.status_code, {k.lower(): v for k, v in
                                                 response.headers.items()})
        if response.status_code != 200:
            return reading
        reading.ended = "closed"
        try:
            for arrival in _arrivals(response.iter_bytes()):
                reading.arrivals.append(arrival)
                if arrival.event is not None and arrival.event.type == "done":
                    reading.ended = "done"
                    break
                if byte_budget is not None and _bytes_read(response) >= byte_budget:
                    reading.ended = "dropped"
                    break
        except httpx.ReadTimeout:
            reading.ended = "timeout"
        except httpx.TransportError:
            reading.ended = "closed"
        reading.lasted = time.monotonic() - started
    return reading


def _bytes_read(response: httpx.Response) -> int:
    return int(response.num_bytes_downloaded)


def _arrivals(chunks: Iterator[bytes]) -> Iterator[Arrival]:
    lines, decoder = SSELineDecoder(), SSEDecoder()
    for read, chunk in enumerate(chunks):
        now = time.time()
        for line in lines.decode(chunk.decode("utf-8", errors="replace")):
            if line.startswith(":"):
                yield Arrival(now, read, comment=line[1:].strip())
                continue
            sse = decoder.decode(line)
            event = parse_event(sse) if sse is not None else None
            if event is not None:
                yield Arrival(now, read, event=event)


# -- the checks ------------------------------------------------------------------

def run_checks(url: str, *, token: str | None = None, idle: float = 20.0, resumes: int = 5,
               progress: Callable[[str], None] = lambda text: None,
               seed: int | None = None) -> list[Finding]:
    """Every check against ``url``; the findings, worst first."""
    client = TaskClient(url, token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with client, httpx.Client(base_url=url.rstrip("/"), headers=headers) as http:
        progress("probe 1/3: a demo task, 20 steps 0.15 s apart (latency, buffering, headers)")
        findings = check_stream(client, http)
        progress(f"probe 2/3: {idle:g} s of silence (idle time-outs, keep-alive)")
        findings.append(check_idle(client, http, idle=idle))
        progress(f"probe 3/3: dropping the stream {resumes} times and resuming")
        findings += check_resume(client, http, drops=resumes, rng=random.Random(seed))
    order = {FAIL: 0, WARN: 1, OK: 2}
    return sorted(findings, key=lambda f: order[f.level])


def check_stream(client: TaskClient, http: httpx.Client, *, steps: int = 20,
                 delay: float = 0.15) -> list[Finding]:
    record = client.start("demo", {"steps": steps, "delay": delay, "message": "probe"})
    reading = read_stream(http, f"/api/tasks/{record['id']}/events",
                          timeout=steps * delay + 30)
    if reading.status != 200:
        return [Finding("stream", FAIL, f"the event stream answered {reading.status}, not 200")]
    return [check_headers(reading.headers), check_compression(reading.headers),
            *check_timing(reading, delay=delay)]


def check_headers(headers: dict[str, str]) -> Finding:
    content_type = headers.get("content-type", "")
    if not content_type.startswith("text/event-stream"):
        return Finding("headers", FAIL, f"Content-Type is {content_type!r}, not "
                       "text/event-stream: something in between rewrote the response")
    problems = []
    if "no-cache" not in headers.get("cache-control", ""):
        problems.append(f"Cache-Control is {headers.get('cache-control')!r}, not no-cache")
    if headers.get("x-accel-buffering", "").lower() != "no":
        problems.append("X-Accel-Buffering: no is missing (nginx consumes it, so this is "
                        "normal behind one nginx; an outer proxy then buffers unless "
                        "told not to)")
    if problems:
        return Finding("headers", WARN, "; ".join(problems),
                       nginx="proxy_buffering off;  # in the location serving /api/",
                       caddy="reverse_proxy ... { flush_interval -1 }")
    return Finding("headers", OK, "text/event-stream, Cache-Control: no-cache, "
                   "X-Accel-Buffering: no")


def check_compression(headers: dict[str, str]) -> Finding:
    encoding = headers.get("content-encoding", "identity").lower()
    if encoding in ("", "identity"):
        return Finding("compression", OK, "the stream is not compressed")
    return Finding("compression", FAIL,
                   f"the stream is compressed (Content-Encoding: {encoding}); compressors "
                   "hold events back until their buffer fills (PITFALLS 1)",
                   nginx="gzip off;  # in the location serving /api/ (or drop "
                         "text/event-stream from gzip_types)",
                   caddy=CADDY_ENCODE)


def check_timing(reading: Reading, *, delay: float) -> list[Finding]:
    """Latency of each event against its ``ts``, and whether they came in lumps."""
    arrivals = [a for a in reading.arrivals if a.event is not None
                and a.event.type != "snapshot"]
    if reading.ended != "done" or not arrivals:
        return [Finding("latency", FAIL, f"the probe's stream ended ({reading.ended}) "
                        f"after {len(arrivals)} events, before done")]
    lags = [a.at - a.event.ts for a in arrivals if a.event is not None]
    offset = min(lags)  # clock difference plus the network's least delay
    late = [lag - offset for lag in lags]
    reads = len({a.read for a in arrivals})
    median, worst = statistics.median(late), max(late)
    summary = (f"{len(arrivals)} events in {reads} reads; median {median * 1000:.0f} ms, "
               f"worst {worst * 1000:.0f} ms late (clock offset {offset * 1000:+.0f} ms)")
    limit = max(1.0, 4 * delay)
    if worst > limit:
        return [Finding("buffering", FAIL,
                        f"events arrive in lumps: {summary}. A proxy buffers the response",
                        nginx=NGINX_STREAM, caddy=CADDY_STREAM)]
    return [Finding("latency", OK, summary)]


def check_idle(client: TaskClient, http: httpx.Client, *, idle: float) -> Finding:
    """Hold a stream through ``idle`` seconds with no events: does it survive,
    and do keep-alive comments fill the silence?"""
    record = client.start("demo", {"steps": 1, "delay": idle, "message": "idle probe"})
    reading = read_stream(http, f"/api/tasks/{record['id']}/events", timeout=idle + 15)
    beats = [a.at for a in reading.arrivals if a.comment is not None]
    if reading.ended != "done":
        return Finding("idle", FAIL,
                       f"the stream was cut ({reading.ended}) after {reading.lasted:.1f} s "
                       f"of a {idle:g} s silence, with {len(beats)} keep-alive comment(s): "
                       "a proxy's idle time-out is shorter than TASKS_HEARTBEAT",
                       nginx="proxy_read_timeout 1h;  # or lower TASKS_HEARTBEAT below it",
                       caddy="reverse_proxy ... { transport http { read_timeout 0 } }  "
                             "# or lower TASKS_HEARTBEAT")
    if not beats:
        return Finding("idle", WARN,
                       f"no keep-alive comment in {idle:g} s of silence: TASKS_HEARTBEAT is "
                       "longer; proxies that cut idle connections sooner will (nginx's "
                       "proxy_read_timeout is 60 s)",
                       nginx="keep TASKS_HEARTBEAT (default 15) below proxy_read_timeout",
                       caddy="keep TASKS_HEARTBEAT below any read_timeout")
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    every = f", every {statistics.median(gaps):.1f} s" if gaps else ""
    return Finding("idle", OK, f"the stream survived {idle:g} s of silence with "
                   f"{len(beats)} keep-alive comment(s){every}")


def check_resume(client: TaskClient, http: httpx.Client, *, drops: int,
                 rng: random.Random) -> list[Finding]:
    """Drop the stream at random byte offsets and resume by Last-Event-ID; the
    ids must continue exactly, as a replay of the whole stream shows them."""
    record = client.start("demo", {"steps": 40, "delay": 0.05, "message": "resume probe"})
    path = f"/api/tasks/{record['id']}/events"
    for _ in range(5):  # a connection cut before the snapshot: try again
        first = read_stream(http, path, byte_budget=1, timeout=30)
        snapshots = [e for e in first.events if e.type == "snapshot"]
        if first.status != 200 or snapshots:
            break
    if first.status != 200 or not snapshots:
        return [Finding("resume", FAIL, f"no snapshot to start from (status {first.status})")]
    start_id = last_id = first.events[-1].id
    seen, repeats, fresh, statuses = [e.id for e in first.events[1:]], 0, 0, []
    for attempt in range(drops + 200):
        budget = rng.randint(1, 400) if attempt < drops else None
        reading = read_stream(http, path, last_id=last_id, byte_budget=budget, timeout=30)
        statuses.append(reading.status)
        if reading.status == 204 or reading.status != 200:
            break
        for event in reading.events:
            if event.id <= last_id:
                repeats += 1
                continue
            fresh += event.type == "snapshot"
            seen.append(event.id)
            last_id = event.id
        if reading.ended == "done":
            break
    reference = read_stream(http, path, last_id=start_id, timeout=30)
    expected = {e.id: e.type for e in reference.events}
    missing = [i for i in expected if i not in set(seen)]
    lost = [i for i in missing if expected[i] != "progress"]
    findings = []
    summary = f"{len(seen)} events over {len(statuses)} resumed connections"
    if repeats or fresh or lost or any(s not in (200, 204) for s in statuses):
        findings.append(Finding(
            "resume", FAIL,
            f"resuming is not exact: {summary}; {repeats} repeated, {len(lost)} lost, "
            f"{fresh} fresh snapshots, statuses {sorted(set(statuses))}. Is the "
            "Last-Event-ID header reaching the server?",
            nginx="proxy_set_header Last-Event-ID $http_last_event_id;  # and no proxy_cache",
            caddy="reverse_proxy passes Last-Event-ID as is; check other middleware"))
    elif missing:
        findings.append(Finding("resume", WARN, f"{summary}; {len(missing)} progress events "
                                "merged (allowed), nothing else lost or repeated"))
    else:
        findings.append(Finding("resume", OK, f"{summary}, dropped at random points: ids "
                                "continued exactly, none lost or repeated"))
    done_id = max(expected) if expected else last_id
    after = read_stream(http, path, last_id=done_id, timeout=10)
    if after.status != 204:
        findings.append(Finding("end", WARN, f"a reconnect after done got {after.status}, "
                                "not 204: EventSource clients will keep reconnecting",
                                nginx="do not rewrite 204 answers (error_page, proxy_intercept_errors)",
                                caddy="do not rewrite 204 answers (handle_response)"))
    else:
        findings.append(Finding("end", OK, "a reconnect after done gets 204, so EventSource stops"))
    return findings


# -- the report --------------------------------------------------------------------

def print_report(findings: list[Finding]) -> int:
    """Print the findings, fixes indented under them; the exit code (1 on FAIL)."""
    colours = {OK: "green", WARN: "yellow", FAIL: "red"}
    for finding in findings:
        label = click.style(f"{finding.level:<5}", fg=colours[finding.level], bold=True)
        click.echo(f"{label} {finding.check:<12} {finding.summary}")
        for server, fix in (("nginx", finding.nginx), ("Caddy", finding.caddy)):
            if fix and finding.level != OK:
                lead = f"{'':19}fix ({server}): "
                click.echo(lead + fix.replace("\n", "\n" + " " * len(lead)))
    failures = sum(f.level == FAIL for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    if failures:
        click.echo(f"{failures} problem(s) found, {warnings} warning(s).")
        return 1
    click.echo(f"no problems found ({warnings} warning(s)).")
    return 0


def describe(findings: list[Finding]) -> list[dict[str, Any]]:
    """The findings as JSON-ready dicts."""
    return [vars(f) for f in findings]
