"""A loopback TCP proxy that can hold what clients send while it keeps forwarding what the
server sends back: a client's next request waits at the gate while the server still answers
the one it already has. It lets a test keep a long-polling client from reaching the server
between two of its requests, without pausing the client or the server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from tests.harness.tcp_proxy import TcpProxy, running_proxy

__all__ = ["RequestGate", "request_gate"]


class RequestGate(TcpProxy):
    def __init__(self, target_port: int) -> None:
        super().__init__(target_port)
        self._open: asyncio.Event | None = None  # made on the proxy's own loop

    @property
    def url(self) -> str:
        """The gate's HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """From now on, bytes from clients wait at the gate (on open connections and new
        ones); replies from the server still go through."""
        self._call(lambda: self._open_event().clear())

    def release(self) -> None:
        """Forward the held bytes, in order, and whatever clients send next."""
        self._call(lambda: self._open_event().set())

    def _open_event(self) -> asyncio.Event:
        if self._open is None:
            self._open = asyncio.Event()
            self._open.set()
        return self._open

    async def _through_gate(self, chunk: bytes) -> None:
        await self._open_event().wait()

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        self._start_pipes(
            self._pipe(reader, upstream_writer, self._through_gate),
            self._pipe(upstream_reader, writer),
        )


@contextmanager
def request_gate(target_port: int) -> Iterator[RequestGate]:
    with running_proxy(RequestGate(target_port)) as gate:
        yield gate
