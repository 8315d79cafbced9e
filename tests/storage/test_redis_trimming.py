"""What only the Redis engine does when trimming: besides the count bound every engine keeps
(`app.engine.TRIM_STEP`, which the engine hands its script), one script call stops once it has
walked about 8 MiB of entries (`TRIM_BYTES` in storage/redis/scripts/engine.lua), and loads
little more than that: each XRANGE asks for what the bytes left hold. Reading a window does not
load the oldest entry each time. The entries a call loads are counted from Redis's MONITOR, which
lists every command a script runs."""

from __future__ import annotations

import math
import uuid
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from app.engine import TRIM_STEP
from app.model import ChannelKey, EventDraft, Retention, Window
from storage.redis import RedisEngine, keys
from storage.redis import engine as engine_module
from tests.contract._support import KEEP_ALL
from tests.harness.redis import RunningRedis

TRIM_BYTES = 8 * 1024 * 1024
EVENT_BYTES = 512 * 1024
#: The walk stops at the entry that reaches the byte bound; an entry is a little larger than its
#: payload, so this many reach it.
PER_CALL = math.ceil(TRIM_BYTES / EVENT_BYTES)


def _event(size: int = EVENT_BYTES) -> EventDraft:
    return EventDraft(uuid=str(uuid.uuid4()), payload=b"x" * size, created_by="test")


async def _xranges_during(url: str, action: Callable[[], Awaitable[object]]) -> list[int]:
    """The COUNT of every XRANGE the engine's scripts ran while `action` ran: the most entries
    each one could load."""
    marker = f"end-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(url)
    try:
        async with client.monitor() as monitor:
            await action()
            await client.echo(marker)  # seen by MONITOR after everything the action ran
            counts = []
            while marker not in (seen := await monitor.next_command())["command"]:
                words = seen["command"].split()
                if seen["client_type"] == "lua" and words[0] == "XRANGE":
                    counts.append(int(words[words.index("COUNT") + 1]))
            return counts
    finally:
        await client.aclose()


async def test_trimming_large_events_walks_a_bounded_number_of_bytes_per_call(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Large__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        ids = [(await engine.publish(key, [_event()], KEEP_ALL))[0].replay_id for _ in range(80)]
        [last] = await engine.publish(key, [_event()], Retention(KEEP_ALL.max_age_us, 1))
        ids.append(last.replay_id)
        windows = [await engine.window(key) for _ in range(5)]

    assert PER_CALL < TRIM_STEP  # so it is the bytes that bound these calls
    # The publish evicted PER_CALL entries, each window call PER_CALL more, until one is left.
    evicted = [min(len(ids) - 1, PER_CALL * calls) for calls in range(2, 7)]
    assert windows == [Window(ids[n], ids[-1], ids[n - 1], len(ids) - n) for n in evicted]
    assert windows[-1].count == 1


async def test_trimming_large_events_loads_no_more_than_the_byte_bound(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Large__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        for _ in range(80):
            await engine.publish(key, [_event()], KEEP_ALL)

        asked = await _xranges_during(
            redis_server.url,
            lambda: engine.publish(key, [_event()], Retention(KEEP_ALL.max_age_us, 1)),
        )
        window = await engine.window(key)

    # 80 entries to evict; the walk asks for 1, 2, 4, ... as the bytes left allow, and stops
    # at the entry that reaches the bound: it loads exactly what it evicts.
    assert sum(asked) == PER_CALL
    assert asked[0] == 1
    assert window.count == 81 - 2 * PER_CALL  # the window's own read evicted as many again


async def test_reading_a_window_does_not_load_the_oldest_entry_each_time(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Large__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        acks = [(await engine.publish(key, [_event()], KEEP_ALL))[0] for _ in range(3)]

        async def windows() -> list[Window]:
            return [await engine.window(key) for _ in range(5)]

        first_reads = await _xranges_during(redis_server.url, windows)
        later_reads = await _xranges_during(redis_server.url, windows)
        windows_now = await windows()

    # The first read looks once for expired entries and for the oldest, then keeps the latter.
    assert first_reads == [1, 1]
    assert later_reads == []
    assert {w.earliest for w in windows_now} == {acks[0].replay_id}


async def test_the_earliest_is_found_again_after_evictions_and_for_data_without_it(
    redis_server: RunningRedis,
) -> None:
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Small__e")
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        async with RedisEngine(redis_server.url, 60) as engine:
            acks = [(await engine.publish(key, [_event(10)], KEEP_ALL))[0] for _ in range(5)]
            assert (await engine.window(key)).earliest == acks[0].replay_id
            [newest] = await engine.publish(key, [_event(10)], Retention(KEEP_ALL.max_age_us, 3))
            after_eviction = await engine.window(key)
            # As stored before the earliest was kept in the meta hash.
            await raw.hdel(keys.channel_keys(key)[1], "earliest")
            legacy = await engine.window(key)
    finally:
        await raw.aclose()

    assert after_eviction == Window(acks[3].replay_id, newest.replay_id, acks[2].replay_id, 3)
    assert legacy == after_eviction


async def test_the_script_evicts_at_most_the_engines_trim_step(
    redis_server: RunningRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "TRIM_STEP", 3)
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Small__e")
    async with RedisEngine(redis_server.url, 60) as engine:
        await engine.publish(key, [_event(10) for _ in range(10)], KEEP_ALL)
        await engine.publish(key, [_event(10)], Retention(KEEP_ALL.max_age_us, 1))
        counts = [(await engine.window(key)).count for _ in range(3)]

    assert counts == [5, 2, 1]  # 11 events: 3 evicted per call until one is left


async def test_an_eviction_that_left_the_kept_earliest_behind_is_noticed(
    redis_server: RunningRedis,
) -> None:
    """A node still running the previous script (a rolling upgrade) evicts without dropping the
    kept earliest; the low-water mark it raises shows the kept value is out of date."""
    key = ChannelKey(f"trim-{uuid.uuid4().hex}", "/event/Small__e")
    stream, meta = keys.channel_keys(key)[:2]
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        async with RedisEngine(redis_server.url, 60) as engine:
            acks = [(await engine.publish(key, [_event(10)], KEEP_ALL))[0] for _ in range(4)]
            assert (await engine.window(key)).earliest == acks[0].replay_id
            # What the previous script's trim did to evict the two oldest.
            second = acks[1].replay_id
            minid = f"{(second + 1) // 1000}-{(second + 1) % 1000}"
            await raw.xtrim(stream, minid=minid, approximate=False)
            await raw.hset(meta, "low", str(second))
            window = await engine.window(key)
    finally:
        await raw.aclose()

    assert window == Window(acks[2].replay_id, acks[3].replay_id, second, 2)
