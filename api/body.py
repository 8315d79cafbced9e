"""Reading request bodies within a size limit."""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from app.errors import ClientGone, MalformedJson, RequestTooLarge

__all__ = ["read_body", "read_json"]


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (before reading it all) anything over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and re.fullmatch(r"[0-9]{1,18}", declared) and int(declared) > limit:
        raise RequestTooLarge(f"the request body is {declared} bytes; the limit is {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise RequestTooLarge(f"the request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client disconnected while sending its request") from None
    return b"".join(chunks)


async def read_json(request: Request, limit: int) -> Any:
    body = await read_body(request, limit)
    if not body.strip():
        raise MalformedJson("the request body is empty: send a JSON object or array")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise MalformedJson(f"the request body is not valid JSON: {error}") from None
