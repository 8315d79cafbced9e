"""A server that answers every request with a fixed 201 and does nothing else: publishing
against it measures the load generator's own ceiling."""

from __future__ import annotations

import asyncio
import socket
from typing import cast

import uvloop

_ANSWER = b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class _Answer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._pending = b""

    def data_received(self, data: bytes) -> None:
        # Requests carry a Content-Length body; count complete ones and answer each.
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
            self._pending = self._pending[end + 4 + length :]
            self._transport.write(_ANSWER)


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
