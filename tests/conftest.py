"""Shared fixtures: real backing services, started once per test session on demand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.redis import RunningCluster, RunningRedis, running_redis, running_redis_cluster


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
