"""The Hub's per-node fan-out (DESIGN §5) over every engine: one engine listener per topic,
one Delivery per event shared by all local subscribers, bounded mailboxes."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest

from app.engine import Engine
from app.hub import Hub, SubscriberOverflow
from app.model import ChannelKey, Topic
from tests.contract._support import KEEP_ALL, ListenCounter, draft, drain, publish_one


async def test_one_engine_listener_per_topic_however_many_subscribers(
    engine: Engine, channel: ChannelKey
) -> None:
    counter = ListenCounter(engine)
    topic = Topic.of(channel)
    async with Hub(counter) as hub, AsyncExitStack() as stack:
        mailboxes = [await stack.enter_async_context(hub.subscribe(topic, 10)) for _ in range(3)]

        assert (hub.topic_count, hub.subscriber_count) == (1, 3)
        assert (counter.opened, counter.active) == (1, 1)
        ack = await publish_one(engine, channel)
        for mailbox in mailboxes:
            assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]


async def test_each_topic_gets_its_own_engine_listener(engine: Engine, channel: ChannelKey) -> None:
    counter = ListenCounter(engine)
    async with (
        Hub(counter) as hub,
        hub.subscribe(Topic.of(channel), 10),
        hub.subscribe(Topic(channel.tenant, "/event/*"), 10),
        hub.subscribe(Topic(channel.tenant, "/event/*"), 10),
    ):
        assert (hub.topic_count, hub.subscriber_count) == (2, 3)
        assert (counter.opened, counter.active) == (2, 2)


async def test_listener_is_released_only_after_the_last_subscriber_leaves(
    engine: Engine, channel: ChannelKey
) -> None:
    counter = ListenCounter(engine)
    topic = Topic.of(channel)
    async with Hub(counter) as hub:
        async with hub.subscribe(topic, 10):
            async with hub.subscribe(topic, 10):
                assert hub.subscriber_count == 2
            assert (hub.topic_count, hub.subscriber_count) == (1, 1)
            assert counter.active == 1
        assert (hub.topic_count, hub.subscriber_count) == (0, 0)
        assert counter.active == 0

        # A new subscriber after the release gets a fresh listener that works.
        async with hub.subscribe(topic, 10) as mailbox:
            assert (counter.opened, counter.active) == (2, 1)
            ack = await publish_one(engine, channel)
            assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]
        assert counter.active == 0


async def test_closing_the_hub_releases_listeners_still_in_use(
    engine: Engine, channel: ChannelKey
) -> None:
    counter = ListenCounter(engine)
    async with AsyncExitStack() as subscriptions:
        async with Hub(counter) as hub:
            for topic in (Topic.of(channel), Topic(channel.tenant, "/event/**")):
                await subscriptions.enter_async_context(hub.subscribe(topic, 10))
            assert counter.active == 2
        assert counter.active == 0
    # Subscribers leaving after the hub closed release nothing twice.
    assert (counter.opened, counter.active) == (2, 0)


async def test_every_subscriber_gets_the_same_delivery_object(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with hub.subscribe(topic, 10) as one, hub.subscribe(topic, 10) as two:
        acks = await engine.publish(channel, [draft({"n": 1}), draft({"n": 2})], KEEP_ALL)
        first, second = await drain(one, 2), await drain(two, 2)

    assert [d.replay_id for d in first] == [ack.replay_id for ack in acks]
    assert all(a is b for a, b in zip(first, second, strict=True))
    # Encoded once per node: the shared object hands every subscriber the same bytes object.
    assert first[0].sse_frame() is second[0].sse_frame()


async def test_full_mailbox_hands_over_what_it_buffered_then_overflows(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with hub.subscribe(topic, 3) as small, hub.subscribe(topic, 100) as witness:
        acks = [await publish_one(engine, channel, n=n) for n in range(5)]
        # The hub offers each event to every mailbox at once: once the witness holds all five,
        # the small mailbox has been offered all five too.
        await drain(witness, 5)

        taken = await small.take(timeout=1.0)
        assert [d.replay_id for d in taken] == [ack.replay_id for ack in acks[:3]]
        with pytest.raises(SubscriberOverflow):
            await small.take(timeout=1.0)


async def test_take_on_an_idle_mailbox_times_out_empty_and_stays_usable(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    async with hub.subscribe(Topic.of(channel), 10) as mailbox:
        assert await mailbox.take(timeout=0.01) == []

        ack = await publish_one(engine, channel)
        assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]


async def test_slow_subscribers_overflow_does_not_affect_another_subscriber(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with hub.subscribe(topic, 3) as slow, hub.subscribe(topic, 100) as fast:
        acks = [await publish_one(engine, channel, n=n) for n in range(5)]
        assert [d.replay_id for d in await drain(fast, 5)] == [a.replay_id for a in acks]
        assert len(await slow.take(timeout=1.0)) == 3
        with pytest.raises(SubscriberOverflow):
            await slow.take(timeout=1.0)

        later = await publish_one(engine, channel, n=5)

        assert [d.replay_id for d in await drain(fast, 1)] == [later.replay_id]
        with pytest.raises(SubscriberOverflow):
            await slow.take(timeout=1.0)
        assert (hub.topic_count, hub.subscriber_count) == (1, 2)
