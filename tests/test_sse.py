import pytest

from tasks.sse import KEEP_ALIVE, encode_chunk, encode_data, encode_event, encode_retry
from tests.sse_parser import SSEParser


def test_an_event_is_id_event_data_and_a_blank_line():
    assert encode_event(7, "progress", b'{"a":1}') == b'id: 7\nevent: progress\ndata: {"a":1}\n\n'


def test_retry_and_keep_alive_bytes():
    assert encode_retry(1500) == b"retry: 1500\n\n"
    assert KEEP_ALIVE == b": keep-alive\n\n"


def test_chunk_framing_matches_http_1_1():
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"


@pytest.mark.parametrize("message", ["two\nlines", "carriage\rreturn", "crlf\r\nend",
                                     "\n\ndata: fake\n\n", "é ☃ \u2028 \x00", "id: 99"])
def test_no_message_text_can_break_the_framing(message):
    frame = encode_event(1, "log", encode_data({"message": message}))
    assert frame.count(b"\n") == 4 and b"\r" not in frame
    parser = SSEParser()
    (event,) = parser.feed(frame.decode())
    assert event.json == {"message": message} and event.id == "1"


def test_the_parser_follows_the_whatwg_line_rules():
    parser = SSEParser()
    events = parser.feed("retry: 10\r\n: hi\r\nid: 3\revent: x\ndata:a\ndata: b\n\n")
    assert [(e.id, e.type, e.data) for e in events] == [("3", "x", "a\nb")]
    assert parser.retry == 10 and parser.comments == ["hi"]
