"""The SSE codec, byte for byte (WHATWG HTML, "Server-sent events")."""

from __future__ import annotations

import orjson
import pytest

from api.stream import live_gap_frame
from app.delivery import Delivery
from app.model import ChannelKey, Event
from app.sse import comment_frame, event_frame, retry_frame
from app.streaming import LiveGap


@pytest.mark.parametrize(
    ("data", "event_id", "event", "expected"),
    [
        pytest.param(b"hello", None, None, b"data: hello\n\n", id="plain-data"),
        pytest.param(b"hello", "42", None, b"id: 42\ndata: hello\n\n", id="with-id"),
        pytest.param(b"hello", None, "gap", b"event: gap\ndata: hello\n\n", id="with-event"),
        pytest.param(
            b"{}", "7", "gap", b"event: gap\nid: 7\ndata: {}\n\n", id="event-line-before-id-line"
        ),
        pytest.param(b"a\nb", None, None, b"data: a\ndata: b\n\n", id="lf-splits-lines"),
        pytest.param(b"a\rb", None, None, b"data: a\ndata: b\n\n", id="cr-splits-lines"),
        pytest.param(b"a\r\nb", None, None, b"data: a\ndata: b\n\n", id="crlf-is-one-break"),
        pytest.param(
            b"a\n\nb", None, None, b"data: a\ndata:\ndata: b\n\n", id="blank-line-inside-data"
        ),
        pytest.param(b"a\n", None, None, b"data: a\ndata:\n\n", id="trailing-lf-keeps-empty-line"),
        pytest.param(b"", None, None, b"data:\n\n", id="empty-data"),
        pytest.param(b"x", "", None, b"id:\ndata: x\n\n", id="empty-id-resets-last-event-id"),
        pytest.param(b" x", None, None, b"data:  x\n\n", id="leading-space-survives"),
    ],
)
def test_event_frame_is_byte_exact(
    data: bytes, event_id: str | None, event: str | None, expected: bytes
) -> None:
    assert event_frame(data, event_id=event_id, event=event) == expected


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "a\0b", "\n"])
def test_event_id_with_line_break_or_nul_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="id"):
        event_frame(b"x", event_id=bad)


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\r\nb", "a\0b"])
def test_event_name_with_line_break_or_nul_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="event"):
        event_frame(b"x", event=bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", b":\n\n", id="bare"),
        pytest.param("ping", b": ping\n\n", id="with-text"),
    ],
)
def test_comment_frame_is_byte_exact(text: str, expected: bytes) -> None:
    assert comment_frame(text) == expected


def test_comment_frame_default_is_bare_comment() -> None:
    assert comment_frame() == b":\n\n"


@pytest.mark.parametrize("bad", ["a\nb", "a\rb"])
def test_comment_with_line_break_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="one line"):
        comment_frame(bad)


@pytest.mark.parametrize(
    ("milliseconds", "expected"),
    [(0, b"retry: 0\n\n"), (2000, b"retry: 2000\n\n"), (1, b"retry: 1\n\n")],
)
def test_retry_frame_is_byte_exact(milliseconds: int, expected: bytes) -> None:
    assert retry_frame(milliseconds) == expected


def test_negative_retry_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        retry_frame(-1)


def _event() -> Event:
    return Event(
        key=ChannelKey("acme", "/event/Order__e"),
        replay_id=1_700_000_000_123_456,
        uuid="0f8e6c1a-0000-4000-8000-000000000001",
        created_us=1_700_000_000_123_456,
        payload=b'{"n":1}',
        created_by="client-1",
    )


def test_delivery_frame_is_id_and_envelope_without_event_line() -> None:
    frame = Delivery(_event()).sse_frame()

    assert frame == (
        b"id: 1700000000123456\n"
        b'data: {"channel":"/event/Order__e","replayId":1700000000123456,'
        b'"uuid":"0f8e6c1a-0000-4000-8000-000000000001",'
        b'"createdDate":"2023-11-14T22:13:20.123Z","schema":null,"payload":{"n":1}}\n'
        b"\n"
    )
    assert b"event:" not in frame


def test_delivery_encodes_its_frame_once() -> None:
    delivery = Delivery(_event())

    first = delivery.sse_frame()

    assert delivery.sse_frame() is first
    assert delivery.envelope is delivery.envelope


def test_a_live_gap_is_a_gap_event_naming_the_pattern() -> None:
    frame = live_gap_frame(LiveGap("/event/*"))

    head = b"event: gap\ndata: "
    assert frame.startswith(head)
    assert frame.endswith(b"\n\n")
    data = orjson.loads(frame[len(head) : -2])
    assert (data["channels"], data["requested"], data["earliest"], data["latest"]) == (
        "/event/*",
        None,
        None,
        None,
    )
    assert "resume by ReplayId" in data["reason"]
