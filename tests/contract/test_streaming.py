"""History-then-live streams (DESIGN §2 resume rule) over every engine and the Hub: nothing
missed, nothing delivered twice, and a gap is never silent."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest

from app import delivery
from app.delivery import Delivery
from app.engine import Engine, LiveCallback, MissedCallback
from app.hub import Hub, Mailbox, SubscriberOverflow
from app.model import ChannelKey, Event, EventDraft, Retention, Topic
from app.recovery import ALL_RETAINED, NEW_ONLY, Gap
from app.streaming import ChannelStream, LiveGap, open_stream
from tests.contract._support import (
    KEEP_ALL,
    WAIT_S,
    assert_nothing_more,
    collect,
    draft,
    drain,
    flatten,
    publish_one,
)
from tests.fakes import FakeClock

NEWEST_THREE = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=3)


def stream(
    engine: Engine,
    hub: Hub,
    channel: ChannelKey,
    requested: int,
    *,
    capacity: int = 100,
    queue_bytes: int = 1 << 20,
    page_size: int = 100,
    page_bytes: int = 1 << 20,
) -> AbstractAsyncContextManager[ChannelStream]:
    return open_stream(
        engine,
        hub,
        Topic.of(channel),
        requested,
        is_wildcard=False,
        capacity=capacity,
        queue_bytes=queue_bytes,
        page_size=page_size,
        page_bytes=page_bytes,
    )


async def publish_many(
    engine: Engine, channel: ChannelKey, count: int, retention: Retention = KEEP_ALL
) -> list[int]:
    """`count` separate publishes (each one a live delivery of its own)."""
    return [(await publish_one(engine, channel, retention, n=n)).replay_id for n in range(count)]


async def test_all_retained_delivers_history_then_live(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    history = await publish_many(engine, channel, 3)
    async with stream(engine, hub, channel, ALL_RETAINED) as subscriber:
        assert flatten(await collect(subscriber, 3)) == history

        live = await publish_many(engine, channel, 2)

        assert flatten(await collect(subscriber, 2)) == live
        await assert_nothing_more(subscriber)


async def test_all_retained_starts_at_the_earliest_retained_event_without_a_gap(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 5, NEWEST_THREE)
    async with stream(engine, hub, channel, ALL_RETAINED) as subscriber:
        assert flatten(await collect(subscriber, 3)) == ids[2:]
        await assert_nothing_more(subscriber)


async def test_new_only_delivers_just_events_published_after_opening(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    await publish_many(engine, channel, 3)
    async with stream(engine, hub, channel, NEW_ONLY) as subscriber:
        await assert_nothing_more(subscriber)

        live = await publish_many(engine, channel, 2)

        assert flatten(await collect(subscriber, 2)) == live
        await assert_nothing_more(subscriber)


async def test_resume_from_a_position_delivers_exactly_the_later_events(
    engine: Engine, hub: Hub, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = []
    for n in range(5):
        ids.append((await publish_one(engine, channel, n=n)).replay_id)
        clock.advance(1)
    async with stream(engine, hub, channel, ids[1]) as subscriber:
        assert flatten(await collect(subscriber, 3)) == ids[2:]

        live = await publish_many(engine, channel, 1)

        assert flatten(await collect(subscriber, 1)) == live
        await assert_nothing_more(subscriber)


async def test_resume_from_the_latest_id_delivers_only_live_events(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 3)
    async with stream(engine, hub, channel, ids[-1]) as subscriber:
        await assert_nothing_more(subscriber)

        live = await publish_many(engine, channel, 2)

        assert flatten(await collect(subscriber, 2)) == live


async def test_resume_from_the_newest_evicted_id_is_lossless_without_a_gap(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 5, NEWEST_THREE)  # ids[1] is the low-water mark
    async with stream(engine, hub, channel, ids[1]) as subscriber:
        assert flatten(await collect(subscriber, 3)) == ids[2:]
        await assert_nothing_more(subscriber)


async def test_resume_below_the_low_water_mark_reports_a_gap_then_the_earliest_retained(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 5, NEWEST_THREE)
    async with stream(engine, hub, channel, ids[0]) as subscriber:
        items = await collect(subscriber, 4)

        assert flatten(items) == [
            Gap(requested=ids[0], earliest=ids[2], latest=ids[4], resume_after=ids[1]),
            *ids[2:],
        ]
        live = await publish_many(engine, channel, 1, NEWEST_THREE)
        assert flatten(await collect(subscriber, 1)) == live
        await assert_nothing_more(subscriber)


async def test_resume_above_the_latest_id_reports_a_gap(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    born = (await engine.window(channel)).low_water
    ids = await publish_many(engine, channel, 3)
    unknown = ids[-1] + 1_000
    async with stream(engine, hub, channel, unknown) as subscriber:
        items = await collect(subscriber, 4)

        assert flatten(items) == [
            Gap(requested=unknown, earliest=ids[0], latest=ids[-1], resume_after=born),
            *ids,
        ]
        await assert_nothing_more(subscriber)


async def test_events_published_while_history_is_paged_arrive_once_in_order(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 5)
    async with stream(engine, hub, channel, ALL_RETAINED, page_size=2) as subscriber:
        items = list(await subscriber.next_batch(timeout=WAIT_S))
        ids += await publish_many(engine, channel, 1)
        items += await subscriber.next_batch(timeout=WAIT_S)
        ids += await publish_many(engine, channel, 1)
        items += await collect(subscriber, len(ids) - len(items))

        assert flatten(items) == ids
        await assert_nothing_more(subscriber)

        live = await publish_many(engine, channel, 2)
        assert flatten(await collect(subscriber, 2)) == live
        await assert_nothing_more(subscriber)


async def test_mailbox_overflow_during_catch_up_still_delivers_everything_once_in_order(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_many(engine, channel, 4)
    async with stream(engine, hub, channel, ALL_RETAINED, capacity=10, page_size=2) as subscriber:
        items = list(await subscriber.next_batch(timeout=WAIT_S))
        ids += await publish_many(engine, channel, 25)  # overflows the 10-slot mailbox
        items += await subscriber.next_batch(timeout=WAIT_S)
        ids += await publish_many(engine, channel, 25)  # and again
        items += await collect(subscriber, len(ids) - len(items))

        assert flatten(items) == ids
        assert len(ids) == 54
        await assert_nothing_more(subscriber)

        live = await publish_many(engine, channel, 3)
        assert flatten(await collect(subscriber, 3)) == live


async def test_live_capacity_is_not_used_up_by_events_already_delivered_from_history(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    """Events published during catch-up reach the subscriber through history; their live copies
    must not count against the mailbox, or a subscriber that is fully caught up is cut off
    although it is only a few events behind."""
    ids = await publish_many(engine, channel, 4)
    async with stream(engine, hub, channel, ALL_RETAINED, capacity=10, page_size=2) as subscriber:
        items = list(await subscriber.next_batch(timeout=WAIT_S))
        ids += await publish_many(engine, channel, 7)  # fits the mailbox: no overflow
        items += await collect(subscriber, len(ids) - len(items))
        assert flatten(items) == ids  # caught up: history ended on a short page

        live = await publish_many(engine, channel, 4)  # 4 behind, capacity 10

        assert flatten(await collect(subscriber, 4)) == live


async def publish_sized(engine: Engine, channel: ChannelKey, count: int, size: int) -> list[int]:
    """`count` separate publishes of `size`-byte payloads."""
    payload = b'{"p":"' + b"x" * (size - 8) + b'"}'
    ids = []
    for n in range(count):
        [ack] = await engine.publish(channel, [EventDraft(str(n), payload, "test")], KEEP_ALL)
        ids.append(ack.replay_id)
    return ids


async def test_catch_up_in_pages_full_in_bytes_reaches_the_top_then_goes_live(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    """A page that is short because it is full in bytes is not the end of history."""
    ids = await publish_sized(engine, channel, 7, 1000)
    async with stream(
        engine, hub, channel, ALL_RETAINED, page_size=100, page_bytes=2500
    ) as subscriber:
        first = await subscriber.next_batch(timeout=WAIT_S)
        assert flatten(first) == ids[:2]
        assert subscriber.catching_up
        items = first + await collect(subscriber, 5)

        assert flatten(items) == ids
        await assert_nothing_more(subscriber)
        live = await publish_many(engine, channel, 2)
        assert flatten(await collect(subscriber, 2)) == live


async def test_live_subscriber_over_its_byte_bound_is_cut_off_at_a_resumable_position(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    ids = await publish_sized(engine, channel, 1, 1000)
    async with (
        stream(engine, hub, channel, ALL_RETAINED, capacity=100, queue_bytes=3500) as subscriber,
        hub.subscribe(Topic.of(channel), Mailbox(100, 1 << 20)) as witness,
    ):
        assert flatten(await collect(subscriber, 1)) == ids
        await assert_nothing_more(subscriber)  # live now
        ids += await publish_sized(engine, channel, 5, 1000)  # 5000 bytes behind, bound 3500
        # Each event is offered to every mailbox at once: once the witness has all five, the
        # subscriber's mailbox has been offered all five too.
        await drain(witness, 5)

        # What fitted its 3500 bytes is handed over, then it is cut off where it stands.
        assert flatten(await subscriber.next_batch(timeout=WAIT_S)) == ids[1:4]
        with pytest.raises(SubscriberOverflow):
            await subscriber.next_batch(timeout=WAIT_S)
        position = subscriber.position

    assert position == ids[3]
    async with stream(engine, hub, channel, position) as resumed:
        assert flatten(await collect(resumed, 2)) == ids[4:]
        await assert_nothing_more(resumed)


async def test_eviction_during_catch_up_reports_a_gap_in_band(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    keep_five = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=5)
    ids = await publish_many(engine, channel, 5, keep_five)
    async with stream(engine, hub, channel, ALL_RETAINED, page_size=2) as subscriber:
        items = list(await subscriber.next_batch(timeout=WAIT_S))
        assert flatten(items) == ids[:2]

        ids += await publish_many(engine, channel, 10, keep_five)  # evicts ids[2:10]

        rest = await collect(subscriber, 6)
        assert flatten(rest) == [
            Gap(requested=ids[1], earliest=ids[10], latest=ids[14], resume_after=ids[9]),
            *ids[10:],
        ]
        await assert_nothing_more(subscriber)


async def test_wildcard_stream_delivers_live_events_from_several_channels(
    engine: Engine, hub: Hub, tenant: str
) -> None:
    """A wildcard stream is live-only: nothing retained is replayed. An event published just
    before the stream opened may still be on its way through pub/sub (on a Redis Cluster it
    crosses the cluster bus) and arrive first; everything after it is exactly what was
    published while the stream was open, in order per channel."""
    a, b, deeper = (ChannelKey(tenant, name) for name in ("/event/A", "/event/B", "/event/A/x"))
    earlier = [(await publish_one(engine, a, n=0)).replay_id]
    earlier += await publish_many(engine, a, 3)  # retained before the stream opened
    async with open_stream(
        engine,
        hub,
        Topic(tenant, "/event/*"),
        ALL_RETAINED,
        is_wildcard=True,
        capacity=100,
        queue_bytes=1 << 20,
        page_size=100,
        page_bytes=1 << 20,
    ) as subscriber:
        expected = []
        for key in (a, b, deeper, b, a):
            [ack] = await engine.publish(key, [draft({"to": key.name})], KEEP_ALL)
            if key is not deeper:
                expected.append((key, ack.replay_id))

        received: list[tuple[ChannelKey, int]] = []
        while len([r for r in received if r in expected]) < len(expected):
            batch = await collect(subscriber, 1)
            received += [
                (item.event.key, item.replay_id) for item in batch if isinstance(item, Delivery)
            ]
        await assert_nothing_more(subscriber)

    # Order is per channel (across channels a Redis Cluster announces from several nodes).
    live = [item for item in received if item in expected]
    assert Counter(live) == Counter(expected)
    for key in (a, b):
        assert [r for r in live if r[0] == key] == [r for r in expected if r[0] == key]
    extras = [item for item in received if item not in expected]
    assert all(key == a and replay_id in earlier for key, replay_id in extras)


class Outage:
    """A LiveSource over a real engine that drops live events while `down`, as an engine whose
    connection is cut does, then (`end`) tells its listeners it missed them, as an engine that
    could not catch up does."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._missed: list[MissedCallback] = []
        self.down = False
        self.dropped = 0
        self._dropping = asyncio.Event()

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        def during_outage(event: Event) -> None:
            if not self.down:
                deliver(event)
                return
            self.dropped += 1
            self._dropping.set()

        self._missed.append(missed)
        async with self._engine.listen(topic, during_outage, missed):
            yield

    async def end(self, dropped: int) -> None:
        """Once `dropped` events were dropped (live delivery can lag), end the outage."""
        async with asyncio.timeout(WAIT_S):
            while self.dropped < dropped:
                self._dropping.clear()
                await self._dropping.wait()
        self.down = False
        for missed in self._missed:
            missed()


