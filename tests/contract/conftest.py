"""Fixtures for the engine contract suite: every test runs once per engine implementation.

To add an implementation, add a factory to `_ENGINES`: an async context manager that yields an
entered engine using the given clock and `IDEMPOTENCY_TTL_S`. Tests isolate themselves by a
fresh tenant, so an engine backed by a shared external store needs no flushing between tests;
only the store's birth marks are forgotten, so each test's store is born at its own clock.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from app.engine import Engine
from app.hub import Hub
from app.model import ChannelKey
from storage.memory import MemoryEngine
from storage.redis import RedisEngine
from tests.contract._support import IDEMPOTENCY_TTL_S
from tests.fakes import FakeClock
from tests.harness.redis import RunningCluster, RunningRedis, forget_birth_marks


@asynccontextmanager
async def _memory_engine(clock: FakeClock) -> AsyncIterator[Engine]:
    async with MemoryEngine(clock, IDEMPOTENCY_TTL_S) as engine:
        yield engine


@asynccontextmanager
async def _redis_engine(clock: FakeClock, request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    server: RunningRedis = request.getfixturevalue("redis_server")
    forget_birth_marks(server)
    async with RedisEngine(server.url, IDEMPOTENCY_TTL_S, clock) as engine:
        yield engine


@asynccontextmanager
async def _redis_cluster_engine(
    clock: FakeClock, request: pytest.FixtureRequest
) -> AsyncIterator[Engine]:
    cluster: RunningCluster = request.getfixturevalue("redis_cluster")
    forget_birth_marks(*cluster.nodes)
    async with RedisEngine(cluster.url, IDEMPOTENCY_TTL_S, clock, cluster=True) as engine:
        yield engine


_ENGINES: dict[
    str, Callable[[FakeClock, pytest.FixtureRequest], AbstractAsyncContextManager[Engine]]
] = {
    "memory": lambda clock, request: _memory_engine(clock),
    "redis": _redis_engine,
    "redis-cluster": _redis_cluster_engine,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=sorted(_ENGINES))
async def engine(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[Engine]:
    async with _ENGINES[request.param](clock, request) as entered:
        yield entered


@pytest.fixture
def tenant() -> str:
    return f"contract-{uuid.uuid4().hex}"


@pytest.fixture
def other_tenant() -> str:
    return f"contract-{uuid.uuid4().hex}"


@pytest.fixture
def channel(tenant: str) -> ChannelKey:
    return ChannelKey(tenant, "/event/Order_Placed__e")


@pytest.fixture
async def hub(engine: Engine) -> AsyncIterator[Hub]:
    async with Hub(engine) as entered:
        yield entered
