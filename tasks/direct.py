"""The direct path: the publisher writes each event batch straight to the
streams' sockets, framed once for all of them, without blocking.

On the ordinary path every delivered event costs a queue hand-off, two greenlet
switches and gunicorn's chunk writer (about 12 µs); writing from the publisher
costs about 2 µs (PERF-NOTES). gunicorn parsed the request; the app wrote the
head and the first chunk through gunicorn's own response, then took the
connection over (handoff.py). Every later byte goes out as an HTTP/1.1 chunk,
framed exactly as gunicorn would, and the stream ends with the empty chunk.

A socket that would block keeps the unsent tail here; a greenlet of the
stream's (handoff.py) then writes it, waiting cooperatively, while new events
queue in its subscriber, progress merged, so a slow reader gets the newest
state next, not a backlog. A vanished reader shows as EPIPE/ECONNRESET on the
next write.

Only valid on plain TCP under gunicorn's gevent worker with nothing between it
and the app that rewrites bodies; ``direct_socket`` (and streaming.py, which
checks that ``start_response`` is gunicorn's own) say when.
"""
from __future__ import annotations

import os
import socket
from typing import Any

#: Kernel send buffer for stream sockets, and the most bytes the kernel may
#: hold not yet sent (TCP_NOTSENT_LOWAT): room for bursts to fast readers,
#: while a slow reader's backlog waits in user space, where progress merges,
#: instead of aging in the kernel (issue 7: peers' slow readers saw progress
#: 10 s stale behind full socket buffers).
SEND_BUFFER = 32 * 1024
NOT_SENT_LIMIT = 1024
_TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)  # Linux


class DirectWriter:
    """Non-blocking writes of pre-framed chunks to one stream's socket."""

    __slots__ = ("sock", "fd", "unsent", "busy", "gone", "active")

    def __init__(self, sock: Any) -> None:
        self.sock, self.fd = sock, sock.fileno()
        self.unsent = b""     # the tail of a chunk the socket did not take
        self.busy = False     # a greenlet is writing to it: don't interleave
        self.gone = False     # the reader vanished (or the stream closed: never write again)
        self.active = False   # wrote since the keep-alive ticker last looked (handoff.py)

    def try_write(self, data: bytes) -> bool:
        """Write now if nothing is ahead of ``data``; False means queue it instead."""
        if self.busy or self.unsent or self.gone:
            return False
        try:
            written = os.write(self.fd, data)
        except BlockingIOError:
            return False
        except OSError:  # EPIPE, ECONNRESET: the reader is gone
            self.gone = True
            return True
        self.active = True
        if written < len(data):
            self.unsent = data[written:]
        return True

    @property
    def is_clear(self) -> bool:
        return not (self.unsent or self.gone)


def direct_socket(environ: dict[str, Any], *, enabled: bool) -> Any | None:
    """The client socket when events may be written to it directly, else None."""
    if not enabled:
        return None
    sock = environ.get("gunicorn.socket")
    if sock is None or environ.get("SERVER_PROTOCOL") != "HTTP/1.1":
        return None
    if not type(sock).__module__.startswith("gevent") or hasattr(sock, "getpeercert"):
        return None  # not gunicorn's gevent worker, or TLS: a raw write would skip encryption
    return sock


def tune_socket(sock: Any) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_NOTSENT_LOWAT, NOT_SENT_LIMIT)
    except OSError:
        pass  # not TCP (a Unix socket behind a proxy): the defaults will do
