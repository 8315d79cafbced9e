"""Bayeux session changes on Redis from the node that made the last one: one script call,
no other node told; a change another node made meanwhile is never lost, and is reported."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.sessions import SessionChange, SessionRecord
from storage.redis import RedisEngine
from tests.harness.redis import RunningRedis

TTL_US = 60_000_000
A, B = "/event/A__e", "/event/B__e"


@pytest.fixture
async def nodes(redis_server: RunningRedis) -> AsyncIterator[tuple[RedisEngine, RedisEngine]]:
    async with (
        RedisEngine(redis_server.url, idempotency_ttl=60) as first,
        RedisEngine(redis_server.url, idempotency_ttl=60) as second,
    ):
        yield first, second


@pytest.fixture
async def redis(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _calls(redis: aioredis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {name: int(entry["calls"]) for name, entry in stats.items() if name != "cmdstat_info"}


async def _created(engine: RedisEngine) -> SessionRecord:
    record = SessionRecord(
        client_id=uuid.uuid4().hex, tenant=f"t-{uuid.uuid4().hex}", owner="o", subscriptions={A: 1}
    )
    assert await engine.session_create(record, TTL_US, 100)
    return record


async def test_a_connect_after_this_nodes_own_change_is_one_script_call(
    nodes: tuple[RedisEngine, RedisEngine], redis: aioredis.Redis
) -> None:
    first, _ = nodes
    record = await _created(first)
    # The first call loads the script and opens a connection.
    await first.session_connect(record.client_id, SessionChange(new_generation=True), TTL_US)
    before = await _calls(redis)

    claimed = await first.session_connect(
        record.client_id, SessionChange(new_generation=True, advance={A: 7}), TTL_US
    )

    after = await _calls(redis)
    spent = {name: after[name] - before.get(name, 0) for name in after}
    assert claimed is not None
    assert (claimed[0].generation, claimed[0].positions, claimed[1]) == (2, {A: 7}, False)
    # The script and what it runs inside: read, compare, write, index.
    assert {name: n for name, n in spent.items() if n} == {
        "cmdstat_evalsha": 1,
        "cmdstat_get": 1,
        "cmdstat_set": 1,
        "cmdstat_zadd": 1,
    }


async def test_reading_back_this_nodes_own_change_keeps_the_next_connect_uncontended(
    nodes: tuple[RedisEngine, RedisEngine],
) -> None:
    first, _ = nodes
    record = await _created(first)
    await first.session_connect(record.client_id, SessionChange(new_generation=True), TTL_US)

    assert await first.session_get(record.client_id) is not None
    claimed = await first.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )

    assert claimed is not None
    assert claimed[1] is False  # no other node can hold a connect of it: none is signalled


async def test_a_change_another_node_made_meanwhile_is_kept_and_reported(
    nodes: tuple[RedisEngine, RedisEngine],
) -> None:
    first, second = nodes
    record = await _created(first)
    await first.session_connect(record.client_id, SessionChange(new_generation=True), TTL_US)
    await second.session_update(record.client_id, SessionChange(subscribe={B: 2}), TTL_US)

    claimed = await first.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )
    again = await first.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )

    assert claimed is not None
    assert again is not None
    assert (claimed[0].subscriptions, claimed[0].generation, claimed[1]) == ({A: 1, B: 2}, 2, True)
    assert (again[0].generation, again[1]) == (3, False)
    assert await second.session_get(record.client_id) == again[0]


async def test_a_session_only_read_here_is_reported_as_changed_elsewhere(
    nodes: tuple[RedisEngine, RedisEngine],
) -> None:
    first, second = nodes
    record = await _created(first)
    assert await second.session_get(record.client_id) == record

    claimed = await second.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )

    assert claimed is not None
    assert claimed[1] is True


async def test_a_session_another_node_deleted_is_gone_though_known_here(
    nodes: tuple[RedisEngine, RedisEngine],
) -> None:
    first, second = nodes
    record = await _created(first)
    await second.session_delete(record.client_id)

    claimed = await first.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )

    assert claimed is None
    assert first.session_cached(record.client_id) is None


async def test_a_change_stored_for_a_superseded_connect_leaves_the_next_contended(
    nodes: tuple[RedisEngine, RedisEngine],
) -> None:
    first, second = nodes
    record = await _created(first)
    await first.session_connect(record.client_id, SessionChange(new_generation=True), TTL_US)
    # A connect on the other node supersedes the first node's, which then stores its reply.
    await second.session_connect(record.client_id, SessionChange(new_generation=True), TTL_US)
    await first.session_update(
        record.client_id, SessionChange(connected=True, if_generation=1), TTL_US
    )

    claimed = await first.session_connect(
        record.client_id, SessionChange(new_generation=True), TTL_US
    )

    assert claimed is not None
    assert (claimed[0].generation, claimed[1]) == (3, True)