async def test_live_events_lost_on_their_way_are_read_from_the_store_without_ending_the_stream(
    engine: Engine, channel: ChannelKey
) -> None:
    source = Outage(engine)
    async with Hub(source) as hub, stream(engine, hub, channel, NEW_ONLY) as subscriber:
        ids = await publish_many(engine, channel, 2)
        assert flatten(await collect(subscriber, 2)) == ids
        source.down = True
        lost = await publish_many(engine, channel, 3)
        await source.end(dropped=3)
        later = await publish_many(engine, channel, 1)

        assert flatten(await collect(subscriber, 4)) == lost + later
        await assert_nothing_more(subscriber)
        newest = await publish_many(engine, channel, 1)
        assert flatten(await collect(subscriber, 1)) == newest


async def test_live_events_lost_and_then_evicted_are_reported_as_a_gap(
    engine: Engine, channel: ChannelKey
) -> None:
    source = Outage(engine)
    async with Hub(source) as hub, stream(engine, hub, channel, NEW_ONLY) as subscriber:
        ids = await publish_many(engine, channel, 2, NEWEST_THREE)
        assert flatten(await collect(subscriber, 2)) == ids
        source.down = True
        ids += await publish_many(engine, channel, 5, NEWEST_THREE)  # keeps ids[4:]
        await source.end(dropped=5)

        assert flatten(await collect(subscriber, 4)) == [
            Gap(requested=ids[1], earliest=ids[4], latest=ids[6], resume_after=ids[3]),
            *ids[4:],
        ]
        await assert_nothing_more(subscriber)


