"""The event-stream response: the body iterator every stream endpoint returns.

The body is an ``EventStream``, an iterable with ``close()``: gunicorn (and
werkzeug, for HEAD requests that never iterate) calls ``close()`` when the
response ends for any reason, which releases the subscriber. A vanished client
is found on the next failed write, and the keep-alive comment guarantees there
is one every heartbeat (PITFALLS 3).
"""
from __future__ import annotations

import random
from typing import Callable, Iterator

from flask import Response

from .events import Subscriber
from .hub import Opening
from .sse import KEEP_ALIVE, encode_retry

HEADERS = {
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",   # nginx: do not buffer (PITFALLS 1)
}


class EventStream:
    """WSGI body of one stream; ``close()`` always unsubscribes, even unstarted."""

    def __init__(self, opening: Opening, *, retry_ms: int, heartbeat: float,
                 unsubscribe: Callable[[Subscriber], None]) -> None:
        self.opening, self.retry_ms, self.heartbeat = opening, retry_ms, heartbeat
        self._unsubscribe = unsubscribe
        self._closed = False

    def __iter__(self) -> Iterator[bytes]:
        subscriber = self.opening.subscriber
        try:
            yield encode_retry(self.retry_ms) + self.opening.frames
            if subscriber is not None:
                yield from self._follow(subscriber)
        finally:
            self.close()

    def _follow(self, subscriber: Subscriber) -> Iterator[bytes]:
        while not self._closed:
            woke = subscriber.has_pending or bool(subscriber.ended)
            if not woke:
                woke = subscriber.wait(self.heartbeat)
            frames = subscriber.take()
            if subscriber.ended == "shutdown":
                frames += encode_retry(self.retry_ms)  # come back, to another worker
            if frames:
                yield frames
            elif not woke:
                yield KEEP_ALIVE
            if subscriber.ended:
                return

    def close(self) -> None:
        self._closed = True
        if self.opening.subscriber is not None:
            self._unsubscribe(self.opening.subscriber)


def event_stream_response(opening: Opening, *, retry_range: tuple[int, int], heartbeat: float,
                          unsubscribe: Callable[[Subscriber], None]) -> Response:
    """200 with the stream, or 204 when there is nothing more to send (the
    reconnect after ``done``: EventSource then stops reconnecting)."""
    if opening.subscriber is None and not opening.frames:
        return Response(status=204, headers=HEADERS)
    # Jittered, so a restart does not bring every client back at once (PITFALLS 10).
    retry_ms = random.randint(*retry_range)
    body = EventStream(opening, retry_ms=retry_ms, heartbeat=heartbeat, unsubscribe=unsubscribe)
    return Response(body, status=200, headers=HEADERS,
                    content_type="text/event-stream; charset=utf-8", direct_passthrough=True)
