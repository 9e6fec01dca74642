"""Encoding events as server-sent-event bytes: pure, no IO.

Every event's ``data`` is one line of JSON. ``json.dumps`` escapes ``\\n`` and
``\\r`` inside strings, so no message text can end a field or an event early
(WHATWG HTML, "Server-sent events", the event stream's line rules).
"""
from __future__ import annotations

import json
import json.encoder
import time
from typing import Any, Callable

KEEP_ALIVE = b": keep-alive\n\n"


def _unserialisable(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _make_encoder() -> Callable[[Any], str]:
    """``json.dumps(data, ensure_ascii=False, separators=(",", ":"))``, with
    the C encoder built once instead of on every call (a third of its cost
    for a progress event). No circular-reference check: event data is plain
    JSON (a cycle raises RecursionError instead of ValueError)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator: the pure-Python encoder
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    iterencode = make(None, _unserialisable, json.encoder.encode_basestring, None, ":", ",",
                      False, False, True)
    return lambda data: "".join(iterencode(data, 0))


_encode = _make_encoder()


def encode_data(data: dict[str, Any]) -> bytes:
    """One line of compact JSON, UTF-8."""
    return _encode(data).encode()


def encode_event(event_id: int, event_type: str, data_line: bytes) -> bytes:
    """One complete event: ``id``, ``event`` and ``data`` fields, then a blank line."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), data_line)


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def encode_chunk(payload: bytes) -> bytes:
    """HTTP/1.1 chunked framing, as gunicorn writes it, for the direct path."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def ticket_expired_event() -> bytes:
    """The last event of a stream whose ticket ran out. It has no id: the
    client's last event id stays that of the last real event, which is where
    it resumes with its next ticket."""
    data = {"reason": "ticket_expired", "message": "this stream's ticket has expired: get a new "
            "one from POST /api/tickets and resume with ?lastEventId=", "ts": time.time()}
    return b"event: ticket-expired\ndata: %s\n\n" % encode_data(data)


def ending_frames(reason: str | None, retry_ms: int) -> bytes:
    """What a stream sends last when its subscriber ended for ``reason``: a
    last ``retry:`` on shutdown (come back, to another worker), the
    ``ticket-expired`` event when its ticket ran out, else nothing."""
    if reason == "shutdown":
        return encode_retry(retry_ms)
    if reason == "expired":
        return ticket_expired_event()
    return b""
