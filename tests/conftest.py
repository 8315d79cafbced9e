"""Shared fixtures: real backing services, started once per test session on demand; and the
mark on tests that need the machine to themselves."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from storage.postgres import apply_migrations
from tests.harness.postgres import RunningPostgres, running_postgres
from tests.harness.redis import RunningCluster, RunningRedis, running_redis, running_redis_cluster

#: Directories whose tests start replaybus servers, browsers or load against real processes:
#: `make test` runs them one at a time, after the in-process tests (run two at a time), since
#: what they prove (a neighbour's deliveries every second, clients reconnecting within bounds)
#: needs the machine's cores to itself.
_PROCESS_DIRECTORIES = frozenset({"e2e", "hostile", "fuzz", "browser", "clients", "loadtests"})
_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.relative_to(_TESTS).parts[0] in _PROCESS_DIRECTORIES:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RunningRedis]:
    """A standalone redis-server for the whole session; tests isolate by tenant (key prefix)."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RunningCluster]:
    """A 3-master Redis Cluster for the whole session."""
    with running_redis_cluster(3) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[RunningPostgres]:
    """A PostgreSQL server for the whole session, with the catalog migrations applied."""
    with running_postgres() as server:
        # Possibly requested from inside a running event loop: migrate on a thread's own loop.
        with ThreadPoolExecutor(1) as thread:
            thread.submit(asyncio.run, _migrate(server.url())).result(timeout=60)
        yield server


async def _migrate(url: str) -> None:
    connection = await asyncpg.connect(url)
    try:
        await apply_migrations(connection)
    finally:
        await connection.close()
