"""The Engine contract (app/engine.py docstrings, DESIGN §2), run against every implementation.

Only the protocol methods are used: publish, read, window, listen, ping.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections import Counter
from contextlib import AsyncExitStack
from itertools import pairwise

from app.engine import TRIM_STEP, Engine
from app.model import ChannelKey, EventDraft, Retention, Topic, Window
from app.recovery import MAX_REPLAY_ID, NEW_ONLY, Recovered, recover
from app.sessions import SessionRecord
from tests.contract._support import (
    IDEMPOTENCY_TTL_S,
    KEEP_ALL,
    Recorder,
    draft,
    is_unused,
    publish_one,
)
from tests.fakes import FakeClock

SECOND_US = 1_000_000
TEN_SECONDS = Retention(max_age_us=10 * SECOND_US, max_count=1_000_000)
NEWEST_THREE = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=3)


# --- ordering -----------------------------------------------------------------------------


async def test_batch_gets_strictly_increasing_ids_acknowledged_in_draft_order(
    engine: Engine, channel: ChannelKey
) -> None:
    drafts = [draft({"n": n}) for n in range(6)]

    acks = await engine.publish(channel, drafts, KEEP_ALL)

    assert [ack.uuid for ack in acks] == [d.uuid for d in drafts]
    assert all(a.replay_id < b.replay_id for a, b in pairwise(acks))
    assert not any(ack.duplicate for ack in acks)


async def test_read_from_start_returns_events_oldest_first_exactly_as_published(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    first = [draft({"n": 1}), draft({"n": 2, "nested": {"x": [1, 2]}}, schema="schema-v1")]
    acks = await engine.publish(channel, first, KEEP_ALL)
    clock.advance(1)
    second = [draft({"n": 3})]
    acks += await engine.publish(channel, second, KEEP_ALL)

    page = await engine.read(channel, after=0, limit=100)

    assert [
        (e.key, e.replay_id, e.uuid, e.created_us, e.payload, e.created_by, e.schema)
        for e in page.events
    ] == [
        (channel, ack.replay_id, d.uuid, ack.created_us, d.payload, "test", d.schema)
        for ack, d in zip(acks, first + second, strict=True)
    ]


async def test_concurrent_publishers_each_get_their_own_acknowledgements(
    engine: Engine, channel: ChannelKey
) -> None:
    """Many callers at once on one channel (the Redis engine sends callers that arrive while a
    publish is in flight together): each gets one acknowledgement per draft, its own, in its
    order; a key repeated across callers stores once; the stream holds every event once."""
    batches = [[draft({"caller": c, "n": n}) for n in range(c % 3 + 1)] for c in range(60)]
    batches += [[draft({"repeat": r}, idempotency_key="same-key")] for r in range(5)]

    answers = await asyncio.gather(*(engine.publish(channel, b, KEEP_ALL) for b in batches))

    for batch, acks in zip(batches[:60], answers[:60], strict=True):
        assert [ack.uuid for ack in acks] == [d.uuid for d in batch]
        assert all(a.replay_id < b.replay_id for a, b in pairwise(acks))
        assert not any(ack.duplicate for ack in acks)
    repeats = [acks[0] for acks in answers[60:]]
    assert len({ack.replay_id for ack in repeats}) == 1
    assert sum(not ack.duplicate for ack in repeats) == 1
    stored = await engine.read(channel, after=0, limit=1000)
    expected = {ack.replay_id: ack.uuid for acks in answers for ack in acks}
    assert {event.replay_id: event.uuid for event in stored.events} == expected


# --- the ReplayId rule: max(previous + 1, now_us) ----------------------------------------


async def test_first_replay_id_is_the_clock_in_microseconds(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    now = clock.now_us()

    ack = await publish_one(engine, channel)

    assert ack.replay_id == now
    assert ack.created_us == now


async def test_ids_step_by_one_while_the_clock_stands_still(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    now = clock.now_us()

    batch = await engine.publish(channel, [draft(), draft()], KEEP_ALL)
    single = await publish_one(engine, channel)

    assert [ack.replay_id for ack in [*batch, single]] == [now, now + 1, now + 2]
    assert {ack.created_us for ack in [*batch, single]} == {now}


async def test_id_follows_the_clock_when_it_jumps_forward(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    await publish_one(engine, channel)
    clock.advance(5)

    ack = await publish_one(engine, channel)

    assert ack.replay_id == clock.now_us()
    assert ack.created_us == clock.now_us()


async def test_id_keeps_increasing_when_the_clock_goes_back(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    acks = await engine.publish(channel, [draft(), draft()], KEEP_ALL)
    clock.set_wall(clock.now_us() - 60 * SECOND_US)

    after_step_back = await engine.publish(channel, [draft(), draft()], KEEP_ALL)

    top = acks[-1].replay_id
    assert [ack.replay_id for ack in after_step_back] == [top + 1, top + 2]
    assert {ack.created_us for ack in after_step_back} == {clock.now_us()}
    page = await engine.read(channel, after=0, limit=10)
    assert [e.replay_id for e in page.events] == [ack.replay_id for ack in acks + after_step_back]
    assert page.events[-1].created_us == clock.now_us()


async def test_replay_ids_are_safe_javascript_integers(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    acks = await engine.publish(channel, [draft() for _ in range(3)], KEEP_ALL)
    clock.advance(3600)
    acks += await engine.publish(channel, [draft()], KEEP_ALL)

    assert all(0 < ack.replay_id <= MAX_REPLAY_ID < 2**53 for ack in acks)


async def test_replay_ids_are_per_channel_not_shared_between_channels(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    busy, quiet = ChannelKey(tenant, "/event/Busy__e"), ChannelKey(tenant, "/event/Quiet__e")
    await engine.publish(busy, [draft() for _ in range(3)], KEEP_ALL)

    ack = await publish_one(engine, quiet)

    assert ack.replay_id == clock.now_us()


# --- retention by count -------------------------------------------------------------------


async def test_count_retention_keeps_the_newest_events_and_the_low_water_mark(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    acks = []
    for n in range(5):
        acks.append(await publish_one(engine, channel, NEWEST_THREE, n=n))
        clock.advance(1)
    ids = [ack.replay_id for ack in acks]

    page = await engine.read(channel, after=0, limit=100)
    window = await engine.window(channel)

    assert [e.replay_id for e in page.events] == ids[2:]
    assert window == Window(earliest=ids[2], latest=ids[4], low_water=ids[1], count=3)
    assert page.window == window


async def test_count_retention_trims_a_batch_larger_than_the_window(
    engine: Engine, channel: ChannelKey
) -> None:
    acks = await engine.publish(channel, [draft({"n": n}) for n in range(5)], NEWEST_THREE)
    ids = [ack.replay_id for ack in acks]

    page = await engine.read(channel, after=0, limit=100)

    assert [e.replay_id for e in page.events] == ids[2:]
    assert page.window == Window(earliest=ids[2], latest=ids[4], low_water=ids[1], count=3)


# --- bounded trimming --------------------------------------------------------------------

NEWEST_TEN = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=10)


async def _publish_many(
    engine: Engine, channel: ChannelKey, count: int, retention: Retention
) -> list[int]:
    ids: list[int] = []
    for start in range(0, count, 5000):
        drafts = [draft({"n": n}) for n in range(start, min(count, start + 5000))]
        ids += [ack.replay_id for ack in await engine.publish(channel, drafts, retention)]
    return ids


def _honest_after(ids: list[int], evicted: int) -> Window:
    """The window once the `evicted` oldest of `ids` are gone and nothing else."""
    earliest = ids[evicted] if evicted < len(ids) else None
    return Window(earliest, ids[-1], ids[evicted - 1] if evicted else 0, len(ids) - evicted)


async def test_shrinking_retention_trims_in_bounded_steps_keeping_the_low_water_mark_exact(
    engine: Engine, channel: ChannelKey
) -> None:
    """Five trim steps' worth of events and a few, then a retention of 10: every call (publish
    or read) evicts at most TRIM_STEP of the oldest, the window after each step is exact
    (low-water mark = the newest evicted, nothing above it missing), and enough calls bring it
    down to 10."""
    ids = await _publish_many(engine, channel, 5 * TRIM_STEP + 7, KEEP_ALL)
    [ack] = await engine.publish(channel, [draft()], NEWEST_TEN)
    ids.append(ack.replay_id)
    calls = 1
    while True:
        page = await engine.read(channel, after=0, limit=1)
        calls += 1
        evicted = min(len(ids) - 10, calls * TRIM_STEP)
        assert page.window == _honest_after(ids, evicted), calls
        assert [event.replay_id for event in page.events] == [ids[evicted]]
        if evicted == len(ids) - 10:
            break
    assert calls == math.ceil((len(ids) - 10) / TRIM_STEP)
    assert await engine.window(channel) == _honest_after(ids, len(ids) - 10)


async def test_expiring_a_long_window_evicts_in_bounded_steps(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = await _publish_many(engine, channel, 2 * TRIM_STEP + 5, TEN_SECONDS)
    clock.advance(11)
    windows = [(await engine.read(channel, after=0, limit=1)).window for _ in range(3)]

    assert windows == [_honest_after(ids, n * TRIM_STEP) for n in (1, 2)] + [
        _honest_after(ids, len(ids))
    ]


# --- retention by age ---------------------------------------------------------------------


async def test_expired_events_leave_an_empty_window_that_keeps_top_and_low_water(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    old = await publish_one(engine, channel, TEN_SECONDS)
    clock.advance(11)

    window = await engine.window(channel)
    page = await engine.read(channel, after=0, limit=100)

    expected = Window(earliest=None, latest=old.replay_id, low_water=old.replay_id, count=0)
    assert window == expected
    assert page.events == ()
    assert page.window == expected


async def test_top_survives_expiry_so_ids_are_never_reused(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    published_at = clock.now_us()
    old = await publish_one(engine, channel, TEN_SECONDS)
    clock.advance(11)
    assert (await engine.window(channel)).count == 0
    # Even with the clock back where it was, the next id must be above the expired one.
    clock.set_wall(published_at)

    new = await publish_one(engine, channel, TEN_SECONDS)

    assert new.replay_id == old.replay_id + 1
    window = await engine.window(channel)
    assert window == Window(
        earliest=new.replay_id, latest=new.replay_id, low_water=old.replay_id, count=1
    )


async def test_next_id_after_expiry_follows_the_clock(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    old = await publish_one(engine, channel, TEN_SECONDS)
    clock.advance(11)

    new = await publish_one(engine, channel, TEN_SECONDS)

    assert new.replay_id == clock.now_us() > old.replay_id


async def test_event_exactly_max_age_old_is_kept_and_one_microsecond_older_is_not(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    published_at = clock.now_us()
    ack = await publish_one(engine, channel, TEN_SECONDS)

    clock.set_wall(published_at + TEN_SECONDS.max_age_us)
    assert (await engine.window(channel)).count == 1
    assert [e.replay_id for e in (await engine.read(channel, 0, 10)).events] == [ack.replay_id]

    clock.set_wall(published_at + TEN_SECONDS.max_age_us + 1)
    assert (await engine.window(channel)).count == 0
    assert (await engine.read(channel, 0, 10)).events == ()


async def test_events_younger_than_max_age_are_kept(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    born = (await engine.window(channel)).low_water
    acks = [await publish_one(engine, channel, TEN_SECONDS, n=n) for n in range(3)]
    clock.advance(9.5)

    page = await engine.read(channel, after=born, limit=100)

    assert [e.replay_id for e in page.events] == [ack.replay_id for ack in acks]
    assert page.window.low_water == born
    assert page.window.count == 3


async def test_partial_expiry_keeps_the_newer_events(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    older = await publish_one(engine, channel, TEN_SECONDS, n=1)
    clock.advance(6)
    newer = await publish_one(engine, channel, TEN_SECONDS, n=2)
    clock.advance(5)

    page = await engine.read(channel, after=0, limit=100)

    assert [e.replay_id for e in page.events] == [newer.replay_id]
    assert page.window == Window(
        earliest=newer.replay_id, latest=newer.replay_id, low_water=older.replay_id, count=1
    )


# --- read(after, limit) -------------------------------------------------------------------


async def _five_spaced_events(engine: Engine, channel: ChannelKey, clock: FakeClock) -> list[int]:
    ids = []
    for n in range(5):
        ids.append((await publish_one(engine, channel, n=n)).replay_id)
        clock.advance(1)
    return ids


async def test_read_is_exclusive_of_after_and_respects_limit(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = await _five_spaced_events(engine, channel, clock)

    page = await engine.read(channel, after=ids[1], limit=2)

    assert [e.replay_id for e in page.events] == ids[2:4]


async def test_read_with_limit_one_returns_only_the_oldest(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = await _five_spaced_events(engine, channel, clock)

    page = await engine.read(channel, after=0, limit=1)

    assert [e.replay_id for e in page.events] == ids[:1]


async def test_read_after_a_position_between_two_ids_starts_at_the_next_id(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = await _five_spaced_events(engine, channel, clock)

    page = await engine.read(channel, after=ids[1] + 1, limit=100)

    assert [e.replay_id for e in page.events] == ids[2:]


async def test_read_after_latest_is_empty(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    ids = await _five_spaced_events(engine, channel, clock)

    page = await engine.read(channel, after=ids[-1], limit=100)

    assert page.events == ()
    assert page.window.latest == ids[-1]


async def test_read_returns_the_window_of_the_same_instant(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    born = (await engine.window(channel)).low_water
    ids = await _five_spaced_events(engine, channel, clock)

    page = await engine.read(channel, after=ids[2], limit=1)

    assert page.window == await engine.window(channel)
    assert page.window == Window(earliest=ids[0], latest=ids[-1], low_water=born, count=5)


async def test_the_position_an_empty_channel_hands_out_resumes_exactly_once_events_arrive(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    handed_out = recover(NEW_ONLY, await engine.window(channel))
    assert isinstance(handed_out, Recovered)
    clock.advance(1)
    published = await publish_one(engine, channel, KEEP_ALL)

    assert recover(handed_out.after, await engine.window(channel)) == handed_out
    page = await engine.read(channel, handed_out.after, 10)
    assert [event.replay_id for event in page.events] == [published.replay_id]


async def test_never_used_channel_has_an_empty_window_and_no_history(
    engine: Engine, channel: ChannelKey
) -> None:
    assert is_unused(await engine.window(channel))
    page = await engine.read(channel, after=0, limit=100)
    assert page.events == ()
    assert is_unused(page.window)


# --- read(after, limit, max_bytes) --------------------------------------------------------


def _sized(size: int) -> EventDraft:
    """A draft whose payload is exactly `size` bytes of JSON."""
    return EventDraft(str(uuid.uuid4()), b'{"p":"' + b"x" * (size - 8) + b'"}', "test")


async def _publish_sized(engine: Engine, channel: ChannelKey, sizes: list[int]) -> list[int]:
    acks = await engine.publish(channel, [_sized(size) for size in sizes], KEEP_ALL)
    return [ack.replay_id for ack in acks]


async def test_read_stops_before_the_event_that_would_exceed_the_byte_budget(
    engine: Engine, channel: ChannelKey
) -> None:
    ids = await _publish_sized(engine, channel, [100, 100, 100, 100])

    page = await engine.read(channel, after=0, limit=100, max_bytes=250)

    assert [e.replay_id for e in page.events] == ids[:2]
    assert [e.size for e in page.events] == [100, 100]


async def test_read_takes_events_that_fill_the_byte_budget_exactly(
    engine: Engine, channel: ChannelKey
) -> None:
    ids = await _publish_sized(engine, channel, [100, 100, 100, 100])

    page = await engine.read(channel, after=ids[0], limit=100, max_bytes=300)

    assert [e.replay_id for e in page.events] == ids[1:]


async def test_read_returns_one_event_larger_than_the_whole_budget(
    engine: Engine, channel: ChannelKey
) -> None:
    ids = await _publish_sized(engine, channel, [5000, 100])

    page = await engine.read(channel, after=0, limit=100, max_bytes=1000)

    assert [e.replay_id for e in page.events] == ids[:1]
    assert page.events[0].size == 5000


async def test_read_never_skips_a_large_event_to_fit_a_smaller_one(
    engine: Engine, channel: ChannelKey
) -> None:
    ids = await _publish_sized(engine, channel, [100, 5000, 100])

    page = await engine.read(channel, after=0, limit=100, max_bytes=1000)

    assert [e.replay_id for e in page.events] == ids[:1]


async def test_read_stops_at_the_count_limit_before_the_byte_budget(
    engine: Engine, channel: ChannelKey
) -> None:
    ids = await _publish_sized(engine, channel, [100] * 5)

    page = await engine.read(channel, after=0, limit=2, max_bytes=1_000_000)

    assert [e.replay_id for e in page.events] == ids[:2]


async def test_pages_under_a_byte_budget_chain_through_every_event_once(
    engine: Engine, channel: ChannelKey
) -> None:
    sizes = [300, 50, 900, 2000, 10, 10, 10, 700, 450, 450, 100]
    ids = await _publish_sized(engine, channel, sizes)

    pages: list[list[int]] = []
    after = 0
    while events := (await engine.read(channel, after, limit=4, max_bytes=1000)).events:
        pages.append([e.size for e in events])
        after = events[-1].replay_id

    assert [size for page in pages for size in page] == sizes
    # Each page is within the budget, or a single event over it; and none could take its
    # successor's first event without going over the budget or the count.
    assert all(sum(page) <= 1000 or len(page) == 1 for page in pages)
    for page, following in pairwise(pages):
        assert len(page) == 4 or sum(page) + following[0] > 1000
    assert after == ids[-1]


# --- idempotency --------------------------------------------------------------------------


async def test_same_idempotency_key_returns_the_original_acknowledgement_once_stored(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    [original] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)
    clock.advance(1)

    [retry] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)

    assert not original.duplicate
    assert retry.duplicate
    assert (retry.replay_id, retry.uuid, retry.created_us) == (
        original.replay_id,
        original.uuid,
        original.created_us,
    )
    page = await engine.read(channel, after=0, limit=100)
    assert [e.uuid for e in page.events] == [original.uuid]
    assert page.window.count == 1


async def test_different_idempotency_keys_store_separate_events(
    engine: Engine, channel: ChannelKey
) -> None:
    [a] = await engine.publish(channel, [draft(idempotency_key="k-a")], KEEP_ALL)
    [b] = await engine.publish(channel, [draft(idempotency_key="k-b")], KEEP_ALL)

    assert not a.duplicate
    assert not b.duplicate
    assert b.replay_id > a.replay_id
    assert (await engine.window(channel)).count == 2


async def test_idempotency_key_is_scoped_to_channel_and_tenant(
    engine: Engine, channel: ChannelKey, other_tenant: str
) -> None:
    other_channel = ChannelKey(channel.tenant, "/event/Other__e")
    same_name_other_tenant = ChannelKey(other_tenant, channel.name)

    acks = [
        (await engine.publish(key, [draft(idempotency_key="shared")], KEEP_ALL))[0]
        for key in (channel, other_channel, same_name_other_tenant)
    ]

    assert not any(ack.duplicate for ack in acks)
    assert len({ack.uuid for ack in acks}) == 3
    for key in (channel, other_channel, same_name_other_tenant):
        assert (await engine.window(key)).count == 1


async def test_idempotency_key_is_remembered_within_the_ttl(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    [original] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)
    clock.advance(IDEMPOTENCY_TTL_S - 1)

    [retry] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)

    assert retry.duplicate
    assert retry.replay_id == original.replay_id
    assert (await engine.window(channel)).count == 1


async def test_idempotency_key_is_forgotten_after_the_ttl_and_stores_anew(
    engine: Engine, channel: ChannelKey, clock: FakeClock
) -> None:
    [original] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)
    clock.advance(IDEMPOTENCY_TTL_S + 1)
    late = draft(idempotency_key="k-1")

    [stored] = await engine.publish(channel, [late], KEEP_ALL)

    assert not stored.duplicate
    assert stored.uuid == late.uuid
    assert stored.replay_id > original.replay_id
    page = await engine.read(channel, after=0, limit=100)
    assert [e.uuid for e in page.events] == [original.uuid, late.uuid]
    # ...and the re-stored key is remembered again from now on.
    [again] = await engine.publish(channel, [draft(idempotency_key="k-1")], KEEP_ALL)
    assert again.duplicate
    assert again.replay_id == stored.replay_id


async def test_duplicate_keys_inside_one_batch_store_one_event(
    engine: Engine, channel: ChannelKey
) -> None:
    drafts = [
        draft({"n": 1}, idempotency_key="k-1"),
        draft({"n": 2}, idempotency_key="k-1"),
        draft({"n": 3}, idempotency_key="k-2"),
        draft({"n": 4}),
    ]

    acks = await engine.publish(channel, drafts, KEEP_ALL)

    assert [ack.duplicate for ack in acks] == [False, True, False, False]
    assert (acks[1].replay_id, acks[1].uuid, acks[1].created_us) == (
        acks[0].replay_id,
        acks[0].uuid,
        acks[0].created_us,
    )
    assert acks[0].replay_id < acks[2].replay_id < acks[3].replay_id
    page = await engine.read(channel, after=0, limit=100)
    assert [e.uuid for e in page.events] == [drafts[0].uuid, drafts[2].uuid, drafts[3].uuid]


async def test_duplicate_is_not_announced_to_live_listeners(
    engine: Engine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with engine.listen(Topic.of(channel), recorder, recorder.missed):
        [original] = await engine.publish(channel, [draft(idempotency_key="k")], KEEP_ALL)
        await engine.publish(channel, [draft(idempotency_key="k")], KEEP_ALL)
        marker = await publish_one(engine, channel)
        await recorder.wait_for(2)

    assert recorder.ids == [original.replay_id, marker.replay_id]


# --- tenant isolation ---------------------------------------------------------------------


async def test_same_channel_name_in_two_tenants_never_shares_history_or_ids(
    engine: Engine, channel: ChannelKey, other_tenant: str, clock: FakeClock
) -> None:
    other = ChannelKey(other_tenant, channel.name)
    mine = await engine.publish(channel, [draft({"t": "a"}) for _ in range(3)], KEEP_ALL)

    [theirs] = await engine.publish(other, [draft({"t": "b"})], KEEP_ALL)

    assert theirs.replay_id == clock.now_us()  # tenant A's top does not push tenant B's ids
    mine_page = await engine.read(channel, after=0, limit=100)
    theirs_page = await engine.read(other, after=0, limit=100)
    assert [e.uuid for e in mine_page.events] == [ack.uuid for ack in mine]
    assert [e.uuid for e in theirs_page.events] == [theirs.uuid]
    assert {e.key for e in theirs_page.events} == {other}
    assert mine_page.window.count == 3
    assert theirs_page.window.count == 1


async def test_live_listeners_never_see_another_tenants_events(
    engine: Engine, channel: ChannelKey, other_tenant: str
) -> None:
    other = ChannelKey(other_tenant, channel.name)
    mine, mine_wild, theirs, theirs_wild = Recorder(), Recorder(), Recorder(), Recorder()
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(engine.listen(Topic.of(channel), mine, mine.missed))
        await stack.enter_async_context(
            engine.listen(Topic(channel.tenant, "/event/**"), mine_wild, mine_wild.missed)
        )
        await stack.enter_async_context(engine.listen(Topic.of(other), theirs, theirs.missed))
        await stack.enter_async_context(
            engine.listen(Topic(other_tenant, "/event/**"), theirs_wild, theirs_wild.missed)
        )

        a = await publish_one(engine, channel, t="a")
        b = await publish_one(engine, other, t="b")
        for recorder in (mine, mine_wild, theirs, theirs_wild):
            await recorder.wait_for(1)

    assert [e.uuid for e in mine.events] == [a.uuid]
    assert [e.uuid for e in mine_wild.events] == [a.uuid]
    assert [e.uuid for e in theirs.events] == [b.uuid]
    assert [e.uuid for e in theirs_wild.events] == [b.uuid]
    assert {e.key for e in theirs.events + theirs_wild.events} == {other}


async def test_dropping_a_tenant_forgets_its_channels_and_nothing_of_another_tenant(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    mine = [ChannelKey(tenant, name) for name in ("/event/A", "/event/B/c")]
    theirs = ChannelKey(other_tenant, "/event/A")
    old = [(await engine.publish(key, [draft(idempotency_key="k")], KEEP_ALL))[0] for key in mine]
    kept = await publish_one(engine, theirs, n=1)

    assert await engine.drop_tenant(tenant) == 2

    for key in mine:
        assert is_unused(await engine.window(key))
        assert list((await engine.read(key, after=0, limit=10)).events) == []
    assert await engine.channel_names(tenant) == []
    assert [e.replay_id for e in (await engine.read(theirs, 0, 10)).events] == [kept.replay_id]
    assert await engine.channel_names(other_tenant) == ["/event/A"]
    # The idempotency key is forgotten too: the same key stores a new event.
    [again] = await engine.publish(mine[0], [draft(idempotency_key="k")], KEEP_ALL)
    assert not again.duplicate
    assert again.uuid != old[0].uuid
    assert await engine.channel_names(tenant) == ["/event/A"]


async def test_dropping_a_tenant_forgets_its_bayeux_sessions_and_nothing_of_another(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    mine = SessionRecord(client_id=uuid.uuid4().hex, tenant=tenant, owner="client-1")
    theirs = SessionRecord(client_id=uuid.uuid4().hex, tenant=other_tenant, owner="client-2")
    for record in (mine, theirs):
        assert await engine.session_create(record, 60 * SECOND_US, 10)

    await engine.drop_tenant(tenant)

    assert await engine.session_get(mine.client_id) is None
    assert await engine.session_count(tenant) == 0
    assert await engine.session_get(theirs.client_id) == theirs
    assert await engine.session_count(other_tenant) == 1


# --- listen -------------------------------------------------------------------------------


async def test_listener_receives_each_stored_event_in_replay_id_order(
    engine: Engine, channel: ChannelKey
) -> None:
    recorder = Recorder()
    async with engine.listen(Topic.of(channel), recorder, recorder.missed):
        acks = [await publish_one(engine, channel, n=n) for n in range(3)]
        acks += await engine.publish(channel, [draft({"n": 3}), draft({"n": 4})], KEEP_ALL)
        events = await recorder.wait_for(5)

    stored = await engine.read(channel, after=0, limit=100)
    assert [e.replay_id for e in events] == [ack.replay_id for ack in acks]
    assert events == list(stored.events)


async def test_listener_does_not_see_events_published_before_it_started(
    engine: Engine, channel: ChannelKey
) -> None:
    await publish_one(engine, channel, n=0)
    recorder = Recorder()
    async with engine.listen(Topic.of(channel), recorder, recorder.missed):
        ack = await publish_one(engine, channel, n=1)
        events = await recorder.wait_for(1)

    assert [e.replay_id for e in events] == [ack.replay_id]


async def test_a_listener_is_live_as_soon_as_listen_returns(engine: Engine, tenant: str) -> None:
    # An event stored right after listen() returns must reach the listener; with an engine
    # whose subscriptions take effect later (Redis confirms SUBSCRIBE asynchronously) some of
    # these would be lost. Fresh channels and patterns every round, so no subscription is reused.
    for round_number in range(100):
        channel = ChannelKey(tenant, f"/event/Fresh{round_number}")
        pattern = Topic(tenant, f"/event/Wild{round_number}/*")
        under_pattern = ChannelKey(tenant, f"/event/Wild{round_number}/x")
        exact, wild = Recorder(), Recorder()
        async with engine.listen(Topic.of(channel), exact, exact.missed):
            ack = await publish_one(engine, channel)
            assert [e.replay_id for e in await exact.wait_for(1)] == [ack.replay_id]
        async with engine.listen(pattern, wild, wild.missed):
            ack = await publish_one(engine, under_pattern)
            assert [e.replay_id for e in await wild.wait_for(1)] == [ack.replay_id]


async def test_single_segment_wildcard_matches_one_level_only(engine: Engine, tenant: str) -> None:
    a, b, deeper = (ChannelKey(tenant, name) for name in ("/event/A", "/event/B", "/event/A/b"))
    one_level, any_depth = Recorder(), Recorder()
    async with (
        engine.listen(Topic(tenant, "/event/*"), one_level, one_level.missed),
        engine.listen(Topic(tenant, "/event/**"), any_depth, any_depth.missed),
    ):
        acks = [await publish_one(engine, key) for key in (deeper, a, b)]
        # `/event/**` sees all three, so by then `/event/*` has been offered all three too.
        await any_depth.wait_for(3)
        await one_level.wait_for(2)

    # Across channels no order is promised (a Redis Cluster announces from several nodes).
    assert Counter((e.key, e.replay_id) for e in one_level.events) == Counter(
        [(a, acks[1].replay_id), (b, acks[2].replay_id)]
    )


async def test_multi_segment_wildcard_matches_every_depth(engine: Engine, tenant: str) -> None:
    keys = [ChannelKey(tenant, name) for name in ("/event/A", "/event/A/b", "/event/B/c/d")]
    recorder = Recorder()
    async with engine.listen(Topic(tenant, "/event/**"), recorder, recorder.missed):
        acks = [await publish_one(engine, key) for key in keys]
        events = await recorder.wait_for(3)

    assert Counter((e.key, e.replay_id) for e in events) == Counter(
        [(key, ack.replay_id) for key, ack in zip(keys, acks, strict=True)]
    )


async def test_nothing_is_delivered_after_the_listen_context_exits(
    engine: Engine, channel: ChannelKey
) -> None:
    leaver, witness = Recorder(), Recorder()
    async with engine.listen(Topic.of(channel), witness, witness.missed):
        async with engine.listen(Topic.of(channel), leaver, leaver.missed):
            first = await publish_one(engine, channel, n=1)
            await leaver.wait_for(1)
        second = await publish_one(engine, channel, n=2)
        # The witness on the same topic got the second event, so the leaver was offered it too.
        await witness.wait_for(2)

    assert leaver.ids == [first.replay_id]
    assert witness.ids == [first.replay_id, second.replay_id]


async def test_two_listeners_on_one_topic_both_get_every_event(
    engine: Engine, channel: ChannelKey
) -> None:
    one, two = Recorder(), Recorder()
    async with (
        engine.listen(Topic.of(channel), one, one.missed),
        engine.listen(Topic.of(channel), two, two.missed),
    ):
        acks = await engine.publish(channel, [draft({"n": n}) for n in range(3)], KEEP_ALL)
        await one.wait_for(3)
        await two.wait_for(3)

    assert one.ids == two.ids == [ack.replay_id for ack in acks]


async def test_listener_on_one_channel_ignores_other_channels(
    engine: Engine, channel: ChannelKey
) -> None:
    other = ChannelKey(channel.tenant, "/event/Other__e")
    recorder, witness = Recorder(), Recorder()
    async with (
        engine.listen(Topic.of(channel), recorder, recorder.missed),
        engine.listen(Topic.of(other), witness, witness.missed),
    ):
        await publish_one(engine, other)
        mine = await publish_one(engine, channel)
        await witness.wait_for(1)
        await recorder.wait_for(1)

    assert recorder.ids == [mine.replay_id]


# --- ping ---------------------------------------------------------------------------------


async def test_ping_succeeds_on_a_working_engine(engine: Engine) -> None:
    await engine.ping()
