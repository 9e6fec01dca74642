"""Streams that gunicorn hands over, so an open stream needs no greenlet.

On the direct path (direct.py) the publisher writes events straight to the
streams' sockets, so a stream's handler greenlet only waited, and held about
10 KB while it did (its saved stack, gunicorn's request state). So, once the
response's head and first events are out, we keep a duplicate of the socket
and let gunicorn's handler end (streaming.py raises ``StopIteration`` out of
the app, which gunicorn takes as "close this connection"). The rest of what
the handler did is shared:

- a short-lived greenlet, only while there is something to do, writes what
  the publisher could not (a slow reader's tail and merged backlog) and
  writes the end of the response;
- streams whose ``done`` is written in full are ended by one finisher
  greenlet once the publisher is idle: closing a socket costs more than the
  write, and done's fan-out to the other readers comes first;
- one ticker greenlet per worker sends keep-alive comments after silence
  and ends the streams whose ticket has expired.

The head says ``Connection: close``: the connection ends with the stream,
which EventSource takes in its stride (it reconnects on a new one anyway).
"""
from __future__ import annotations

import time
from typing import Any, Callable

import gevent
import gevent.event

from .direct import DirectWriter
from .events import Subscriber
from .sse import KEEP_ALIVE, encode_chunk, ending_frames

LAST_CHUNK = b"0\r\n\r\n"
_KEEP_ALIVE_CHUNK = encode_chunk(KEEP_ALIVE)
#: Streams the ticker visits before it lets other greenlets run.
_VISITS_PER_YIELD = 1000
#: Streams the finisher ends before it lets other greenlets run.
_ENDS_PER_YIELD = 256
#: The longest the finisher waits for the publisher to be idle (a fast task
#: keeps it busy for ever): a stream's socket is closed within about this.
_FINISH_DELAY = 0.1


class HandedOffStream:
    """One stream after gunicorn let go of it."""

    __slots__ = ("sock", "subscriber", "writer", "retry_ms", "ends_at", "silent", "serving",
                 "closed", "last_chunk_sent", "_on_close", "_streams")

    def __init__(self, sock: Any, subscriber: Subscriber, *, retry_ms: int,
                 ends_at: float | None, on_close: Callable[[], None],
                 streams: HandedOffStreams) -> None:
        self.sock, self.subscriber, self.retry_ms = sock, subscriber, retry_ms
        self.writer = DirectWriter(sock)
        self.ends_at = ends_at      # a ticket's end (monotonic): the stream ends then
        self.silent = 0.0           # seconds without a write, as the ticker counts them
        self.serving = False        # a greenlet is writing for this stream, or will
        self.closed = False
        self.last_chunk_sent = False
        self._on_close, self._streams = on_close, streams

    def wake(self) -> None:
        """The subscriber has events the publisher could not write, or ended."""
        if self.serving or self.closed:
            return
        self.serving = True
        subscriber = self.subscriber
        if subscriber.ended == "done" and not subscriber.has_pending:
            self._streams.finish_later(self)  # all written: only the end remains
        else:
            gevent.spawn(self._serve)

    def finish(self) -> None:
        """End a response whose events are all written: the last chunk, and close."""
        if self.closed:
            return
        writer = self.writer
        self.last_chunk_sent = writer.try_write(LAST_CHUNK)
        if writer.gone or (self.last_chunk_sent and writer.is_clear):
            self.serving = False
            self.close()
        else:  # the reader's window is full: write the rest waiting, as for a slow reader
            gevent.spawn(self._serve)

    def _serve(self) -> None:
        """Write until nothing waits; end the response once the subscriber ended."""
        subscriber, writer = self.subscriber, self.writer
        try:
            while not writer.gone:
                ended = subscriber.ended
                frames = subscriber.take() + ending_frames(ended, self.retry_ms)
                data, writer.unsent = writer.unsent, b""
                if frames:
                    data += encode_chunk(frames)
                if ended and not self.last_chunk_sent:
                    data += LAST_CHUNK
                writer.busy = True
                try:
                    self._send_all(data)
                finally:
                    writer.busy = False
                writer.active = True
                if ended:
                    break
                if not subscriber.has_pending and not subscriber.ended:
                    return  # all written: no greenlet until the next wake
        except OSError:
            pass  # the reader is gone, or stalled past the socket's timeout
        finally:
            self.serving = False
        self.close()

    def _send_all(self, data: bytes) -> None:
        """Wait for a slow reader (not for the loop); one that takes nothing
        for the socket's timeout (TASKS_STALL_TIMEOUT) is dropped: its
        connection would hold its place and its queue for ever."""
        view = memoryview(data)
        while view:
            view = view[self.sock.send(view):]

    def tick(self, now: float, elapsed: float, heartbeat: float) -> None:
        """The ticker's visit: a keep-alive after ``heartbeat`` of silence,
        the end when the ticket has expired."""
        if self.serving or self.closed:
            return
        if self.ends_at is not None and now >= self.ends_at:
            self.subscriber.end("expired")  # wakes us: the last event, then the end
            return
        writer = self.writer
        if writer.active:
            writer.active, self.silent = False, 0.0
            return
        self.silent += elapsed
        if self.silent >= heartbeat:
            self.silent = 0.0
            if not writer.try_write(_KEEP_ALIVE_CHUNK) or not writer.is_clear:
                self.wake()  # the reader is slow (finish the write) or gone (close)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._streams.discard(self)
        self.writer.gone = True  # the publisher writes no more
        try:
            self.sock.close()
        finally:
            self._on_close()


