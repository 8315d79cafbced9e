"""A raw HTTP/1.1 client on asyncio streams, for the peers' smoke test (a correctness check
with a handful of connections; the bench's load comes from the compiled generator,
loadtests/gen). It writes prepared request bytes and reads exactly what each answer announces
(Content-Length, chunked, or an event stream line by line)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Connection", "Response"]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


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
