"""A server that does nothing but answer: every POST gets a fixed 201 and its body is sent as
one Server-Sent Event to every open GET. Publishing and fanning out against it measure the
load generator's own ceiling (for fan-out, the ceiling of this server and the generator
together: a lower bound of the generator's)."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import uvloop

_ANSWER = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
_STREAM = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
_subscribers: set[asyncio.Transport] = set()


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        # Requests carry a Content-Length body; count complete ones and answer each. A GET
        # opens an event stream that stays open.
        if data.startswith(b"GET "):
            self._transport.write(_STREAM)
            _subscribers.add(self._transport)
            return
        self._pending += data
        while True:
            end = self._pending.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._pending[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n")[0]) if start >= 0 else 0
            if len(self._pending) < end + 4 + length:
                return
            frame = b"data: " + self._pending[end + 4 : end + 4 + length] + b"\n\n"
            self._pending = self._pending[end + 4 + length :]
            self._transport.write(_ANSWER)
            for subscriber in _subscribers:
                subscriber.write(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        _subscribers.discard(self._transport)


async def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections wait in the backlog until the server accepts them
    print(f"listening on http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    server = await asyncio.get_running_loop().create_server(_Answer, sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main())
