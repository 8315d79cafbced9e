"""Measure Redis memory per retained event: publish N events of a given payload size through the
Redis engine into a fresh redis-server, and compare `used_memory` before and after.

    .venv/bin/python scripts/measure_redis_memory.py [--events 100000] [--payload 200]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from pathlib import Path

import orjson
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.model import ChannelKey, EventDraft, Retention
from storage.redis import RedisEngine
from tests.harness.redis import running_redis


async def measure(url: str, events: int, payload_size: int) -> tuple[int, int]:
    client = aioredis.Redis.from_url(url)
    before = int((await client.info("memory"))["used_memory"])
    payload = orjson.dumps({"text": "x" * max(0, payload_size - 11)})
    retention = Retention(max_age_us=72 * 3600 * 1_000_000, max_count=events)
    async with RedisEngine(url, idempotency_ttl=86400) as engine:
        key = ChannelKey("measure", "/event/Memory__e")
        for start in range(0, events, 500):
            batch = [
                EventDraft(uuid=str(uuid.uuid4()), payload=payload, created_by="rb_measure")
                for _ in range(min(500, events - start))
            ]
            await engine.publish(key, batch, retention)
            print(f"\r{start + len(batch)}/{events} events", end="", file=sys.stderr)
    print(file=sys.stderr)
    after = int((await client.info("memory"))["used_memory"])
    await client.aclose()
    return after - before, len(payload)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--payload", type=int, default=200, help="payload bytes (JSON)")
    arguments = parser.parse_args()
    with running_redis() as server:
        used, payload = asyncio.run(measure(server.url, arguments.events, arguments.payload))
    print(
        f"{arguments.events} events, payload {payload} B: {used / arguments.events:.0f} B of "
        f"Redis memory per retained event ({used / arguments.events - payload:.0f} B overhead)"
    )


if __name__ == "__main__":
    main()
