"""A server-sent-events parser that follows the WHATWG rules, for the tests.

WHATWG HTML, "Server-sent events", "Interpreting an event stream": lines end
in CRLF, LF or CR; a line starting with a colon is a comment; the field name
runs to the first colon and one leading space of the value is dropped; a blank
line dispatches the event; ``id`` sets the last event id (unless it contains
NUL); ``retry`` takes ASCII digits only; ``data`` lines join with LF.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SSEEvent:
    type: str
    data: str
    id: str | None

    @property
    def json(self) -> Any:
        return json.loads(self.data)


@dataclass
class SSEParser:
    events: list[SSEEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    last_event_id: str = ""
    _buffer: str = ""
    _data: list[str] = field(default_factory=list)
    _type: str = ""
    _pending_cr: bool = False
    _started: bool = False

    def feed(self, text: str) -> list[SSEEvent]:
        """Feed decoded text; returns the events it completed."""
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        before = len(self.events)
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        self._buffer += text
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, end = cut
            rest = self._buffer[end:]
            if self._buffer[end - 1] == "\r" and not rest:
                self._pending_cr = True  # a CRLF may be split across reads
            self._buffer = rest
            self._line(line)
        return self.events[before:]

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].lstrip(" "))
            return
        name, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._type = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif name == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

    def _dispatch(self) -> None:
        if not self._data:
            self._type = ""
            return
        self.events.append(SSEEvent(self._type or "message", "\n".join(self._data),
                                    self.last_event_id or None))
        self._data, self._type = [], ""


def _line_end(buffer: str) -> tuple[str, int] | None:
    for index, char in enumerate(buffer):
        if char == "\n":
            return buffer[:index], index + 1
        if char == "\r":
            if index + 1 < len(buffer) and buffer[index + 1] == "\n":
                return buffer[:index], index + 2
            return buffer[:index], index + 1
    return None
