"""What a budgeted read loads inside Redis: every XRANGE of the read script is sized from the
bytes the page has left, so a page of large events never loads many more than it returns.
Observed with MONITOR, which lists the commands a script runs, with their arguments."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.model import ChannelKey, EventDraft
from storage.redis import RedisEngine, keys
from tests.contract._support import KEEP_ALL, WAIT_S
from tests.harness.redis import RunningRedis

KIB = 1024


@pytest.fixture
async def engine(redis_server: RunningRedis) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(redis_server.url, 60) as entered:
        yield entered


@pytest.fixture
def channel() -> ChannelKey:
    return ChannelKey(f"reads-{uuid.uuid4().hex}", "/event/Sized__e")


async def publish_sized(engine: RedisEngine, channel: ChannelKey, sizes: list[int]) -> None:
    """One event per size, each payload exactly that many bytes."""
    drafts = [
        EventDraft(str(n), b'{"p":"' + b"x" * (size - 8) + b'"}', "test")
        for n, size in enumerate(sizes)
    ]
    await engine.publish(channel, drafts, KEEP_ALL)


def _entry_id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


async def read_observed(
    redis_server: RunningRedis, engine: RedisEngine, channel: ChannelKey, max_bytes: int
) -> tuple[int, int]:
    """One read of up to 1000 events from the start of `channel` within `max_bytes`: how many
    events it returned, and how many stream entries its XRANGEs loaded."""
    stream = keys.channel_keys(channel)[0]
    marker = f"end-of-read-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    reads: list[tuple[tuple[int, int], int]] = []  # (after which entry, COUNT)
    try:
        async with client.monitor() as monitor:
            page = await engine.read(channel, 0, 1000, max_bytes)
            await client.echo(marker)
            end = f"ECHO {marker}"
            async with asyncio.timeout(WAIT_S):
                while (command := (await monitor.next_command())["command"]) != end:
                    words = command.split(" ")
                    # The page's own reads: after a position, up to the newest entry.
                    if words[:2] == ["XRANGE", stream] and words[2].startswith("("):
                        assert words[3:5] == ["+", "COUNT"], command
                        reads.append((_entry_id(words[2][1:]), int(words[5])))
        stored = [_entry_id(str(entry_id)) for entry_id, _ in await client.xrange(stream) or []]
    finally:
        await client.aclose()
    loaded = sum(min(count, sum(1 for i in stored if i > after)) for after, count in reads)
    return len(page.events), loaded


async def test_a_page_of_large_events_loads_only_what_it_returns(
    redis_server: RunningRedis, engine: RedisEngine, channel: ChannelKey
) -> None:
    await publish_sized(engine, channel, [200 * KIB] * 20)

    returned, loaded = await read_observed(redis_server, engine, channel, 64 * KIB)

    # The first entry always comes; with the budget then used up, nothing more is loaded
    # (a first chunk of 16 would load 3.2 MB for a 64 KiB page).
    assert (returned, loaded) == (1, 1)


async def test_a_page_of_even_sized_events_loads_at_most_one_entry_it_does_not_return(
    redis_server: RunningRedis, engine: RedisEngine, channel: ChannelKey
) -> None:
    await publish_sized(engine, channel, [1000] * 300)

    returned, loaded = await read_observed(redis_server, engine, channel, 100 * 1000)

    assert returned == 100
    assert loaded <= returned + 1


async def test_larger_events_after_small_ones_load_at_most_twice_what_the_page_returns(
    redis_server: RunningRedis, engine: RedisEngine, channel: ChannelKey
) -> None:
    """Chunks grow at most twofold, so entries whose size the average did not predict cost at
    most as many again as the page holds."""
    await publish_sized(engine, channel, [100] * 40 + [100 * KIB] * 100)

    returned, loaded = await read_observed(redis_server, engine, channel, 200 * KIB)

    assert returned == 41  # the small ones and one large one: a second is over the budget
    assert loaded <= 2 * returned + 1
