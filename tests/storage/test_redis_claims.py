"""On the Redis server's own clock (production: no test clock), single-use state is held while
it lives and Redis drops its keys when it expires, so nothing piles up: one key per refresh
family (however often it is refreshed) and one sorted set per tenant of its assertions. A
refresh token's claim from before families counts as used."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from storage.redis import RedisEngine, keys
from tests.harness.redis import RunningRedis

TTL_US = 90_000_000


@pytest.fixture
async def engine(redis_server: RunningRedis) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(redis_server.url, idempotency_ttl=60) as entered:
        yield entered


@pytest.fixture
async def redis(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def _server_now_us(redis: aioredis.Redis) -> int:
    seconds, micros = await redis.time()
    return int(seconds) * 1_000_000 + int(micros)


async def test_a_family_is_one_key_held_until_its_expiry(
    engine: RedisEngine, redis: aioredis.Redis
) -> None:
    family = uuid.uuid4().hex
    advanced = [await engine.advance_family(family, g, g + 1, TTL_US) for g in range(50)]
    replayed = await engine.advance_family(family, 10, 11, TTL_US)

    held = await redis.get(keys.family_key(family))
    remaining_ms = await redis.pttl(keys.family_key(family))
    now_us = await _server_now_us(redis)

    assert advanced == [True] * 50
    assert replayed is False
    assert isinstance(held, bytes)
    generation, expires = held.split()
    assert int(generation) == 50
    assert now_us < int(expires) <= now_us + TTL_US
    assert 0 < remaining_ms <= TTL_US // 1000


async def test_a_refresh_token_claimed_before_families_stays_used(
    engine: RedisEngine, redis: aioredis.Redis
) -> None:
    token_id = uuid.uuid4().hex  # such a token's family is its jti
    expires = await _server_now_us(redis) + TTL_US
    await redis.set(keys.family_key(token_id), str(expires), px=TTL_US // 1000)

    assert await engine.advance_family(token_id, 0, 1, TTL_US) is False
    assert await engine.advance_family(token_id, 0, -1, TTL_US) is False


async def test_a_tenants_claims_are_one_sorted_set_that_expires(
    engine: RedisEngine, redis: aioredis.Redis
) -> None:
    tenant = f"t{uuid.uuid4().hex[:12]}"
    names = [uuid.uuid4().hex for _ in range(3)]
    claimed = [await engine.claim_once(tenant, name, TTL_US, 10) for name in names]
    again = await engine.claim_once(tenant, names[0], TTL_US, 10)

    members = await redis.zrange(keys.claims_of(tenant), 0, -1)
    remaining_ms = await redis.pttl(keys.claims_of(tenant))

    assert claimed == [True] * 3
    assert again is False
    assert sorted(members) == sorted(name.encode() for name in names)
    assert 0 < remaining_ms <= TTL_US // 1000
