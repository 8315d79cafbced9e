"""Expired idempotency keys are forgotten at least as fast as keyed publishes add new ones, so
the idempotency hash stays bounded under steady load (a publish of N events forgets up to 2N)."""

from __future__ import annotations

import redis.asyncio as aioredis

from app.model import ChannelKey
from storage.redis import RedisEngine, keys
from tests.contract._support import IDEMPOTENCY_TTL_S, KEEP_ALL, draft
from tests.fakes import FakeClock
from tests.harness.redis import RunningRedis

ROUNDS = 3
PER_ROUND = 300  # more than the 100 a publish used to forget


async def test_keyed_batches_beyond_the_ttl_leave_only_the_live_keys(
    redis_server: RunningRedis,
) -> None:
    clock = FakeClock()
    key = ChannelKey("idem-bound", "/event/Keyed__e")
    async with RedisEngine(redis_server.url, IDEMPOTENCY_TTL_S, clock) as engine:
        for round_ in range(ROUNDS):
            drafts = [draft(idempotency_key=f"r{round_}-{n}") for n in range(PER_ROUND)]
            await engine.publish(key, drafts, KEEP_ALL)
            clock.advance(IDEMPOTENCY_TTL_S + 1)  # every key so far has expired

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        idem, expiry = keys.channel_keys(key)[2:4]
        assert await client.hlen(idem) == PER_ROUND  # only the last round's keys remain
        assert await client.zcard(expiry) == PER_ROUND
    finally:
        await client.aclose()
