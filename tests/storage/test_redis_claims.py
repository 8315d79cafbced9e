"""On the Redis server's own clock (production: no test clock), a single-use claim is refused
while held, and Redis drops its key when it expires, so claims never pile up."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from storage.redis import RedisEngine, keys
from tests.harness.redis import RunningRedis

TTL_US = 90_000_000


async def test_a_claim_on_the_server_clock_is_held_and_expires_in_redis(
    redis_server: RunningRedis,
) -> None:
    name = uuid.uuid4().hex
    async with RedisEngine(redis_server.url, idempotency_ttl=60) as engine:
        first = await engine.claim_once("refresh", name, TTL_US)
        again = await engine.claim_once("refresh", name, TTL_US)

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        remaining_ms = await client.pttl(keys.claim_key("refresh", name))
        held = await client.get(keys.claim_key("refresh", name))
        server_seconds, server_micros = await client.time()
    finally:
        await client.aclose()
    assert (first, again) == (True, False)
    assert isinstance(held, bytes)
    held_until_us = int(held)
    assert 0 < remaining_ms <= TTL_US // 1000
    now_us = server_seconds * 1_000_000 + server_micros
    assert now_us < held_until_us <= now_us + TTL_US
