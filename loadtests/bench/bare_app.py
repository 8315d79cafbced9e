"""A bare Starlette JSON POST endpoint on the same server stack as replaybus (uvicorn, uvloop,
httptools, orjson): what publishing costs with no engine behind it; and a bare event stream
(a StreamingResponse held open), what an idle SSE connection costs that stack itself."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


async def publish(request: Request) -> Response:
    payload = orjson.loads(await request.body())
    body = orjson.dumps({"channel": request.path_params["channel"], "received": len(payload)})
    return Response(body, 201, media_type="application/json")


_forever = asyncio.Event()


async def _idle_stream() -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    await _forever.wait()


async def stream(request: Request) -> Response:
    return StreamingResponse(_idle_stream(), media_type="text/event-stream")


app = Starlette(
    routes=[
        Route("/v1/events/{channel:path}", publish, methods=["POST"]),
        Route("/stream", stream, methods=["GET"]),
    ]
)


def serve(asgi_app: Starlette) -> None:
    """Serve on a free loopback port on the same stack as replaybus, printing its address."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections wait in the backlog until the server accepts them
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(
        asgi_app, loop="uvloop", http="httptools", access_log=False, log_level="warning"
    )
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    serve(app)
