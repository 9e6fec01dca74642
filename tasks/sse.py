"""Encoding events as server-sent-event bytes: pure, no IO.

Every event's ``data`` is one line of JSON. ``json.dumps`` escapes ``\\n`` and
``\\r`` inside strings, so no message text can end a field or an event early
(WHATWG HTML, "Server-sent events", the event stream's line rules).
"""
from __future__ import annotations

import json
from typing import Any

KEEP_ALIVE = b": keep-alive\n\n"


def encode_data(data: dict[str, Any]) -> bytes:
    """One line of compact JSON, UTF-8."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def encode_event(event_id: int, event_type: str, data_line: bytes) -> bytes:
    """One complete event: ``id``, ``event`` and ``data`` fields, then a blank line."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event_id, event_type.encode(), data_line)


def encode_retry(retry_ms: int) -> bytes:
    return b"retry: %d\n\n" % retry_ms


def encode_chunk(payload: bytes) -> bytes:
    """HTTP/1.1 chunked framing, as gunicorn writes it, for the direct path."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)
