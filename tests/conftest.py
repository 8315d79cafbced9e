"""Shared fixtures: real backing services, started once per test session on demand."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.redis import RunningRedis, running_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RunningRedis]:
    """A standalone redis-server for the whole session; tests isolate by tenant (key prefix)."""
    with running_redis() as server:
        yield server
