"""Live announcements on Redis: the publish script builds one message per event for both the
channel's own live channel and its tenant's announcement channel, and a node's reader skips
what it cannot read instead of going deaf."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from app.model import ChannelKey, Topic
from storage.redis import RedisEngine, keys
from tests.contract._support import WAIT_S, Recorder, publish_one
from tests.harness.redis import RunningRedis


@pytest.fixture
async def engine(redis_server: RunningRedis) -> AsyncIterator[RedisEngine]:
    async with RedisEngine(redis_server.url, 60) as entered:
        yield entered


@pytest.fixture
async def raw(redis_server: RunningRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def channel() -> ChannelKey:
    return ChannelKey(f"announce-{uuid.uuid4().hex}", "/event/Order__e")


async def test_the_channel_and_its_tenant_get_one_and_the_same_message(
    redis_server: RunningRedis, engine: RedisEngine, channel: ChannelKey
) -> None:
    marker = f"end-{uuid.uuid4().hex}"
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    published: dict[str, str] = {}
    try:
        async with client.monitor() as monitor:
            await publish_one(engine, channel, text="no-spaces")
            await client.echo(marker)
            end = f"ECHO {marker}"
            async with asyncio.timeout(WAIT_S):
                while (command := (await monitor.next_command())["command"]) != end:
                    verb, _, rest = command.partition(" ")
                    if verb in ("PUBLISH", "SPUBLISH"):
                        target, _, message = rest.partition(" ")
                        published[target] = message
    finally:
        await client.aclose()

    live, announce = keys.live_channel(channel), keys.live_tenant(channel.tenant)
    assert set(published) == {live, announce}
    assert published[live] == published[announce]
    assert published[live].startswith(live + "\\x1f")


async def test_an_announcement_without_its_channel_name_in_front_is_delivered(
    engine: RedisEngine, raw: aioredis.Redis, channel: ChannelKey
) -> None:
    """As earlier versions published on a channel's own live channel."""
    recorder = Recorder()
    async with engine.listen(Topic.of(channel), recorder, recorder.missed):
        fields = [b"1795386788213894", b"some-uuid", b"1795386788213894", b"author", b"", b"{}"]
        await raw.publish(keys.live_channel(channel), b"\x1f".join(fields))
        [event] = await recorder.wait_for(1)

    assert (event.key, event.replay_id, event.uuid, event.payload) == (
        channel,
        1795386788213894,
        "some-uuid",
        b"{}",
    )


@pytest.mark.parametrize("wildcard", [False, True])
async def test_an_unreadable_message_is_skipped_and_delivery_goes_on(
    engine: RedisEngine, raw: aioredis.Redis, channel: ChannelKey, wildcard: bool
) -> None:
    recorder = Recorder()
    topic = Topic(channel.tenant, "/event/*") if wildcard else Topic.of(channel)
    source = keys.live_tenant(channel.tenant) if wildcard else keys.live_channel(channel)
    async with engine.listen(topic, recorder, recorder.missed):
        for garbage in (b"garbage", b"x\x1fy", b"\xff\xfe", keys.live_channel(channel).encode()):
            await raw.publish(source, garbage)
        ack = await publish_one(engine, channel)
        await recorder.wait_for(1)

    assert (recorder.ids, recorder.missed_count) == ([ack.replay_id], 0)
