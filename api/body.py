"""Reading request bodies within a size limit and a deadline."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ClientGone, InvalidBody, MalformedJson, RequestTimeout, RequestTooLarge

__all__ = ["BodyDeadlineMiddleware", "body_late", "read_body", "read_json", "server_keeps_deadline"]

#: The scope key holding (event-loop time by which the body must have arrived, seconds allowed).
_DEADLINE = "replaybus.body_deadline"
#: The scope key saying the server itself keeps the body deadline (`api.server`), and the one
#: it sets when the deadline passed with the body still incomplete.
_KEPT_BY_SERVER = "replaybus.body_deadline_kept"
_LATE = "replaybus.body_late"


def server_keeps_deadline(scope: Scope) -> None:
    """The server calls this before the app sees the request when it will call `body_late`
    (then waking the app's pending `receive`) once the body deadline passes: `read_body` then
    arms no timer of its own, which costs a timer per request."""
    scope[_KEPT_BY_SERVER] = True


def body_late(scope: Scope) -> None:
    """The body deadline passed with the body incomplete: `read_body` refuses it now."""
    scope[_LATE] = True


class BodyDeadlineMiddleware:
    """Gives every HTTP request `timeout` seconds from its headers to deliver its body (which
    `read_body` enforces; the server closes the connection of a body nobody reads)."""

    def __init__(self, app: ASGIApp, timeout: float) -> None:
        self._app = app
        self._timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            deadline = asyncio.get_running_loop().time() + self._timeout
            scope[_DEADLINE] = (deadline, self._timeout)
        await self._app(scope, receive, send)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (before reading it all) anything over `limit` bytes, and
    RequestTimeout when it has not all arrived by the request's deadline."""
    declared = request.headers.get("content-length")
    if declared is not None and re.fullmatch(r"[0-9]{1,18}", declared) and int(declared) > limit:
        raise RequestTooLarge(f"the request body is {declared} bytes; the limit is {limit} bytes")
    scope = request.scope
    deadline, allowed = scope.get(_DEADLINE, (None, None))
    chunks: list[bytes] = []
    size = 0

    def late() -> RequestTimeout:
        return RequestTimeout(
            f"the request body did not arrive within {allowed:g} s of its headers "
            f"({size} bytes came in time)"
        )

    # Where the server keeps the deadline it marks the request late and wakes the pending
    # receive; elsewhere (in process, other servers) a timer of the request's own does.
    kept_by_server = scope.get(_KEPT_BY_SERVER, False)
    receive = request.receive
    try:
        async with asyncio.timeout_at(None if kept_by_server else deadline):
            while True:
                message = await receive()
                if scope.get(_LATE):
                    raise late()
                if message["type"] == "http.disconnect":
                    raise ClientGone("the client disconnected while sending its request")
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"the request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        raise late() from None


async def read_json(request: Request, limit: int) -> Any:
    """The body decoded as JSON: MalformedJson if it is not, InvalidBody if it holds an integer
    beyond ±(2^53 - 1), which would not come back as it was sent."""
    body = await read_body(request, limit)
    if not body.strip():
        raise MalformedJson("the request body is empty: send a JSON object or array")
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedJson(f"the request body is not valid JSON: {error}") from None
    _refuse_unsafe_integers(body)
    return document


_MAX_SAFE_INTEGER = 2**53 - 1
_DIGITS_AS_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)


class _UnsafeInteger(ValueError):
    pass


def _safe_integer(text: str) -> int:
    """The parser's hook for integer literals: refuses an unsafe one (the document it builds
    is thrown away, so the value returned does not matter)."""
    digits = text.lstrip("-")  # JSON allows no leading zeros, so 17 digits are too many
    if len(digits) > 16 or int(digits) > _MAX_SAFE_INTEGER:
        raise _UnsafeInteger(text if len(text) <= 40 else text[:37] + "...")
    return 0


def _refuse_unsafe_integers(body: bytes) -> None:
    """InvalidBody for an integer beyond ±(2^53 - 1) in a (valid JSON) body: orjson turns
    those beyond 64 bits into floats, and JavaScript readers (browsers, Node.js, CometD
    clients) read every number as a double, so the event delivered would not be the one sent.

    One pass over the body finds no run of 17 digits, nor one of 16 beyond the limit (2^53 has
    16), in nearly every body; only a body with one is parsed again, by a parser that shows each
    integer as written (and tells numbers from digits inside strings)."""
    zeros = body.translate(_DIGITS_AS_ZEROS)
    if zeros.find(b"0" * 17) < 0:
        start = zeros.find(b"0" * 16)
        while start >= 0 and int(body[start : start + 16]) <= _MAX_SAFE_INTEGER:
            start = zeros.find(b"0" * 16, start + 16)
        if start < 0:
            return
    try:
        json.loads(body, parse_int=_safe_integer)
    except _UnsafeInteger as unsafe:
        raise InvalidBody(
            f"the integer {unsafe} is beyond ±{_MAX_SAFE_INTEGER} (2^53 - 1), so JSON readers "
            "such as JavaScript's may not see its exact value: send it as a string"
        ) from None
    except RecursionError:
        raise InvalidBody(
            "the body is nested too deeply to check its numbers: flatten it"
        ) from None
