"""Helpers for the Python client's tests against real `replaybus serve` processes: the admin
API, reading a channel's history, an httpx transport that records every request the client
makes, and a TCP proxy that loses the server's answers."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from tests.e2e.server import RunningServer
from tests.harness.tcp_proxy import TcpProxy, running_proxy

OPERATOR_KEY = "client-tests-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
DEADLINE = 15.0  # seconds any single wait in these tests may take
T = TypeVar("T")


# -- the server's own view ------------------------------------------------------------------


def port_of(server: RunningServer) -> int:
    port = httpx.URL(server.base_url).port
    assert port is not None
    return port


def history(server: RunningServer, channel: str) -> list[dict[str, Any]]:
    """Every retained event of `channel` (the history API, page by page), oldest first."""
    headers = {"Authorization": f"Bearer {server.token()}"}
    events: list[dict[str, Any]] = []
    after = -2
    while True:
        response = httpx.get(
            f"{server.base_url}/v1/events{channel}",
            params={"after": after, "limit": 1000},
            headers=headers,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events.extend(page["events"])
        after = page["next"]


def publish_direct(
    server: RunningServer, channel: str, payloads: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Publish a batch with plain httpx (not the client under test); the acknowledgements."""
    response = httpx.post(
        f"{server.base_url}/v1/events{channel}",
        json=payloads,
        headers={"Authorization": f"Bearer {server.token()}"},
    )
    assert response.status_code == 201, response.text
    acks: list[dict[str, Any]] = response.json()
    return acks


def create_tenant(server: RunningServer, settings: dict[str, Any]) -> str:
    tenant = f"t{uuid.uuid4().hex[:10]}"
    response = httpx.post(
        f"{server.base_url}/v1/admin/tenants",
        json={"tenantId": tenant, "settings": settings},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return tenant


def create_client(server: RunningServer, tenant: str, scopes: list[str]) -> tuple[str, str]:
    """A new OAuth client of `tenant`: (client id, secret)."""
    response = httpx.post(
        f"{server.base_url}/v1/admin/tenants/{tenant}/clients",
        json={"scopes": scopes},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    issued = response.json()
    return str(issued["clientId"]), str(issued["clientSecret"])


def define_channel(server: RunningServer, tenant: str, channel: str, schema: object) -> None:
    response = httpx.put(
        f"{server.base_url}/v1/admin/tenants/{tenant}/channels{channel}",
        json={"schema": schema},
        headers=OPERATOR,
    )
    assert response.status_code in (200, 201), response.text


# -- what the client sends ------------------------------------------------------------------


@dataclass
class Exchange:
    """One HTTP request the client made, and what came of it (a status or a transport error)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    retry_after: str | None = None
    error: str | None = None


@dataclass
class RecordingTransport(httpx.AsyncBaseTransport):
    """Forwards to a real connection pool and records every exchange, failed ones included."""

    exchanges: list[Exchange] = field(default_factory=list)
    inner: httpx.AsyncHTTPTransport = field(default_factory=httpx.AsyncHTTPTransport)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request.method, request.url.path, dict(request.headers))
        self.exchanges.append(exchange)
        try:
            response = await self.inner.handle_async_request(request)
        except httpx.TransportError as error:
            exchange.error = type(error).__name__
            raise
        exchange.status = response.status_code
        exchange.retry_after = response.headers.get("retry-after")
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

    def posts(self, path: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.method == "POST" and e.path == path]


# -- a proxy that loses answers -------------------------------------------------------------


class AnswerLosingProxy(TcpProxy):
    """The harness's TCP proxy, plus: the first `lose` connections are cut the moment the server
    starts answering, so the request was handled but its answer never reaches the client. It
    also counts the `POST /v1/events` requests that pass through it."""

    def __init__(self, target_port: int, lose: int = 0) -> None:
        super().__init__(target_port)
        self.lose = lose
        self.lost = 0
        self.event_posts = 0

    async def _count(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        tail = b""

        async def count(chunk: bytes) -> None:
            nonlocal tail
            # Request lines may straddle two reads: keep the end of the previous one.
            self.event_posts += (tail + chunk).count(b"POST /v1/events/")
            tail = chunk[-32:]

        await self._pipe(reader, writer, count)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        if self.lost >= self.lose:
            self._start_pipes(
                self._count(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
            return
        self.lost += 1
        forward = asyncio.create_task(self._count(reader, upstream_writer))
        with contextlib.suppress(OSError):
            await upstream_reader.read(1)  # the server answers: the request was handled
        writer.transport.abort()
        upstream_writer.transport.abort()
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)


@contextmanager
def answer_losing_proxy(target_port: int, lose: int = 0) -> Iterator[AnswerLosingProxy]:
    """Runs an AnswerLosingProxy on its own loop thread, like `tests.harness.tcp_proxy`."""
    with running_proxy(AnswerLosingProxy(target_port, lose)) as proxy:
        yield proxy


# -- iterating subscribers ------------------------------------------------------------------


async def take(events: AsyncIterator[T], count: int, timeout: float = DEADLINE) -> list[T]:
    """The next `count` items of `events`, failing after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        return [await anext(events) for _ in range(count)]


async def close_iterator(events: AsyncIterator[Any]) -> None:
    """Finish an async generator now (its open HTTP stream included), not when it is collected."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll a cheap condition of another process (the wall clock, a file) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)
