"""Fixtures for the Bayeux server tests: a real memory engine and hub on a fake clock, and
a factory for servers with per-test settings (factories as fixtures)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.access import Principal
from app.bayeux.server import BayeuxServer
from app.hub import Hub
from app.publishing import PublishService
from app.settings import Settings
from storage.memory import MemoryEngine
from tests.bayeux._support import Background, BayeuxClient, CountingEngine, Publisher
from tests.fakes import FakeClock

TENANT = "acme"
CLIENT = "client-1"
FAR_FUTURE = 4_102_444_800.0

ServerFactory = Callable[..., BayeuxServer]
ClientFactory = Callable[..., BayeuxClient]


def principal_of(
    tenant: str = TENANT, client_id: str = CLIENT, user: str | None = None
) -> Principal:
    return Principal(tenant, client_id, frozenset({"subscribe", "publish"}), FAR_FUTURE, user)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def engine(clock: FakeClock) -> AsyncIterator[CountingEngine]:
    """The memory engine, counting its reads (what a test of read costs looks at)."""
    counting = CountingEngine(clock, idempotency_ttl=60)
    async with counting:
        yield counting


@pytest.fixture
async def hub(engine: MemoryEngine) -> AsyncIterator[Hub]:
    async with Hub(engine) as entered:
        yield entered


@pytest.fixture
def draining() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
def principal() -> Principal:
    return principal_of()


@pytest.fixture
def make_server(
    engine: MemoryEngine, hub: Hub, clock: FakeClock, draining: asyncio.Event
) -> ServerFactory:
    """A server with `Settings()` defaults changed by keyword (validated)."""

    def build(**overrides: Any) -> BayeuxServer:
        return BayeuxServer(engine, hub, Settings().replace(**overrides), clock, draining)

    return build


@pytest.fixture
def server(make_server: ServerFactory) -> BayeuxServer:
    return make_server()


@pytest.fixture
def make_client(server: BayeuxServer, principal: Principal) -> ClientFactory:
    def build(
        on: BayeuxServer | None = None,
        principal: Principal | None = principal,
        version: str | None = "58.0",
    ) -> BayeuxClient:
        return BayeuxClient(on if on is not None else server, principal, version)

    return build


@pytest.fixture
def client(make_client: ClientFactory) -> BayeuxClient:
    return make_client()


@pytest.fixture
def publish(engine: MemoryEngine, principal: Principal) -> Publisher:
    return Publisher(PublishService(engine, Settings()), principal)


@pytest.fixture
async def background() -> AsyncIterator[Background]:
    tasks = Background()
    try:
        yield tasks
    finally:
        await tasks.close()
