"""Dropping a tenant on Redis is complete even when another node (another RedisEngine) still
publishes for it, and when a channel's keys are missing from the tenant's channel index."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.model import ChannelKey, Window
from app.sessions import SessionRecord
from storage.redis import RedisEngine, keys
from tests.contract._support import KEEP_ALL, publish_one
from tests.harness.redis import RunningRedis


@pytest.fixture
async def raw(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def _keys_of(raw: aioredis.Redis, tenant: str) -> list[bytes]:
    return [key for pattern in keys.tenant_patterns(tenant) async for key in raw.scan_iter(pattern)]


async def test_a_node_publishing_after_a_drop_indexes_the_channel_again(
    redis_server: RunningRedis,
) -> None:
    tenant = f"drop-{uuid.uuid4().hex}"
    channel = ChannelKey(tenant, "/event/Order__e")
    async with (
        RedisEngine(redis_server.url, 60) as node_a,
        RedisEngine(redis_server.url, 60) as node_b,
    ):
        await publish_one(node_a, channel, KEEP_ALL)
        assert await node_b.drop_tenant(tenant) == 1
        await publish_one(node_a, channel, KEEP_ALL)  # node A had indexed it before the drop

        assert await node_b.channel_names(tenant) == [channel.name]
        assert await node_b.drop_tenant(tenant) == 1
        assert await node_b.window(channel) == Window.empty()


async def test_a_channel_missing_from_the_index_is_dropped_too(
    redis_server: RunningRedis, raw: aioredis.Redis
) -> None:
    tenant = f"drop-{uuid.uuid4().hex}"
    indexed, unindexed = ChannelKey(tenant, "/event/A__e"), ChannelKey(tenant, "/event/B__e")
    kept = ChannelKey(f"drop-{uuid.uuid4().hex}", "/event/A__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        for key in (indexed, unindexed, kept):
            await publish_one(engine, key, KEEP_ALL)
        assert await engine.stream_admit(tenant, "stream-1", 60_000_000, None)
        assert await engine.rate_take(tenant, 1, 1.0, 10) == 0.0
        await raw.srem(keys.channels_of(tenant), unindexed.name)  # as if indexing never happened
        assert await _keys_of(raw, tenant)

        assert await engine.drop_tenant(tenant) == 2

        assert await _keys_of(raw, tenant) == []
        assert await engine.window(unindexed) == Window.empty()
        assert (await engine.window(kept)).count == 1


async def test_dropping_a_tenant_named_session_keeps_every_bayeux_session(
    redis_server: RunningRedis,
) -> None:
    """Session keys are `rb:{session:<clientId>}`: the sweep's patterns must not match them."""
    other = SessionRecord(client_id=uuid.uuid4().hex, tenant=f"t-{uuid.uuid4().hex}", owner="c")
    async with RedisEngine(redis_server.url, 60) as engine:
        assert await engine.session_create(other, 60_000_000, 10)

        await engine.drop_tenant("session")

        assert await engine.session_get(other.client_id) == other
