"""A misbehaving reverse proxy for the tests: forwards to a LiveServer, but
buffers the body, gzips it, or cuts the connection after some bytes.

It imitates what users' proxies do to event streams (PITFALLS 1, 4): nginx
with ``proxy_buffering on`` (and an outer proxy that never saw
``X-Accel-Buffering``), gzip middleware, and load balancers that drop
connections. One request per connection (it asks upstream for
``Connection: close``) and the body goes back delimited by the close, which
keeps it small. A gevent ``StreamServer``: the tests run monkey-patched.
"""
from __future__ import annotations

import socket
import zlib
from typing import Iterator

from gevent.server import StreamServer

MODES = ("pass", "buffer", "gzip", "cut")


class Proxy:
    """``mode``: ``pass``; ``buffer`` (send the body in ``buffer_size`` lumps,
    and drop ``X-Accel-Buffering``); ``gzip`` (compress when the client
    accepts it); ``cut`` (close event streams after ``cut_after`` body bytes,
    mid-event, for the first ``cuts`` of them). In every mode a response
    silent for ``idle_timeout`` seconds is cut, as proxies' read time-outs do."""

    def __init__(self, upstream: str, mode: str = "pass", *, buffer_size: int = 64 * 1024,
                 cut_after: int = 700, cuts: int = 3, idle_timeout: float = 30) -> None:
        assert mode in MODES, mode
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.mode, self.buffer_size = mode, buffer_size
        self.cut_after, self.cuts_left = cut_after, cuts
        self.cut_count = 0
        self.idle_timeout = idle_timeout
        self.server = StreamServer(("127.0.0.1", 0), self._handle)

    def start(self) -> "Proxy":
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(timeout=1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> "Proxy":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one connection --------------------------------------------------------

    def _handle(self, client: socket.socket, address: object) -> None:
        client.settimeout(30)
        try:
            head, body = _read_head(client)
            if head is None:
                return
            request_line, headers = _parse_head(head)
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                data = client.recv(65536)
                if not data:
                    return
                body += data
            accepts_gzip = "gzip" in headers.get("accept-encoding", "")
            upstream = socket.create_connection(self.upstream, timeout=self.idle_timeout)
            try:
                upstream.sendall(_rewrite_request(head) + body)
                self._relay(upstream, client, accepts_gzip=accepts_gzip)
            finally:
                upstream.close()
        except OSError:
            pass  # either side went away: nothing to tell anyone
        finally:
            client.close()

    def _relay(self, upstream: socket.socket, client: socket.socket, *,
               accepts_gzip: bool) -> None:
        head, rest = _read_head(upstream)
        if head is None:
            return
        status_line, headers = _parse_head(head)
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        is_stream = headers.get("content-type", "").startswith("text/event-stream")
        drop = {"transfer-encoding", "content-length", "connection"}
        gzip = self.mode == "gzip" and accepts_gzip and not status_line.split()[1] == "204"
        if self.mode == "buffer":
            drop.add("x-accel-buffering")
        lines = [status_line] + [line for line in head.decode("latin-1").split("\r\n")[1:]
                                 if line.partition(":")[0].strip().lower() not in drop]
        if gzip:
            lines.append("Content-Encoding: gzip")
        lines.append("Connection: close")
        client.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        body = _body(upstream, rest, chunked=chunked)
        if gzip:
            self._send_gzip(client, body)
        elif self.mode == "buffer":
            self._send_buffered(client, body)
        elif self.mode == "cut" and is_stream and self.cuts_left > 0:
            self.cuts_left -= 1
            self._send_cut(client, body)
        else:
            for data in body:
                client.sendall(data)

    def _send_buffered(self, client: socket.socket, body: Iterator[bytes]) -> None:
        held = b""
        for data in body:
            held += data
            if len(held) >= self.buffer_size:
                client.sendall(held)
                held = b""
        client.sendall(held)

    def _send_gzip(self, client: socket.socket, body: Iterator[bytes]) -> None:
        # Like gzip middleware: what the compressor hands out, when it does.
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
        for data in body:
            out = compressor.compress(data)
            if out:
                client.sendall(out)
        client.sendall(compressor.flush())

    def _send_cut(self, client: socket.socket, body: Iterator[bytes]) -> None:
        sent = 0
        for data in body:
            room = self.cut_after - sent
            client.sendall(data[:room])
            sent += min(room, len(data))
            if sent >= self.cut_after:
                self.cut_count += 1
                # RST rather than FIN: a dropped connection, not an ended response
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00"
                                  b"\x00\x00\x00\x00")
                return


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    raw = b""
    while b"\r\n\r\n" not in raw:
        data = sock.recv(65536)
        if not data:
            return None, b""
        raw += data
    head, rest = raw.split(b"\r\n\r\n", 1)
    return head, rest


def _parse_head(head: bytes) -> tuple[str, dict[str, str]]:
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers


def _rewrite_request(head: bytes) -> bytes:
    """The request with ``Connection: close``, so upstream ends the body by closing."""
    first, *lines = head.decode("latin-1").split("\r\n")
    kept = [line for line in lines
            if line.partition(":")[0].strip().lower() not in ("connection", "accept-encoding")]
    return ("\r\n".join([first, *kept, "Connection: close"]) + "\r\n\r\n").encode("latin-1")


def _body(sock: socket.socket, rest: bytes, *, chunked: bool) -> Iterator[bytes]:
    """The upstream body as it arrives, chunked framing undone."""
    raw = rest
    while True:
        if chunked:
            while True:
                size_end = raw.find(b"\r\n")
                if size_end < 0:
                    break
                size = int(raw[:size_end].split(b";")[0], 16)
                if size == 0:
                    return
                if len(raw) < size_end + 4 + size:
                    break
                yield raw[size_end + 2:size_end + 2 + size]
                raw = raw[size_end + 4 + size:]
        elif raw:
            yield raw
            raw = b""
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return  # the idle time-out: end the response as if upstream had
        if not data:
            return
        raw += data
