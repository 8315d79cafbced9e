"""The Redis engine's start-up against a Redis that is not there: a domain error whose message
names no address (the driver's text, which does, goes to the log only)."""

from __future__ import annotations

import logging

import pytest

from app.errors import EngineUnavailable
from storage.redis import RedisEngine
from tests.harness.redis import free_port


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
async def test_an_unreachable_redis_fails_start_up_with_a_domain_error_naming_no_address(
    cluster: bool, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    engine = RedisEngine(f"redis://127.0.0.1:{port}", 60, cluster=cluster, connect_timeout=1)

    with (
        caplog.at_level(logging.WARNING, logger="replaybus.redis"),
        pytest.raises(EngineUnavailable) as refused,
    ):
        async with engine:
            pass

    assert str(port) not in refused.value.message
    assert "127.0.0.1" not in refused.value.message
    assert any(str(port) in record.getMessage() for record in caplog.records)
