"""The benchmark's load generator: raw HTTP/1.1 over asyncio streams on uvloop.

Why not httpx or aiohttp: the generator must cost far less than the servers it measures.
httpx's connection pool is quadratic in its connections (about 150 requests/s here with 32 of
them), and a general client parses far more than a benchmark needs. This one writes prepared
request bytes and reads exactly what the answers announce (Content-Length, or an event stream
line by line), so one core drives tens of thousands of requests per second; `run.py` measures
that ceiling against a server that does nothing, in the same run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

__all__ = [
    "Connection",
    "EventStreamReader",
    "Latencies",
    "Response",
    "open_event_stream",
    "percentile",
]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


class Latencies:
    """Milliseconds, summarised as p50/p99/max."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def add(self, milliseconds: float) -> None:
        self.values.append(milliseconds)

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.values)
        return {
            "p50_ms": round(percentile(ordered, 0.50), 3),
            "p99_ms": round(percentile(ordered, 0.99), 3),
            "max_ms": round(ordered[-1], 3) if ordered else float("nan"),
        }


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self._authority = parts.netloc
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def prepare(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._authority}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def _head(self) -> tuple[int, dict[str, str]]:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = raw[:-4].decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split(" ", 2)[1]), headers

    async def send(self, request: bytes) -> Response:
        """One prepared request and its whole answer (Content-Length or chunked)."""
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(request)
        status, headers = await self._head()
        if "content-length" in headers:
            body = await self._reader.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding") == "chunked":
            body = await self._chunked()
        else:
            body = b""
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        return await self.send(self.prepare(method, path, headers, body))

    async def stream(self, request: bytes) -> tuple[int, dict[str, str], AsyncIterator[bytes]]:
        """Send a request whose answer is an open-ended stream; its status, headers and lines
        (until the server closes it)."""
        assert self._reader is not None
        assert self._writer is not None
        self._writer.write(request)
        status, headers = await self._head()
        chunked = headers.get("transfer-encoding") == "chunked"
        return status, headers, self._lines(chunked)

    async def _lines(self, chunked: bool) -> AsyncIterator[bytes]:
        assert self._reader is not None
        if not chunked:
            while True:
                try:
                    line = await self._reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                yield line.rstrip(b"\r\n")
        pending = b""
        while True:
            size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            if size == 0:
                return
            pending += await self._reader.readexactly(size)
            await self._reader.readexactly(2)
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r")


class EventStreamReader(asyncio.Protocol):
    """A subscriber that reads an event stream without parsing it line by line: each time bytes
    arrive, everything up to the last complete frame (a blank line) goes to `on_frames` at once,
    chunked-encoding size lines included. Fan-out measurements only look for the payload's
    own fields, and this keeps the generator's cost per delivered event to a regex match (about
    ten times less than iterating lines), so its ceiling sits above the servers it measures."""

    def __init__(self, request: bytes, on_frames: Callable[[bytes], None]) -> None:
        self._request = request
        self._on_frames = on_frames
        self._head = b""
        self._pending = b""
        self._transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.status: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        self._transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if not self.status.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status.set_result(int(self._head.split(b" ", 2)[1]))
            data, self._head = self._head[end + 4 :], b""
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._pending += data
            return
        self._on_frames(self._pending + data[: cut + 2])
        self._pending = data[cut + 2 :]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(exc or ConnectionError("closed before answering"))
        if not self.closed.done():
            self.closed.set_result(None)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


async def open_event_stream(
    base_url: str, request: bytes, on_frames: Callable[[bytes], None]
) -> tuple[int, EventStreamReader]:
    """Connect, send `request`, and return the answer's status and the reader feeding
    `on_frames`."""
    parts = urlsplit(base_url)
    _, reader = await asyncio.get_running_loop().create_connection(
        lambda: EventStreamReader(request, on_frames),
        parts.hostname or "127.0.0.1",
        parts.port or 80,
    )
    return await reader.status, reader


def now_ms() -> float:
    """Wall-clock milliseconds: publishers stamp payloads with it, subscribers subtract it (one
    machine, one clock)."""
    return time.time() * 1000
