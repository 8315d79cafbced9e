"""Dropping a tenant on Redis (standalone and cluster) is complete even when another node (another
RedisEngine) still publishes for it, and when a channel's keys are missing from the tenant's
channel index; it finds the tenant's keys with one pattern that matches nothing else; and one
call is bounded by a deadline, a later call continuing the same SCAN pass where it stopped."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis.asyncio as aioredis

from app.errors import EngineUnavailable
from app.model import ChannelKey
from app.sessions import SessionRecord
from storage.redis import RedisEngine, keys
from tests.contract._support import KEEP_ALL, is_unused, publish_one
from tests.fakes import FakeClock
from tests.harness.redis import RunningCluster, RunningRedis

#: Keys of nobody, so that a SCAN pass takes several calls.
FILLER = 6000


@dataclass(frozen=True)
class _Redis:
    url: str
    cluster: bool
    raw: Any  # a redis-py client, standalone or cluster

    def engine(self, **options: Any) -> RedisEngine:
        return RedisEngine(self.url, 60, cluster=self.cluster, **options)

    async def keys_of(self, tenant: str) -> list[bytes]:
        return [key async for key in self.raw.scan_iter(keys.tenant_pattern(tenant))]


@pytest.fixture(params=["standalone", "cluster"])
async def redis(request: pytest.FixtureRequest) -> AsyncIterator[_Redis]:
    if request.param == "cluster":
        cluster: RunningCluster = request.getfixturevalue("redis_cluster")
        raw: Any = aioredis.RedisCluster.from_url(cluster.url)
        url, is_cluster = cluster.url, True
    else:
        server: RunningRedis = request.getfixturevalue("redis_server")
        raw = aioredis.Redis.from_url(server.url)
        url, is_cluster = server.url, False
    try:
        yield _Redis(url, is_cluster, raw)
    finally:
        await raw.aclose()


def _tenant() -> str:
    return f"drop-{uuid.uuid4().hex}"


async def test_a_node_publishing_after_a_drop_indexes_the_channel_again(redis: _Redis) -> None:
    tenant = _tenant()
    channel = ChannelKey(tenant, "/event/Order__e")
    async with redis.engine() as node_a, redis.engine() as node_b:
        await publish_one(node_a, channel, KEEP_ALL)
        assert await node_b.drop_tenant(tenant) == 1
        await publish_one(node_a, channel, KEEP_ALL)  # node A had indexed it before the drop

        assert await node_b.channel_names(tenant) == [channel.name]
        assert await node_b.drop_tenant(tenant) == 1
        assert is_unused(await node_b.window(channel))


async def test_a_channel_missing_from_the_index_is_dropped_too(redis: _Redis) -> None:
    tenant = _tenant()
    indexed, unindexed = ChannelKey(tenant, "/event/A__e"), ChannelKey(tenant, "/event/B__e")
    kept = ChannelKey(_tenant(), "/event/A__e")
    session = SessionRecord(client_id=uuid.uuid4().hex, tenant=tenant, owner="c")
    async with redis.engine() as engine:
        for key in (indexed, unindexed, kept):
            await publish_one(engine, key, KEEP_ALL)
        assert await engine.stream_admit(tenant, "stream-1", 60_000_000, None)
        assert await engine.rate_take(tenant, 1, 1.0, 10) == 0.0
        assert await engine.session_create(session, 60_000_000, 10)
        await redis.raw.srem(keys.channels_of(tenant), unindexed.name)  # as if never indexed
        assert await redis.keys_of(tenant)

        assert await engine.drop_tenant(tenant) == 2

        assert await redis.keys_of(tenant) == []
        assert await engine.session_get(session.client_id) is None
        assert is_unused(await engine.window(unindexed))
        assert (await engine.window(kept)).count == 1
        assert not await redis.raw.exists(keys.drop_progress(tenant))


async def test_the_pattern_matches_the_tenants_keys_and_no_other(redis: _Redis) -> None:
    tenant = _tenant()
    own = [
        keys.channel_keys(ChannelKey(tenant, "/event/A__e"))[0],
        keys.channels_of(tenant),
        keys.sessions_of(tenant),
    ]
    others = [
        keys.channel_keys(ChannelKey(tenant + "x", "/event/A__e"))[0],  # a longer id
        keys.channels_of(tenant + "x"),
        keys.session_key(tenant),  # rb:{session:<id>}: not a tenant's
        keys.drop_progress(tenant),
        keys.claims_of(tenant),
        keys.family_key(tenant),
    ]
    for key in own + others:
        await redis.raw.set(key, "1")
    try:
        found = {key.decode() for key in await redis.keys_of(tenant)}
    finally:
        await redis.raw.delete(*own, *others)

    assert found == set(own)


async def test_dropping_a_tenant_named_session_keeps_every_bayeux_session(
    redis: _Redis,
) -> None:
    """Session keys are `rb:{session:<clientId>}`: the sweep's pattern must not match them."""
    other = SessionRecord(client_id=uuid.uuid4().hex, tenant=_tenant(), owner="c")
    async with redis.engine() as engine:
        assert await engine.session_create(other, 60_000_000, 10)

        await engine.drop_tenant("session")

        assert await engine.session_get(other.client_id) == other


