"""The Redis live feed after its connection comes back: it re-reads what each channel missed, up
to a bound, and past the bound (or on a tenant's wildcard channel, which has no stream to re-read,
or when retention evicted some of it) tells the listener it missed events instead of loading an
unbounded backlog or skipping a hole. Wildcard listeners cost other tenants nothing: no Redis
pattern subscription is made for them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from app.hub import Hub
from app.model import ChannelKey, Retention, Topic
from app.recovery import Gap
from app.streaming import open_stream
from storage.redis import RedisEngine
from tests.contract._support import (
    KEEP_ALL,
    Recorder,
    assert_nothing_more,
    collect,
    flatten,
    publish_one,
)
from tests.harness.redis import RunningRedis
from tests.harness.tcp_proxy import TcpProxy, tcp_proxy


@pytest.fixture
def proxy(redis_server: RunningRedis) -> Iterator[TcpProxy]:
    with tcp_proxy(redis_server.port) as running:
        yield running


@pytest.fixture
async def publisher(redis_server: RunningRedis) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(redis_server.url, 60) as engine:
        yield engine


@pytest.fixture
def channel() -> ChannelKey:
    return ChannelKey(f"catch-up-{uuid.uuid4().hex}", "/event/Order__e")


@asynccontextmanager
async def listening(
    proxy: TcpProxy,
    topic: Topic,
    recorder: Recorder,
    catch_up_events: int = 5000,
    catch_up_bytes: int = 1 << 24,
) -> AsyncIterator[None]:
    """An engine reaching Redis through `proxy`, listening on `topic` into `recorder`."""
    url = f"redis://127.0.0.1:{proxy.port}/0"
    async with (
        RedisEngine(
            url, 60, catch_up_events=catch_up_events, catch_up_bytes=catch_up_bytes
        ) as engine,
        engine.listen(topic, recorder, recorder.missed),
    ):
        yield


NEWEST_THREE = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=3)


async def _outage(
    proxy: TcpProxy,
    publisher: RedisEngine,
    channel: ChannelKey,
    count: int,
    retention: Retention = KEEP_ALL,
) -> list[int]:
    """Cut the listening engine off Redis, publish `count` events meanwhile, then restore."""
    proxy.cut()
    acks = [await publish_one(publisher, channel, retention, n=n) for n in range(count)]
    proxy.restore()
    return [ack.replay_id for ack in acks]


async def test_a_backlog_within_the_bound_is_delivered_after_a_reconnect(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic.of(channel), recorder, catch_up_events=3):
        ids = [(await publish_one(publisher, channel)).replay_id]
        await recorder.wait_for(1)
        ids += await _outage(proxy, publisher, channel, 3)
        await recorder.wait_for(4)
        ids.append((await publish_one(publisher, channel)).replay_id)
        await recorder.wait_for(5)

    assert (recorder.ids, recorder.missed_count) == (ids, 0)


async def test_a_backlog_beyond_the_bound_is_reported_missed_not_loaded(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic.of(channel), recorder, catch_up_events=3):
        ids = [(await publish_one(publisher, channel)).replay_id]
        await recorder.wait_for(1)
        ids += await _outage(proxy, publisher, channel, 10)
        await recorder.wait_for_missed()
        # What it did re-read it delivered, in order; then live delivery carries on.
        assert recorder.ids == ids[:4]
        later = await publish_one(publisher, channel)
        await recorder.wait_for(5)

    assert recorder.ids == [*ids[:4], later.replay_id]
    assert recorder.missed_count == 1


async def test_a_backlog_beyond_the_byte_bound_is_reported_missed(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic.of(channel), recorder, catch_up_bytes=2000):
        ids = [(await publish_one(publisher, channel)).replay_id]
        await recorder.wait_for(1)
        proxy.cut()
        for n in range(5):
            await publish_one(publisher, channel, pad="x" * 990, n=n)  # ~1000 bytes each
        proxy.restore()
        await recorder.wait_for_missed()

    assert recorder.ids[:1] == ids
    assert len(recorder.ids) <= 1 + 3  # the bound, plus at most one event over it


async def test_wildcard_listeners_are_told_they_missed_what_an_outage_carried(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic(channel.tenant, "/event/**"), recorder):
        first = await publish_one(publisher, channel)
        await recorder.wait_for(1)
        await _outage(proxy, publisher, channel, 2)
        await recorder.wait_for_missed()
        later = await publish_one(publisher, channel)
        await recorder.wait_for(2)

    assert recorder.ids == [first.replay_id, later.replay_id]


async def test_wildcard_listeners_make_no_redis_pattern_subscription(
    redis_server: RunningRedis, publisher: RedisEngine, channel: ChannelKey
) -> None:
    """A pattern subscription is checked on every publish of every tenant; the tenant's own
    announcement channel is not."""
    other = ChannelKey(f"other-{uuid.uuid4().hex}", channel.name)
    mine, theirs = Recorder(), Recorder()
    async with (
        publisher.listen(Topic(channel.tenant, "/event/*"), mine, mine.missed),
        publisher.listen(Topic(other.tenant, "/event/**"), theirs, theirs.missed),
    ):
        inspector = aioredis.Redis.from_url(redis_server.url)
        try:
            patterns = await inspector.pubsub_numpat()
        finally:
            await inspector.aclose()
        ack = await publish_one(publisher, channel)
        await mine.wait_for(1)
        theirs_ack = await publish_one(publisher, other)
        await theirs.wait_for(1)

    assert patterns == 0
    assert (mine.ids, theirs.ids) == ([ack.replay_id], [theirs_ack.replay_id])


async def test_events_evicted_during_an_outage_are_reported_missed_not_skipped(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic.of(channel), recorder):
        first = await publish_one(publisher, channel, NEWEST_THREE)
        await recorder.wait_for(1)
        await _outage(proxy, publisher, channel, 5, NEWEST_THREE)  # evicts the first two
        await recorder.wait_for_missed()
        # Nothing after the hole was delivered as if it followed the first event.
        assert recorder.ids == [first.replay_id]
        later = await publish_one(publisher, channel, NEWEST_THREE)
        await recorder.wait_for(2)

    assert (recorder.ids, recorder.missed_count) == ([first.replay_id, later.replay_id], 1)


async def test_after_an_incomplete_catch_up_the_next_outage_reads_only_its_own_events(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with listening(proxy, Topic.of(channel), recorder, catch_up_events=3):
        await publish_one(publisher, channel)
        await recorder.wait_for(1)
        await _outage(proxy, publisher, channel, 10)
        await recorder.wait_for_missed()
        delivered = len(recorder.ids)
        second = await _outage(proxy, publisher, channel, 2)
        await recorder.wait_for(delivered + 2)

    # The second re-read started at the top the first one saw: it found just its own two
    # events, within the bound, instead of the first outage's backlog again.
    assert recorder.ids[delivered:] == second
    assert recorder.missed_count == 1


async def test_a_stream_told_of_an_eviction_during_an_outage_reports_the_gap_and_goes_on(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey
) -> None:
    url = f"redis://127.0.0.1:{proxy.port}/0"
    first = await publish_one(publisher, channel, NEWEST_THREE)
    async with (
        RedisEngine(url, 60) as engine,
        Hub(engine) as hub,
        open_stream(
            engine,
            hub,
            Topic.of(channel),
            first.replay_id,
            is_wildcard=False,
            capacity=100,
            queue_bytes=1 << 20,
            page_size=100,
            page_bytes=1 << 20,
        ) as subscriber,
    ):
        await assert_nothing_more(subscriber)  # live from the first event on
        ids = await _outage(proxy, publisher, channel, 5, NEWEST_THREE)  # keeps ids[2:]

        assert flatten(await collect(subscriber, 4)) == [
            Gap(requested=first.replay_id, earliest=ids[2], latest=ids[4], resume_after=ids[1]),
            *ids[2:],
        ]
        later = await publish_one(publisher, channel, NEWEST_THREE)
        assert flatten(await collect(subscriber, 1)) == [later.replay_id]
