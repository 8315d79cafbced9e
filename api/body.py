"""Reading request bodies within a size limit and a deadline."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ClientGone, MalformedJson, RequestTimeout, RequestTooLarge

__all__ = ["BodyDeadlineMiddleware", "read_body", "read_json"]

#: The scope key holding (event-loop time by which the body must have arrived, seconds allowed).
_DEADLINE = "replaybus.body_deadline"


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
    deadline, allowed = request.scope.get(_DEADLINE, (None, None))
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestTooLarge(f"the request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending its request") from None
    except TimeoutError:
        raise RequestTimeout(
            f"the request body did not arrive within {allowed:g} s of its headers "
            f"({size} bytes came in time)"
        ) from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        raise MalformedJson("the request body is empty: send a JSON object or array")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedJson(f"the request body is not valid JSON: {error}") from None
