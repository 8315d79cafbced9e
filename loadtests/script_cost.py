"""What one engine script call costs Redis: `python -m loadtests.script_cost --redis-url URL`.

Publishes `--calls` single events to a fresh channel one at a time, then reads ten events as
many times, and prints Redis's own `usec_per_call` for EVALSHA from `INFO commandstats` (reset
first): time spent inside Redis, which the client's speed and the machine's other load touch
far less than a round trip. Point it at a Redis of its own: it resets that server's stats.
"""

from __future__ import annotations

import argparse
import asyncio
import uuid

import redis.asyncio as aioredis

from app.model import ChannelKey, EventDraft, Retention
from storage.redis import RedisEngine

_RETENTION = Retention(max_age_us=3600 * 1_000_000, max_count=100_000)


async def _measure(url: str, calls: int) -> dict[str, float]:
    key = ChannelKey(f"cost-{uuid.uuid4().hex[:8]}", "/event/Cost__e")
    costs: dict[str, float] = {}
    stats = aioredis.Redis.from_url(url, socket_timeout=10)
    try:
        async with RedisEngine(url, 60) as engine:
            for phase in ("publish", "read"):
                await stats.config_resetstat()
                for n in range(calls):
                    if phase == "publish":
                        draft = EventDraft(uuid.uuid4().hex, b'{"n":%d}' % n, "cost")
                        await engine.publish(key, [draft], _RETENTION)
                    else:
                        await engine.read(key, 0, 10, 1 << 20)
                commands = await stats.info("commandstats")
                costs[phase] = float(commands["cmdstat_evalsha"]["usec_per_call"])
    finally:
        await stats.aclose()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument(
        "--calls", type=int, default=3000, choices=range(1, 100_001), metavar="1..100000"
    )
    arguments = parser.parse_args()
    costs = asyncio.run(_measure(arguments.redis_url, arguments.calls))
    for phase, usec in costs.items():
        print(f"{phase}: {usec:.1f} µs of Redis time per script call")


if __name__ == "__main__":
    main()
