"""The event-stream response: the body every stream endpoint returns.

The body is an ``EventStream``, an iterable with ``close()``: gunicorn (and
werkzeug, for HEAD requests that never iterate) calls ``close()`` when the
response ends for any reason, which releases the subscriber. A vanished client
is found on the next failed write, and the keep-alive comment guarantees there
is one every heartbeat (PITFALLS 3).

Two paths. The portable one: gunicorn (or any WSGI server) iterates the body,
which waits for events in its handler greenlet. The direct one, under
gunicorn's gevent worker on plain HTTP/1.1 with nothing between it and the
app: ``StreamingFlask`` writes the head and the first events itself, then
hands the stream over (handoff.py) and the publisher writes straight to its
socket (direct.py).
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterator

from flask import Flask, Response

from .direct import direct_socket, tune_socket
from .events import Subscriber
from .handoff import HandedOffStream, HandedOffStreams
from .hub import Opening
from .sse import KEEP_ALIVE, encode_retry, ending_frames

HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",   # nginx: do not buffer (PITFALLS 1)
}


class EventStream:
    """WSGI body of one stream; ``close()`` always unsubscribes, even unstarted."""

    def __init__(self, opening: Opening, *, retry_ms: int, heartbeat: float,
                 unsubscribe: Callable[[Subscriber], None],
                 on_close: Callable[[Subscriber | None], None] | None = None,
                 expires_at: float | None = None) -> None:
        self.opening, self.retry_ms, self.heartbeat = opening, retry_ms, heartbeat
        # A ticket's end (wall clock), kept as a monotonic deadline.
        self._ends_at = (time.monotonic() + expires_at - time.time()
                         if expires_at is not None else None)
        self._unsubscribe = unsubscribe
        self._on_close = on_close  # gives back the stream's place (limits.py), once
        self._closed = False
        self._socket: Any = None

    def allow_direct(self, environ: dict[str, Any], *, enabled: bool) -> None:
        """Called with the outermost WSGI environ when nothing wraps this body."""
        self._socket = direct_socket(environ, enabled=enabled)
        if environ.get("gunicorn.socket") is not None:  # TLS too: small kernel backlog
            tune_socket(environ["gunicorn.socket"])

    def hand_off(self, start_response: Any, streams: HandedOffStreams) -> bool:
        """On the direct path: write the head and the first events, then give
        the stream to ``streams``; False (nothing written) off that path."""
        subscriber = self.opening.subscriber
        response: Any = getattr(start_response, "__self__", None)
        if self._socket is None or subscriber is None or not _is_gunicorns(response):
            return False  # a middleware that took start_response may rewrite the body
        response.force_close()  # Connection: close: the connection ends with the stream
        first, self.opening.frames = self.opening.frames, b""
        try:
            response.write(encode_retry(self.retry_ms) + first)  # gunicorn frames the chunk
            sock = self._socket.dup()  # gunicorn closes its own when its handler ends
            sock.settimeout(streams.stall_timeout)  # blocking writes give up after it
        except BaseException:
            self.close()
            raise
        self._socket = None
        stream = HandedOffStream(sock, subscriber, retry_ms=self.retry_ms, ends_at=self._ends_at,
                                 on_close=self.close, streams=streams)
        streams.add(stream)
        subscriber.writer = stream.writer
        subscriber.wake_with(stream.wake)
        if subscriber.has_pending or subscriber.ended:
            stream.wake()
        return True

    def __iter__(self) -> Iterator[bytes]:
        subscriber = self.opening.subscriber
        first, self.opening.frames = self.opening.frames, b""
        try:
            yield encode_retry(self.retry_ms) + first
            del first
            if subscriber is not None:
                yield from self._follow(subscriber)
        finally:
            self.close()

    def _next_frames(self, subscriber: Subscriber) -> bytes:
        """Wait for events (at most a heartbeat) and take them; a keep-alive
        after silence, a last ``retry:`` when the worker shuts down, a
        ``ticket-expired`` event when the stream's ticket runs out."""
        wait = self.heartbeat
        if self._ends_at is not None:
            wait = min(wait, max(0.0, self._ends_at - time.monotonic()))
        woke = subscriber.has_pending or bool(subscriber.ended) or subscriber.wait(wait)
        if self._ends_at is not None and time.monotonic() >= self._ends_at:
            subscriber.end("expired")  # before take(): nothing is delivered after it
        frames = subscriber.take() + ending_frames(subscriber.ended, self.retry_ms)
        return frames if frames or woke else KEEP_ALIVE

    def _follow(self, subscriber: Subscriber) -> Iterator[bytes]:
        while not self._closed:
            frames = self._next_frames(subscriber)
            if frames:
                yield frames  # events may arrive while gunicorn writes: go round again
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
                          on_close: Callable[[Subscriber | None], None] | None = None,
                          expires_at: float | None = None) -> Response:
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
                       on_close=on_close, expires_at=expires_at)
    return Response(body, status=200, headers=HEADERS,
                    content_type="text/event-stream; charset=utf-8", direct_passthrough=True)


class StreamingFlask(Flask):
    """Flask that hands event streams over (the direct path) when nothing
    between gunicorn and the app (compression, say) rewrites bodies: only
    then is the body gunicorn receives our own ``EventStream``, and the
    ``start_response`` we get gunicorn's own."""

    #: Streams handed over by this app, created on the first.
    handed_off: HandedOffStreams | None = None
    #: Writes a handed-off stream's access log line (gunicorn.conf.py sets it).
    log_access: Callable[[Any, dict[str, Any], float], None] | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.monotonic()
        body = self.wsgi_app(environ, start_response)
        if isinstance(body, EventStream):
            body.allow_direct(environ, enabled=bool(self.config.get("TASKS_FAST_PATH")))
            if self.handed_off is None:
                self.handed_off = HandedOffStreams(
                    self.config["TASKS_HEARTBEAT"], stall_timeout=self.config["TASKS_STALL_TIMEOUT"],
                    wait_published=self.extensions["tasks"].hub.wait_published)
            if body.hand_off(start_response, self.handed_off):
                if self.log_access is not None:
                    self.log_access(start_response.__self__, environ, time.monotonic() - started)
                # gunicorn's word for "this connection is taken care of": its
                # handler ends and closes its copy of the socket.
                raise StopIteration("the stream was handed off")
        return body


def _is_gunicorns(response: Any) -> bool:
    try:
        from gunicorn.http.wsgi import Response as GunicornResponse  # type: ignore[import-untyped]
    except ImportError:
        return False
    return isinstance(response, GunicornResponse)