@pytest.fixture
async def filler(redis: _Redis) -> AsyncIterator[None]:
    names = [f"filler:{uuid.uuid4().hex}" for _ in range(FILLER)]
    for start in range(0, FILLER, 500):
        batch = dict.fromkeys(names[start : start + 500], "1")
        await (redis.raw.mset_nonatomic(batch) if redis.cluster else redis.raw.mset(batch))
    try:
        yield
    finally:
        for start in range(0, FILLER, 500):
            await redis.raw.unlink(*names[start : start + 500])


async def _scan_calls(redis: _Redis, pattern: str) -> int:
    """How many SCAN calls one whole pass takes (over every master)."""
    if not redis.cluster:
        calls, cursor = 0, -1
        while cursor != 0:
            cursor, _ = await redis.raw.scan(max(cursor, 0), match=pattern, count=1000)
            calls += 1
        return calls
    calls = 0
    for node in redis.raw.get_primaries():
        cursor = -1
        while cursor != 0:
            cursors, _ = await redis.raw.scan(
                max(cursor, 0), match=pattern, count=1000, target_nodes=node
            )
            cursor = cursors[node.name]
            calls += 1
    return calls


async def test_a_drop_past_its_deadline_keeps_its_place_and_the_next_call_goes_on(
    redis: _Redis, filler: None
) -> None:
    tenant = _tenant()
    clock = FakeClock()
    channels = [ChannelKey(tenant, f"/event/C{n}__e") for n in range(20)]
    # No time at all: each call takes one step (a SCAN call, or a batch of sessions) and stops.
    async with redis.engine(clock=clock, drop_timeout=0) as engine:
        for key in channels:
            await publish_one(engine, key, KEEP_ALL)
        pass_length = await _scan_calls(redis, keys.tenant_pattern(tenant))
        assert pass_length > 2  # so several calls are needed

        since = clock.now_us()
        calls, unfinished = 0, None
        while True:
            calls += 1
            assert calls <= pass_length + 2, "the drop does not go on where it stopped"
            try:
                await engine.drop_tenant(tenant, since_us=since)
            except EngineUnavailable as error:
                unfinished = error
                clock.advance(1)
                continue
            break
        left = await redis.keys_of(tenant)
        windows = [await engine.window(key) for key in channels]
        progress = await redis.raw.exists(keys.drop_progress(tenant))

    assert unfinished is not None
    assert "send the same request again" in unfinished.message
    assert calls > 2
    assert left == []
    assert len(windows) == len(channels)
    assert all(map(is_unused, windows))
    assert not progress


async def test_a_drop_begun_before_the_given_instant_starts_over(
    redis: _Redis, filler: None
) -> None:
    tenant = _tenant()
    clock = FakeClock()
    progress = keys.drop_progress(tenant)
    async with redis.engine(clock=clock, drop_timeout=0) as engine:
        await publish_one(engine, ChannelKey(tenant, "/event/A__e"), KEEP_ALL)
        begun = clock.now_us()
        with pytest.raises(EngineUnavailable):
            await engine.drop_tenant(tenant, since_us=begun)
        first = await redis.raw.hgetall(progress)
        clock.advance(1)

        with pytest.raises(EngineUnavailable):
            await engine.drop_tenant(tenant, since_us=begun)  # goes on with that pass
        continued = await redis.raw.hgetall(progress)
        with pytest.raises(EngineUnavailable):
            await engine.drop_tenant(tenant, since_us=begun + 1)  # that pass is too old
        restarted = await redis.raw.hgetall(progress)
        await redis.raw.delete(progress)

    assert first[b"started"] == continued[b"started"] == str(begun).encode()
    assert continued != first  # its cursors moved on
    assert restarted[b"started"] == str(begun + 1_000_000).encode()