async def test_a_wildcard_stream_is_told_of_lost_live_events_and_goes_on(
    engine: Engine, tenant: str
) -> None:
    source = Outage(engine)
    channel = ChannelKey(tenant, "/event/A")
    async with (
        Hub(source) as hub,
        open_stream(
            engine,
            hub,
            Topic(tenant, "/event/*"),
            NEW_ONLY,
            is_wildcard=True,
            capacity=100,
            queue_bytes=1 << 20,
            page_size=100,
            page_bytes=1 << 20,
        ) as subscriber,
    ):
        source.down = True
        await publish_many(engine, channel, 2)
        await source.end(dropped=2)
        later = await publish_many(engine, channel, 1)

        assert flatten(await collect(subscriber, 2)) == [LiveGap("/event/*"), *later]
        await assert_nothing_more(subscriber)


async def test_an_event_is_encoded_once_for_exact_wildcard_and_catching_up_subscribers(
    engine: Engine, hub: Hub, channel: ChannelKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    encodings: Counter[str] = Counter()

    def counted(name: str, encode: Callable[..., bytes]) -> Callable[..., bytes]:
        def encode_counted(*args: Any, **kwargs: Any) -> bytes:
            encodings[name] += 1
            return encode(*args, **kwargs)

        return encode_counted

    for name in ("encode_envelope", "event_frame", "encode_event"):
        monkeypatch.setattr(f"app.delivery.{name}", counted(name, getattr(delivery, name)))
    async with (
        hub.subscribe(Topic.of(channel), Mailbox(10, 1 << 20)) as exact,
        hub.subscribe(Topic(channel.tenant, "/event/*"), Mailbox(10, 1 << 20)) as wildcard,
    ):
        ack = await publish_one(engine, channel)
        [from_exact], [from_wildcard] = await drain(exact, 1), await drain(wildcard, 1)
        async with stream(engine, hub, channel, ALL_RETAINED) as catching_up:
            [from_history] = await collect(catching_up, 1)

    received = [from_exact, from_wildcard, from_history]
    for item in received:
        assert isinstance(item, Delivery)
        assert item.replay_id == ack.replay_id
        item.sse_frame()
        item.bayeux_message(with_uuid=True)
    assert encodings == {"encode_envelope": 1, "event_frame": 1, "encode_event": 1}


async def test_live_events_written_through_move_the_position_and_later_ones_follow_in_order(
    engine: Engine, hub: Hub, channel: ChannelKey
) -> None:
    history = await publish_many(engine, channel, 2)
    async with stream(engine, hub, channel, ALL_RETAINED) as subscriber:
        assert flatten(await collect(subscriber, 2)) == history
        through: list[int] = []
        accepting = True
        three = asyncio.Event()

        def sink(delivered: Delivery) -> bool:
            if accepting:
                through.append(delivered.replay_id)
                if len(through) == 3:
                    three.set()
            return accepting

        subscriber.write_through(sink)
        waiting = asyncio.create_task(subscriber.next_batch(None))
        await asyncio.sleep(0)  # the task is now waiting on the stream
        live = await publish_many(engine, channel, 3)
        async with asyncio.timeout(WAIT_S):
            await three.wait()

        assert through == live
        assert subscriber.position == live[-1]
        assert not waiting.done()  # handed over without waking the consumer

        accepting = False  # the sink refuses: the stream queues as before
        later = await publish_many(engine, channel, 2)
        async with asyncio.timeout(WAIT_S):
            items = await waiting
        items += await collect(subscriber, 2 - len(items)) if len(items) < 2 else []
        assert flatten(items) == later
        subscriber.write_through(None)
        await assert_nothing_more(subscriber)
