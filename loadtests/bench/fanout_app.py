"""Starlette fanning POSTed bodies out to event streams, on the same stack as replaybus
(uvicorn, uvloop, httptools): each subscriber has its own bounded asyncio queue, and is served
either by a bare StreamingResponse (`GET /stream`) or by sse-starlette's EventSourceResponse
(`GET /sse-starlette`). No engine, no history: what each response class costs to hold a
stream open and to write events, so replaybus's own stream can be chosen against them by
measurement. A subscriber whose queue is full loses the event (the bench counts it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from loadtests.bench.bare_app import serve

_QUEUE = 10_000  # events per subscriber, about 2 MB of the bench's payloads
_subscribers: set[asyncio.Queue[bytes]] = set()


async def publish(request: Request) -> Response:
    body = await request.body()
    for queue in _subscribers:
        if queue.qsize() < _QUEUE:
            queue.put_nowait(body)
    return Response(b"{}", 201, media_type="application/json")


async def _bodies() -> AsyncIterator[bytes]:
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    _subscribers.add(queue)
    try:
        while True:
            yield await queue.get()
    finally:
        _subscribers.discard(queue)


async def _frames() -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    async for body in _bodies():
        yield b"data: " + body + b"\n\n"


async def stream(request: Request) -> Response:
    return StreamingResponse(_frames(), media_type="text/event-stream")


async def _events() -> AsyncIterator[ServerSentEvent]:
    async for body in _bodies():
        yield ServerSentEvent(data=body.decode())


async def sse_starlette(request: Request) -> Response:
    return EventSourceResponse(_events())


app = Starlette(
    routes=[
        Route("/v1/events/{channel:path}", publish, methods=["POST"]),
        Route("/stream", stream, methods=["GET"]),
        Route("/sse-starlette", sse_starlette, methods=["GET"]),
    ]
)

if __name__ == "__main__":
    serve(app)
