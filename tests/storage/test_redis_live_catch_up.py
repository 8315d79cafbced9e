"""The Redis live feed after its connection comes back: it re-reads what each channel missed, up
to a bound, and past the bound (or on a tenant's wildcard channel, which has no stream to re-read)
tells the listener it missed events instead of loading an unbounded backlog. Wildcard listeners
cost other tenants nothing: no Redis pattern subscription is made for them."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis.asyncio as aioredis

from app.model import ChannelKey, Topic
from storage.redis import RedisEngine
from tests.contract._support import Recorder, publish_one
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


async def _outage(
    proxy: TcpProxy, publisher: RedisEngine, channel: ChannelKey, count: int
) -> list[int]:
    """Cut the listening engine off Redis, publish `count` events meanwhile, then restore."""
    proxy.cut()
    acks = [await publish_one(publisher, channel, n=n) for n in range(count)]
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
