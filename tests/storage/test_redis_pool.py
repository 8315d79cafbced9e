"""More concurrent engine calls than Redis connections: callers wait for a connection instead of
failing (redis-py's default pool raised MaxConnectionsError beyond its size, a 503 under load)."""

from __future__ import annotations

import asyncio

from app.model import ChannelKey
from storage.redis import RedisEngine
from tests.contract._support import KEEP_ALL, draft
from tests.harness.redis import RunningRedis


async def test_more_concurrent_calls_than_connections_all_succeed(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey("pool-test", "/event/Pool__e")
    async with RedisEngine(redis_server.url, 60, max_connections=4) as engine:
        acks = await asyncio.gather(
            *(engine.publish(key, [draft({"n": n})], KEEP_ALL) for n in range(200))
        )
        windows = await asyncio.gather(*(engine.window(key) for _ in range(200)))

    assert len({ack.replay_id for [ack] in acks}) == 200
    assert {window.count for window in windows} == {200}
