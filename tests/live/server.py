"""A real gunicorn gevent server for the tests, and a raw-socket stream reader.

``LiveServer`` reserves a free port, starts ``gunicorn -c gunicorn.conf.py
server:app`` with the given ``TASKS_*`` environment, waits for ``/healthz``
and keeps the log. ``StreamReader`` reads an event stream over a plain socket
(chunked or not) and parses it with the WHATWG parser, every wait bounded.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.sse_parser import SSEEvent, SSEParser

ROOT = Path(__file__).resolve().parents[2]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, *,
                 args: list[str] | None = None, port: int | None = None,
                 app_uri: str = "server:app") -> None:
        self.tmp_path = tmp_path
        self.app_uri = app_uri
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / f"gunicorn-{self.port}.log"
        self.env = {**os.environ, "TASKS_DB": str(tmp_path / "tasks.sqlite3"),
                    "TASKS_GRACEFUL_TIMEOUT": "6", "PYTHONUNBUFFERED": "1", **(env or {})}
        self.args = args or []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> "LiveServer":
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [GUNICORN, "-c", "gunicorn.conf.py", self.app_uri, "-b", f"127.0.0.1:{self.port}",
             *self.args],
            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log}")
            try:
                if self.request("GET", "/healthz", timeout=1)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"gunicorn did not answer /healthz in {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def request(self, method: str, path: str, body: Any = None, *,
                headers: dict[str, str] | None = None, timeout: float = 10
                ) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if data is not None else {}
        all_headers.update(headers or {})
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                raw = response.read()
                status, head = response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            with error:
                raw, status, head = error.read(), error.code, dict(error.headers)
        text = raw.decode()
        try:
            return status, head, json.loads(text) if text else None
        except ValueError:
            return status, head, text

    def start_task(self, name: str = "demo", **params: Any) -> dict[str, Any]:
        status, _, record = self.request("POST", "/api/tasks", {"name": name, "params": params})
        assert status == 202, record
        return record  # type: ignore[no-any-return]

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def kill_worker(self) -> None:
        """kill -9 every process of the server (master and worker), and wait
        until none is left holding the listening socket."""
        self.signal(signal.SIGKILL)
        self.wait(10)
        assert self.process is not None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        raise AssertionError("the killed server's processes did not go away")

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait(5)


def sigterm_while_reading(live: LiveServer, streams: list["StreamReader"], *,
                          grace: float) -> None:
    """SIGTERM with ``streams`` open: each is read to its end, and the server
    exits cleanly within its graceful timeout ``grace`` (plus 2 s of slack)."""
    import gevent

    started = time.monotonic()
    live.signal(signal.SIGTERM)
    ends = [gevent.spawn(stream.until_end, 10) for stream in streams]
    gevent.joinall(ends, timeout=12, raise_error=True)
    assert live.wait(10) == 0
    assert time.monotonic() - started < grace + 2, "the worker outlived its graceful timeout"


class StreamReader:
    """One event stream read over a raw socket, every read bounded."""

    def __init__(self, url: str, path: str, headers: dict[str, str] | None = None,
                 *, timeout: float = 10, recv_buffer: int | None = None) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        if recv_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.parser = SSEParser()
        self.raw = b""
        self.body = b""
        self.ended = False
        self.status, self.headers = self._read_head()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.complete = False  # the last chunk came: the response ended, not just the connection
        self._take(b"")  # the body may have come in with the headers

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self.raw:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the headers")
            self.raw += data
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    def _decode(self) -> bytes:
        """Move complete body bytes out of ``raw`` (undoing chunked framing)."""
        if not self.chunked:
            out, self.raw = self.raw, b""
            return out
        out = b""
        while True:
            size_end = self.raw.find(b"\r\n")
            if size_end < 0:
                return out
            size = int(self.raw[:size_end].split(b";")[0], 16)
            if len(self.raw) < size_end + 2 + size + 2:
                return out
            if size == 0:
                self.ended = self.complete = True
                self.raw = b""
                return out
            out += self.raw[size_end + 2:size_end + 2 + size]
            assert self.raw[size_end + 2 + size:size_end + 4 + size] == b"\r\n", "bad chunk"
            self.raw = self.raw[size_end + 4 + size:]

    def read_some(self, timeout: float) -> bool:
        """Read once (up to ``timeout``); False when the response has ended."""
        if self.ended:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return True
        if not data:
            self.ended = True
            return False
        self._take(data)
        return not self.ended

    def _take(self, data: bytes) -> None:
        self.raw += data
        body = self._decode()
        self.body += body
        self.parser.feed(body.decode())

    def until(self, predicate: Any, timeout: float = 15) -> list[SSEEvent]:
        """Read until ``predicate(events)`` holds; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate(self.parser.events):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; events so far: {self.summary()}"
            if not self.read_some(min(left, 1.0)) and not predicate(self.parser.events):
                raise AssertionError(f"stream ended; events: {self.summary()}")
        return self.parser.events

    def until_done(self, timeout: float = 15) -> list[SSEEvent]:
        return self.until(lambda events: any(e.type == "done" for e in events), timeout)

    def until_end(self, timeout: float = 15) -> list[SSEEvent]:
        deadline = time.monotonic() + timeout
        while self.read_some(min(1.0, max(0.01, deadline - time.monotonic()))):
            assert time.monotonic() < deadline, "the response did not end"
        return self.parser.events

    @property
    def events(self) -> list[SSEEvent]:
        return self.parser.events

    def summary(self) -> str:
        """The event types seen, run-length encoded (a failure message stays short)."""
        runs: list[list[Any]] = []
        for event in self.parser.events:
            if runs and runs[-1][0] == event.type:
                runs[-1][1] += 1
            else:
                runs.append([event.type, 1])
        return ", ".join(f"{t}×{n}" if n > 1 else t for t, n in runs)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "StreamReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
