"""The Hub's per-node fan-out (DESIGN §5) over every engine: one engine listener per topic,
one Delivery per event shared by all local subscribers, bounded mailboxes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from app.engine import Engine, LiveCallback, MissedCallback
from app.hub import EventsLost, Hub, Mailbox, SubscriberOverflow
from app.model import ChannelKey, EventDraft, Topic
from app.readiness import ReadinessProbe
from tests.contract._support import (
    KEEP_ALL,
    WAIT_S,
    ListenCounter,
    draft,
    drain,
    publish_one,
)


def box(capacity: int) -> Mailbox:
    """A mailbox bounded by `capacity` events (and bytes no test here reaches)."""
    return Mailbox(capacity, 1 << 20)


async def test_one_engine_listener_per_topic_however_many_subscribers(
    engine: Engine, channel: ChannelKey
) -> None:
    counter = ListenCounter(engine)
    topic = Topic.of(channel)
    async with Hub(counter) as hub, AsyncExitStack() as stack:
        mailboxes = [
            await stack.enter_async_context(hub.subscribe(topic, box(10))) for _ in range(3)
        ]

        assert (hub.topic_count, hub.subscriber_count) == (1, 3)
        assert (counter.opened, counter.active) == (1, 1)
        ack = await publish_one(engine, channel)
        for mailbox in mailboxes:
            assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]


async def test_each_topic_gets_its_own_engine_listener(engine: Engine, channel: ChannelKey) -> None:
    counter = ListenCounter(engine)
    async with (
        Hub(counter) as hub,
        hub.subscribe(Topic.of(channel), box(10)),
        hub.subscribe(Topic(channel.tenant, "/event/*"), box(10)),
        hub.subscribe(Topic(channel.tenant, "/event/*"), box(10)),
    ):
        assert (hub.topic_count, hub.subscriber_count) == (2, 3)
        assert (counter.opened, counter.active) == (2, 2)


async def test_listener_is_released_only_after_the_last_subscriber_leaves(
    engine: Engine, channel: ChannelKey
) -> None:
    counter = ListenCounter(engine)
    topic = Topic.of(channel)
    async with Hub(counter) as hub:
        async with hub.subscribe(topic, box(10)):
            async with hub.subscribe(topic, box(10)):
                assert hub.subscriber_count == 2
            assert (hub.topic_count, hub.subscriber_count) == (1, 1)
            assert counter.active == 1
        assert (hub.topic_count, hub.subscriber_count) == (0, 0)
        assert counter.active == 0

        # A new subscriber after the release gets a fresh listener that works.
        async with hub.subscribe(topic, box(10)) as mailbox:
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
                await subscriptions.enter_async_context(hub.subscribe(topic, box(10)))
            assert counter.active == 2
        assert counter.active == 0
    # Subscribers leaving after the hub closed release nothing twice.
    assert (counter.opened, counter.active) == (2, 0)


async def test_every_subscriber_gets_the_same_delivery_object(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with (
        hub.subscribe(topic, box(10)) as one,
        hub.subscribe(topic, box(10)) as two,
    ):
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
    async with (
        hub.subscribe(topic, box(3)) as small,
        hub.subscribe(topic, box(100)) as witness,
    ):
        acks = [await publish_one(engine, channel, n=n) for n in range(5)]
        # The hub offers each event to every mailbox at once: once the witness holds all five,
        # the small mailbox has been offered all five too.
        await drain(witness, 5)

        taken = await small.take(timeout=WAIT_S)
        assert [d.replay_id for d in taken] == [ack.replay_id for ack in acks[:3]]
        with pytest.raises(SubscriberOverflow):
            await small.take(timeout=WAIT_S)


async def test_take_on_an_idle_mailbox_times_out_empty_and_stays_usable(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    async with hub.subscribe(Topic.of(channel), box(10)) as mailbox:
        assert await mailbox.take(timeout=0.01) == []

        ack = await publish_one(engine, channel)
        assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]


async def test_slow_subscribers_overflow_does_not_affect_another_subscriber(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with (
        hub.subscribe(topic, box(3)) as slow,
        hub.subscribe(topic, box(100)) as fast,
    ):
        acks = [await publish_one(engine, channel, n=n) for n in range(5)]
        assert [d.replay_id for d in await drain(fast, 5)] == [a.replay_id for a in acks]
        assert len(await slow.take(timeout=WAIT_S)) == 3
        with pytest.raises(SubscriberOverflow):
            await slow.take(timeout=WAIT_S)

        later = await publish_one(engine, channel, n=5)

        assert [d.replay_id for d in await drain(fast, 1)] == [later.replay_id]
        with pytest.raises(SubscriberOverflow):
            await slow.take(timeout=WAIT_S)
        assert (hub.topic_count, hub.subscriber_count) == (1, 2)


class GatedListen:
    """A LiveSource over a real engine whose listens for `gated` topics wait until the test
    opens the gate, counting listens opened (as ListenCounter does)."""

    def __init__(self, engine: Engine, gated: Topic) -> None:
        self._counter = ListenCounter(engine)
        self._gated = gated
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()  # a gated listen has started and is held

    @property
    def opened(self) -> int:
        return self._counter.opened

    @property
    def active(self) -> int:
        return self._counter.active

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        if topic == self._gated:
            self.waiting.set()
            await self.gate.wait()
        async with self._counter.listen(topic, deliver, missed):
            yield


async def test_a_slow_listen_on_one_topic_does_not_hold_up_another_topic(
    engine: Engine, channel: ChannelKey
) -> None:
    slow, other = Topic.of(channel), Topic(channel.tenant, "/event/Other__e")
    source = GatedListen(engine, slow)
    async with Hub(source) as hub, AsyncExitStack() as stack:
        held = asyncio.create_task(stack.enter_async_context(hub.subscribe(slow, box(10))))
        await source.waiting.wait()

        async with asyncio.timeout(WAIT_S):  # the other topic never waits for the slow listen
            async with hub.subscribe(other, box(10)) as mailbox:
                ack = await publish_one(engine, ChannelKey(other.tenant, other.pattern))
                assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]

        assert not held.done()
        source.gate.set()
        await held
        assert (source.opened, source.active, hub.topic_count) == (2, 1, 1)


async def test_a_slow_listen_on_a_tenant_topic_does_not_hold_up_the_readiness_canary(
    engine: Engine, channel: ChannelKey
) -> None:
    source = GatedListen(engine, Topic.of(channel))
    async with Hub(source) as hub, AsyncExitStack() as stack:
        held = asyncio.create_task(
            stack.enter_async_context(hub.subscribe(Topic.of(channel), box(10)))
        )
        await source.waiting.wait()

        try:
            async with asyncio.timeout(2 * WAIT_S):  # bounds a hang
                # The canary makes its round trip within the probe's timeout, or this raises.
                await ReadinessProbe(engine, hub, timeout=WAIT_S).check()
            assert not held.done()
        finally:
            source.gate.set()
        await held


async def test_concurrent_subscribers_of_one_topic_share_one_listener(
    engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    source = GatedListen(engine, topic)
    async with Hub(source) as hub, AsyncExitStack() as stack:
        entering = [
            asyncio.create_task(stack.enter_async_context(hub.subscribe(topic, box(10))))
            for _ in range(3)
        ]
        await source.waiting.wait()
        source.gate.set()
        mailboxes = await asyncio.gather(*entering)

        assert (source.opened, source.active) == (1, 1)
        assert (hub.topic_count, hub.subscriber_count) == (1, 3)
        ack = await publish_one(engine, channel)
        for mailbox in mailboxes:
            assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]


async def test_a_subscriber_cancelled_while_its_topic_is_opening_leaves_the_count_right(
    engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    source = GatedListen(engine, topic)
    async with Hub(source) as hub:
        first_in = asyncio.Event()
        leave = asyncio.Event()

        async def stay() -> None:
            async with hub.subscribe(topic, box(10)):
                first_in.set()
                await leave.wait()

        staying = asyncio.create_task(stay())
        await source.waiting.wait()
        entering = asyncio.Event()

        async def enter() -> Mailbox:
            entering.set()
            # Nothing suspends between here and the wait behind the opening listen, so once
            # the test sees `entering` set, this subscriber is queued on the topic.
            return await hub.subscribe(topic, box(10)).__aenter__()

        cancelled = asyncio.create_task(enter())
        await entering.wait()
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        source.gate.set()
        await first_in.wait()

        assert (source.opened, source.active, hub.subscriber_count) == (1, 1, 1)
        leave.set()
        await staying
        assert (source.active, hub.topic_count, hub.subscriber_count) == (0, 0, 0)


async def test_a_subscriber_joining_while_the_last_one_leaves_keeps_the_listener(
    engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    counter = ListenCounter(engine)
    async with Hub(counter) as hub:
        leaving = hub.subscribe(topic, box(10))
        await leaving.__aenter__()
        # The last subscriber leaves while another joins: whichever order the two take, one
        # listener ends up open for the one that stayed, and it works.
        joining = hub.subscribe(topic, box(10))
        _, mailbox = await asyncio.gather(leaving.__aexit__(None, None, None), joining.__aenter__())
        try:
            assert counter.active == 1
            assert (hub.topic_count, hub.subscriber_count) == (1, 1)
            ack = await publish_one(engine, channel)
            assert [d.replay_id for d in await drain(mailbox, 1)] == [ack.replay_id]
        finally:
            await joining.__aexit__(None, None, None)
        assert (counter.active, hub.topic_count) == (0, 0)


async def test_missed_live_events_are_reported_to_every_subscriber_without_cutting_it_off(
    engine: Engine, channel: ChannelKey
) -> None:
    misses: list[MissedCallback] = []

    class Missing(ListenCounter):
        @asynccontextmanager
        async def listen(
            self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
        ) -> AsyncIterator[None]:
            misses.append(missed)
            async with super().listen(topic, deliver, missed):
                yield

    async with Hub(Missing(engine)) as hub:
        topic = Topic.of(channel)
        async with hub.subscribe(topic, box(10)) as one, hub.subscribe(topic, box(10)) as two:
            ack = await publish_one(engine, channel)
            await drain(one, 1)
            [missed] = misses
            missed()  # what an engine does when it cannot catch up after an outage

            with pytest.raises(EventsLost):
                await one.take(timeout=WAIT_S)
            # What was buffered before is still handed over first.
            assert [d.replay_id for d in await two.take(timeout=WAIT_S)] == [ack.replay_id]
            with pytest.raises(EventsLost):
                await two.take(timeout=WAIT_S)
            # Told once; both stay subscribed and get what comes next.
            later = await publish_one(engine, channel)
            for mailbox in (one, two):
                assert [d.replay_id for d in await drain(mailbox, 1)] == [later.replay_id]
            assert hub.subscriber_count == 2


async def test_a_mailbox_full_in_bytes_overflows_before_its_count(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    small = Mailbox(100, 2500)
    async with hub.subscribe(topic, small), hub.subscribe(topic, box(100)) as witness:
        drafts = [EventDraft(str(n), b'{"p":"' + b"x" * 992 + b'"}', "test") for n in range(3)]
        acks = await engine.publish(channel, drafts, KEEP_ALL)  # 1000 bytes each
        await drain(witness, 3)

        taken = await small.take(timeout=WAIT_S)
        assert [d.replay_id for d in taken] == [ack.replay_id for ack in acks[:2]]
        with pytest.raises(SubscriberOverflow):
            await small.take(timeout=WAIT_S)


async def test_an_empty_mailbox_takes_one_event_larger_than_its_byte_bound(
    hub: Hub, engine: Engine, channel: ChannelKey
) -> None:
    topic = Topic.of(channel)
    async with hub.subscribe(topic, Mailbox(100, 100)) as small:
        [ack] = await engine.publish(
            channel, [EventDraft("big", b"[" + b"0," * 99 + b"0]", "t")], KEEP_ALL
        )
        assert [d.replay_id for d in await drain(small, 1)] == [ack.replay_id]
