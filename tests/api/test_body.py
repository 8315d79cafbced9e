"""Reading request bodies."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable

import orjson
import pytest
from starlette.requests import Request
from starlette.types import Message

from api.body import body_late, read_body, read_json, server_keeps_deadline
from app.errors import ClientGone, InvalidBody, RequestTimeout, RequestTooLarge


def _request(messages: list[Message], headers: list[tuple[bytes, bytes]] | None = None) -> Request:
    pending = list(messages)

    async def receive() -> Message:
        return pending.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": headers or []}
    return Request(scope, receive)


async def test_client_that_disconnects_mid_body_is_reported_as_gone() -> None:
    request = _request(
        [
            {"type": "http.request", "body": b"{", "more_body": True},
            {"type": "http.disconnect"},
        ]
    )
    with pytest.raises(ClientGone):
        await read_body(request, 1024)


async def test_body_over_the_limit_is_refused_while_streaming() -> None:
    request = _request(
        [
            {"type": "http.request", "body": b"x" * 600, "more_body": True},
            {"type": "http.request", "body": b"x" * 600, "more_body": False},
        ]
    )
    with pytest.raises(RequestTooLarge):
        await read_body(request, 1024)


async def test_declared_length_over_the_limit_is_refused_before_reading() -> None:
    request = _request([], headers=[(b"content-length", b"5000")])
    with pytest.raises(RequestTooLarge):
        await read_body(request, 1024)


async def test_body_not_complete_by_the_deadline_is_refused_as_a_timeout() -> None:
    arrived = asyncio.Event()

    async def receive() -> Message:
        if not arrived.is_set():
            arrived.set()
            return {"type": "http.request", "body": b'{"n": ', "more_body": True}
        await asyncio.Event().wait()  # the rest of the body never comes
        raise AssertionError("unreachable")

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [],
        "replaybus.body_deadline": (asyncio.get_running_loop().time(), 1.5),
    }
    with pytest.raises(RequestTimeout, match=r"within 1\.5 s"):
        await read_body(Request(scope, receive), 1024)


# -- the deadline kept by the server (api.server wakes the read when it passes) ----------------


def _kept_by_server(receive: Callable[[], Awaitable[Message]]) -> Request:
    scope: dict[str, object] = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "headers": [],
        "replaybus.body_deadline": (asyncio.get_running_loop().time() + 60, 1.5),
    }
    server_keeps_deadline(scope)
    return Request(scope, receive)


async def test_a_body_in_chunks_is_read_whole_when_the_server_keeps_the_deadline() -> None:
    pending: list[Message] = [
        {"type": "http.request", "body": b'{"n"', "more_body": True},
        {"type": "http.request", "body": b"", "more_body": True},
        {"type": "http.request", "body": b": 1}", "more_body": False},
    ]

    async def receive() -> Message:
        return pending.pop(0)

    assert await read_body(_kept_by_server(receive), 1024) == b'{"n": 1}'


async def test_the_server_saying_the_body_is_late_is_refused_as_a_timeout() -> None:
    request: Request

    async def receive() -> Message:
        if "first" not in request.scope:
            request.scope["first"] = True
            return {"type": "http.request", "body": b'{"n": ', "more_body": True}
        body_late(request.scope)  # what the server does when the deadline passes
        return {"type": "http.request", "body": b"", "more_body": True}

    request = _kept_by_server(receive)
    with pytest.raises(RequestTimeout, match=r"within 1\.5 s of its headers \(6 bytes came in"):
        await read_body(request, 1024)


async def test_limits_and_disconnects_hold_when_the_server_keeps_the_deadline() -> None:
    chunks: list[Message] = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
    ]

    async def too_much() -> Message:
        return chunks.pop(0)

    with pytest.raises(RequestTooLarge):
        await read_body(_kept_by_server(too_much), 1024)

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    with pytest.raises(ClientGone):
        await read_body(_kept_by_server(gone), 1024)


async def test_body_without_a_deadline_is_read_whole() -> None:
    request = _request([{"type": "http.request", "body": b"{}", "more_body": False}])
    assert await read_body(request, 1024) == b"{}"


@pytest.mark.parametrize(
    "body",
    [
        b'{"n": 9007199254740991, "m": -9007199254740991}',
        b'{"s": "9007199254740993", "t": "\\"12345678901234567890\\\\"}',
        b'{"12345678901234567890": [1.5e300, 12345678901234567.25, 9007199254740993e0]}',
        b'[1795386788213894, 1795386788213895, "9007199254740993"]',
    ],
)
async def test_json_with_only_safe_integers_is_read(body: bytes) -> None:
    request = _request([{"type": "http.request", "body": body, "more_body": False}])
    assert await read_json(request, 1024) == orjson.loads(body)


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b'{"n": 9007199254740992}', "9007199254740992"),
        (b'{"s": "x\\\\", "n": [-9007199254740993]}', "-9007199254740993"),
        (b"[" + b"7" * 50 + b"]", "7" * 37 + "..."),
        (b"[1795386788213894, 9007199254740993]", "9007199254740993"),
    ],
)
async def test_json_with_an_integer_beyond_2_53_is_refused_naming_it(
    body: bytes, shown: str
) -> None:
    request = _request([{"type": "http.request", "body": body, "more_body": False}])
    with pytest.raises(InvalidBody, match=rf"the integer {re.escape(shown)} is beyond"):
        await read_json(request, 1024)
