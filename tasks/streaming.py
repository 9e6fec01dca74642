"""The event-stream response: the body iterator every stream endpoint returns.

The body is an ``EventStream``, an iterable with ``close()``: gunicorn (and
werkzeug, for HEAD requests that never iterate) calls ``close()`` when the
response ends for any reason, which releases the subscriber. A vanished client
is found on the next failed write, and the keep-alive comment guarantees there
is one every heartbeat (PITFALLS 3).
"""
from __future__ import annotations

import random
from typing import Any, Callable, Iterator

from flask import Flask, Response

from .direct import DirectWriter, direct_socket, tune_socket
from .events import Subscriber
from .hub import Opening
from .sse import KEEP_ALIVE, encode_chunk, encode_retry

HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",   # nginx: do not buffer (PITFALLS 1)
}


class EventStream:
    """WSGI body of one stream; ``close()`` always unsubscribes, even unstarted."""

    def __init__(self, opening: Opening, *, retry_ms: int, heartbeat: float,
                 unsubscribe: Callable[[Subscriber], None],
                 on_close: Callable[[Subscriber | None], None] | None = None) -> None:
        self.opening, self.retry_ms, self.heartbeat = opening, retry_ms, heartbeat
        self._unsubscribe = unsubscribe
        self._on_close = on_close  # gives back the stream's place (limits.py), once
        self._closed = False
        self._socket: Any = None

    def allow_direct(self, environ: dict[str, Any], *, enabled: bool) -> None:
        """Called with the outermost WSGI environ when nothing wraps this body."""
        self._socket = direct_socket(environ, enabled=enabled)
        if environ.get("gunicorn.socket") is not None:  # TLS too: small kernel backlog
            tune_socket(environ["gunicorn.socket"])

    def __iter__(self) -> Iterator[bytes]:
        subscriber = self.opening.subscriber
        first, self.opening.frames = self.opening.frames, b""
        try:
            if subscriber is not None and self._socket is not None:
                # gunicorn writes the headers and the retry: field, and keeps
                # hold of that chunk while the stream lasts: keep it small.
                yield encode_retry(self.retry_ms)
                self._follow_direct(subscriber, self._socket, first)
                return
            yield encode_retry(self.retry_ms) + first
            del first
            if subscriber is not None:
                yield from self._follow(subscriber)
        finally:
            self.close()

    def _next_frames(self, subscriber: Subscriber) -> bytes:
        """Wait for events (at most a heartbeat) and take them; a keep-alive
        after silence, a last ``retry:`` when the worker shuts down."""
        woke = subscriber.has_pending or bool(subscriber.ended) or subscriber.wait(self.heartbeat)
        frames = subscriber.take()
        if subscriber.ended == "shutdown":
            frames += encode_retry(self.retry_ms)  # come back, to another worker
        return frames if frames or woke else KEEP_ALIVE

    def _follow(self, subscriber: Subscriber) -> Iterator[bytes]:
        while not self._closed:
            frames = self._next_frames(subscriber)
            if frames:
                yield frames  # events may arrive while gunicorn writes: go round again
            if subscriber.ended and not subscriber.has_pending:
                return

    def _follow_direct(self, subscriber: Subscriber, sock: Any, first: bytes) -> None:
        """Stay parked in this greenlet while the publisher writes events
        straight to ``sock``; write here only the opening frames and what the
        publisher could not (a slow reader's tail and merged backlog),
        keep-alives and the last retry."""
        writer = DirectWriter(sock)
        if first:
            writer.unsent = encode_chunk(first)  # goes out first; the publisher queues behind it
        subscriber.writer = writer
        while not self._closed:
            frames = self._next_frames(subscriber)
            if writer.gone:
                return
            writer.busy = True
            try:
                data, writer.unsent = writer.unsent, b""
                if frames:
                    data += encode_chunk(frames)
                if data:
                    sock.sendall(data)  # waits for the reader, not for the loop
            except OSError:
                return  # the reader is gone; gunicorn's final write fails and closes
            finally:
                writer.busy = False
            if subscriber.ended and not subscriber.has_pending:
                return

    def close(self) -> None:
        self._closed = True
        if self.opening.subscriber is not None:
            self._unsubscribe(self.opening.subscriber)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self.opening.subscriber)


def event_stream_response(opening: Opening, *, retry_range: tuple[int, int], heartbeat: float,
                          unsubscribe: Callable[[Subscriber], None],
                          on_close: Callable[[Subscriber | None], None] | None = None
                          ) -> Response:
    """200 with the stream, or 204 when there is nothing more to send (the
    reconnect after ``done``: EventSource then stops reconnecting).
    ``on_close`` runs once when the response ends (at once for a 204)."""
    if opening.subscriber is None and not opening.frames:
        if on_close is not None:
            on_close(None)
        return Response(status=204, headers=HEADERS)
    # Jittered, so a restart does not bring every client back at once (PITFALLS 10).
    retry_ms = random.randint(*retry_range)
    body = EventStream(opening, retry_ms=retry_ms, heartbeat=heartbeat, unsubscribe=unsubscribe,
                       on_close=on_close)
    return Response(body, status=200, headers=HEADERS,
                    content_type="text/event-stream; charset=utf-8", direct_passthrough=True)


class StreamingFlask(Flask):
    """Flask that lets event streams write straight to their sockets when
    nothing between gunicorn and the app (compression, say) rewrites bodies:
    only then is the body gunicorn receives our own ``EventStream``."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = self.wsgi_app(environ, start_response)
        if isinstance(body, EventStream):
            body.allow_direct(environ, enabled=bool(self.config.get("TASKS_FAST_PATH")))
        return body