class HandedOffStreams:
    """Every handed-off stream of one app, and the ticker that visits them."""

    def __init__(self, heartbeat: float, *, stall_timeout: float,
                 wait_published: Callable[[float], bool]) -> None:
        self.heartbeat, self.stall_timeout = heartbeat, stall_timeout
        self._wait_published = wait_published
        self._to_finish: list[HandedOffStream] = []
        self._finisher: gevent.Greenlet[[], None] | None = None
        # Keep-alives go out between one heartbeat and a quarter more after the last write.
        self._interval = min(heartbeat / 4, 2.0)
        self._streams: dict[HandedOffStream, None] = {}
        self._ticker: gevent.Greenlet[[], None] | None = None
        self._empty = gevent.event.Event()
        self._empty.set()

    def __len__(self) -> int:
        return len(self._streams)

    def add(self, stream: HandedOffStream) -> None:
        self._streams[stream] = None
        self._empty.clear()
        if self._ticker is None or self._ticker.dead:
            self._ticker = gevent.spawn(self._tick_forever)

    def discard(self, stream: HandedOffStream) -> None:
        self._streams.pop(stream, None)
        if not self._streams:
            self._empty.set()

    def finish_later(self, stream: HandedOffStream) -> None:
        self._to_finish.append(stream)
        if self._finisher is None or self._finisher.dead:
            self._finisher = gevent.spawn(self._finish_all)

    def _finish_all(self) -> None:
        while self._to_finish:
            self._wait_published(_FINISH_DELAY)
            streams, self._to_finish = self._to_finish, []
            for count, stream in enumerate(streams, 1):
                stream.finish()
                if count % _ENDS_PER_YIELD == 0:
                    gevent.sleep(0)

    def wait_closed(self, timeout: float) -> bool:
        """Wait until every stream has ended (shutdown: their last bytes out)."""
        return bool(self._empty.wait(timeout))

    def _tick_forever(self) -> None:
        last = time.monotonic()
        while self._streams:
            gevent.sleep(self._interval)
            now = time.monotonic()
            elapsed, last = now - last, now
            for count, stream in enumerate(list(self._streams), 1):
                stream.tick(now, elapsed, self.heartbeat)
                if count % _VISITS_PER_YIELD == 0:
                    gevent.sleep(0)
