"""The Engine's Bayeux session contract (app/engine.py docstrings), run against every engine.

Only protocol methods are used (session_*, channel_names, publish, window), and time moves only
through the injected clock, so an engine backed by an external store runs these unchanged.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from app.engine import Engine
from app.model import ChannelKey, Retention
from app.sessions import SessionChange, SessionRecord
from tests.contract._support import publish_one
from tests.fakes import FakeClock

SECOND_US = 1_000_000
TTL_US = 10 * SECOND_US
PLENTY = 1_000
A = "/event/A__e"
B = "/event/B__e"


def record(tenant: str, **fields: Any) -> SessionRecord:
    """A new session of `tenant` with a fresh client id, other fields as given."""
    fresh = SessionRecord(client_id=uuid.uuid4().hex, tenant=tenant, owner="client-1")
    return replace(fresh, **fields)


# --- create / get ---------------------------------------------------------------------------


async def test_created_session_reads_back_equal(engine: Engine, tenant: str) -> None:
    created = record(
        tenant,
        ack=True,
        connected=True,
        batch=7,
        subscriptions={A: 100, "/event/*": 200},
        positions={A: 1_700_000_000_000_000, B: 5},
        pending={6: {A: 1_700_000_000_000_001}, 7: {B: 9}},
        sweep=B,
    )

    stored = await engine.session_create(created, TTL_US, PLENTY)
    read = await engine.session_get(created.client_id)

    assert stored is True
    assert read == created


async def test_unknown_session_is_none(engine: Engine) -> None:
    assert await engine.session_get(uuid.uuid4().hex) is None


async def test_sessions_are_counted_per_tenant(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    for _ in range(3):
        assert await engine.session_create(record(tenant), TTL_US, PLENTY)
    assert await engine.session_create(record(other_tenant), TTL_US, PLENTY)

    assert await engine.session_count(tenant) == 3
    assert await engine.session_count(other_tenant) == 1
    assert await engine.session_count(f"unused-{uuid.uuid4().hex}") == 0


async def test_create_is_refused_at_the_tenant_limit(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    first, second, refused = record(tenant), record(tenant), record(tenant)

    results = [await engine.session_create(r, TTL_US, 2) for r in (first, second, refused)]
    other = await engine.session_create(record(other_tenant), TTL_US, 2)

    assert results == [True, True, False]
    assert await engine.session_get(refused.client_id) is None
    assert await engine.session_get(first.client_id) == first
    assert await engine.session_count(tenant) == 2
    assert other is True


async def test_concurrent_creates_never_exceed_the_limit(engine: Engine, tenant: str) -> None:
    records = [record(tenant) for _ in range(10)]

    results = await asyncio.gather(*(engine.session_create(r, TTL_US, 3) for r in records))

    assert sorted(results) == [False] * 7 + [True] * 3
    assert await engine.session_count(tenant) == 3


async def test_expired_sessions_free_their_place(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    assert await engine.session_create(record(tenant), TTL_US, 1)
    clock.set_wall(clock.now_us() + TTL_US + 1)

    later = record(tenant)

    assert await engine.session_create(later, TTL_US, 1) is True
    assert await engine.session_get(later.client_id) == later


# --- expiry ---------------------------------------------------------------------------------


async def test_session_expires_after_its_ttl(engine: Engine, tenant: str, clock: FakeClock) -> None:
    created = record(tenant)
    start = clock.now_us()
    await engine.session_create(created, TTL_US, PLENTY)

    clock.set_wall(start + TTL_US - 1)
    just_before = await engine.session_get(created.client_id)
    count_before = await engine.session_count(tenant)
    clock.set_wall(start + TTL_US + 1)
    just_after = await engine.session_get(created.client_id)
    count_after = await engine.session_count(tenant)

    assert just_before == created
    assert count_before == 1
    assert just_after is None
    assert count_after == 0


async def test_count_excludes_expired_sessions_without_reading_them(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    start = clock.now_us()
    await engine.session_create(record(tenant), TTL_US, PLENTY)
    await engine.session_create(record(tenant), 3 * TTL_US, PLENTY)

    clock.set_wall(start + 2 * TTL_US)

    assert await engine.session_count(tenant) == 1


# --- update ---------------------------------------------------------------------------------


async def test_update_applies_every_field_of_the_change(engine: Engine, tenant: str) -> None:
    created = record(
        tenant,
        ack=True,
        batch=1,
        subscriptions={A: 100, B: 100},
        positions={A: 50, B: 70},
        pending={1: {A: 60}},
    )
    await engine.session_create(created, TTL_US, PLENTY)

    returned = await engine.session_update(
        created.client_id,
        SessionChange(
            subscribe={"/event/C__e": 300},
            unsubscribe=(B,),
            set_positions={"/event/C__e": 10},
            advance={A: 40, B: 90},
            stage={A: 80},
            commit_through=1,
            connected=True,
            sweep="/event/C__e",
        ),
        TTL_US,
    )
    read = await engine.session_get(created.client_id)

    assert returned == read
    assert read is not None
    assert read.sweep == "/event/C__e"
    assert read.subscriptions == {A: 100, "/event/C__e": 300}
    assert read.positions == {A: 60, B: 90, "/event/C__e": 10}
    assert read.pending == {2: {A: 80}}
    assert read.batch == 2
    assert read.connected is True
    assert (read.client_id, read.tenant, read.owner, read.ack) == (
        created.client_id,
        tenant,
        "client-1",
        True,
    )


async def test_staged_batches_commit_on_a_later_update(engine: Engine, tenant: str) -> None:
    created = record(tenant, ack=True, subscriptions={A: 1}, positions={A: 10})
    await engine.session_create(created, TTL_US, PLENTY)
    cid = created.client_id

    await engine.session_update(cid, SessionChange(stage={A: 20}), TTL_US)
    await engine.session_update(cid, SessionChange(stage={A: 30}), TTL_US)
    staged = await engine.session_get(cid)
    await engine.session_update(cid, SessionChange(commit_through=1), TTL_US)
    first = await engine.session_get(cid)
    await engine.session_update(cid, SessionChange(commit_through=2), TTL_US)
    second = await engine.session_get(cid)

    assert staged is not None
    assert first is not None
    assert second is not None
    assert (staged.positions, staged.pending, staged.batch) == (
        {A: 10},
        {1: {A: 20}, 2: {A: 30}},
        2,
    )
    assert (first.positions, first.pending) == ({A: 20}, {2: {A: 30}})
    assert (second.positions, second.pending) == ({A: 30}, {})


async def test_advance_moves_positions_forward_only(engine: Engine, tenant: str) -> None:
    created = record(tenant, positions={A: 50})
    await engine.session_create(created, TTL_US, PLENTY)

    await engine.session_update(created.client_id, SessionChange(advance={A: 40}), TTL_US)
    back = await engine.session_get(created.client_id)
    await engine.session_update(created.client_id, SessionChange(advance={A: 60}), TTL_US)
    forward = await engine.session_get(created.client_id)

    assert back is not None
    assert forward is not None
    assert back.positions == {A: 50}
    assert forward.positions == {A: 60}


async def test_concurrent_updates_lose_nothing(engine: Engine, tenant: str) -> None:
    created = record(tenant)
    await engine.session_create(created, TTL_US, PLENTY)
    channels = [f"/event/C{n}__e" for n in range(20)]

    await asyncio.gather(
        *(
            engine.session_update(
                created.client_id,
                SessionChange(subscribe={name: n}, advance={name: n}),
                TTL_US,
            )
            for n, name in enumerate(channels)
        )
    )
    read = await engine.session_get(created.client_id)

    assert read is not None
    assert read.subscriptions == {name: n for n, name in enumerate(channels)}
    assert read.positions == {name: n for n, name in enumerate(channels)}


async def test_update_restarts_the_ttl(engine: Engine, tenant: str, clock: FakeClock) -> None:
    created = record(tenant)
    start = clock.now_us()
    await engine.session_create(created, TTL_US, PLENTY)

    clock.set_wall(start + 8 * SECOND_US)
    await engine.session_update(created.client_id, SessionChange(connected=True), TTL_US)
    clock.set_wall(start + 17 * SECOND_US)
    alive = await engine.session_get(created.client_id)
    clock.set_wall(start + 18 * SECOND_US + 1)
    gone = await engine.session_get(created.client_id)

    assert alive is not None
    assert alive.connected is True
    assert gone is None


async def test_update_uses_its_own_ttl(engine: Engine, tenant: str, clock: FakeClock) -> None:
    created = record(tenant)
    start = clock.now_us()
    await engine.session_create(created, TTL_US, PLENTY)

    await engine.session_update(created.client_id, SessionChange(), 3 * TTL_US)
    clock.set_wall(start + 2 * TTL_US)
    longer = await engine.session_get(created.client_id)
    await engine.session_update(created.client_id, SessionChange(), SECOND_US)
    clock.set_wall(start + 2 * TTL_US + SECOND_US + 1)
    shorter = await engine.session_get(created.client_id)

    assert longer == created
    assert shorter is None


async def test_update_of_a_missing_session_creates_nothing(engine: Engine, tenant: str) -> None:
    missing = uuid.uuid4().hex

    updated = await engine.session_update(
        missing, SessionChange(subscribe={A: 1}, connected=True), TTL_US
    )

    assert updated is None
    assert await engine.session_get(missing) is None
    assert await engine.session_count(tenant) == 0


async def test_update_of_an_expired_session_returns_none_and_revives_nothing(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    created = record(tenant)
    await engine.session_create(created, TTL_US, PLENTY)
    clock.set_wall(clock.now_us() + TTL_US + 1)

    updated = await engine.session_update(
        created.client_id, SessionChange(subscribe={A: 1}), 10 * TTL_US
    )

    assert updated is None
    assert await engine.session_get(created.client_id) is None
    assert await engine.session_count(tenant) == 0


# --- delete ---------------------------------------------------------------------------------


async def test_delete_removes_only_that_session(engine: Engine, tenant: str) -> None:
    kept, deleted = record(tenant), record(tenant)
    await engine.session_create(kept, TTL_US, PLENTY)
    await engine.session_create(deleted, TTL_US, PLENTY)

    await engine.session_delete(deleted.client_id)

    assert await engine.session_get(deleted.client_id) is None
    assert await engine.session_get(kept.client_id) == kept
    assert await engine.session_count(tenant) == 1
    assert await engine.session_update(deleted.client_id, SessionChange(), TTL_US) is None


async def test_delete_of_a_missing_session_is_a_no_op(engine: Engine, tenant: str) -> None:
    await engine.session_delete(uuid.uuid4().hex)

    assert await engine.session_count(tenant) == 0


async def test_deleted_session_frees_its_place(engine: Engine, tenant: str) -> None:
    first = record(tenant)
    await engine.session_create(first, TTL_US, 1)
    await engine.session_delete(first.client_id)

    assert await engine.session_create(record(tenant), TTL_US, 1) is True


# --- channel names --------------------------------------------------------------------------


async def test_channel_names_lists_the_tenants_published_channels(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    await publish_one(engine, ChannelKey(tenant, A))
    await publish_one(engine, ChannelKey(tenant, A))
    await publish_one(engine, ChannelKey(tenant, "/event/deep/B"))
    await publish_one(engine, ChannelKey(other_tenant, "/event/Other__e"))

    names = await engine.channel_names(tenant)

    assert sorted(names) == sorted([A, "/event/deep/B"])
    assert await engine.channel_names(other_tenant) == ["/event/Other__e"]
    assert await engine.channel_names(f"unused-{uuid.uuid4().hex}") == []
    assert await engine.channel_count(tenant) == 2
    assert await engine.channel_count(other_tenant) == 1
    assert await engine.channel_count(f"unused-{uuid.uuid4().hex}") == 0


async def test_channel_count_follows_new_channels_and_a_dropped_tenant(
    engine: Engine, tenant: str
) -> None:
    await publish_one(engine, ChannelKey(tenant, A))
    assert await engine.channel_count(tenant) == 1
    await publish_one(engine, ChannelKey(tenant, "/event/B"))
    assert await engine.channel_count(tenant) == 2

    await engine.drop_tenant(tenant)

    assert await engine.channel_count(tenant) == 0


async def test_channel_names_keeps_channels_whose_events_expired(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    short = Retention(max_age_us=SECOND_US, max_count=10)
    await publish_one(engine, ChannelKey(tenant, A), short)
    clock.advance(60)

    window = await engine.window(ChannelKey(tenant, A))
    names = await engine.channel_names(tenant)

    assert window.count == 0
    assert names == [A]


async def test_extend_only_updates_never_shorten_a_session(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    session = record(tenant)
    assert await engine.session_create(session, 3 * TTL_US, 10)

    await engine.session_update(session.client_id, SessionChange(), TTL_US, extend_only=True)
    clock.advance(2 * TTL_US / 1_000_000)

    assert await engine.session_get(session.client_id) is not None


async def test_plain_updates_set_the_expiry_from_now(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    session = record(tenant)
    assert await engine.session_create(session, 3 * TTL_US, 10)

    await engine.session_update(session.client_id, SessionChange(), TTL_US)
    clock.advance(2 * TTL_US / 1_000_000)

    assert await engine.session_get(session.client_id) is None


async def test_session_signals_reach_every_listener(engine: Engine) -> None:
    received: list[list[tuple[str, str]]] = [[], []]
    both = asyncio.Event()

    def listener(index: int) -> Callable[[str, str], None]:
        def deliver(client: str, signal: str) -> None:
            received[index].append((client, signal))
            if all(len(signals) == 2 for signals in received):
                both.set()

        return deliver

    async with engine.session_signals(listener(0)), engine.session_signals(listener(1)):
        await engine.session_signal("c1", "wake resubscribed")
        await engine.session_signal("c2", "connect 7")
        async with asyncio.timeout(5):  # pub/sub delivery is asynchronous on Redis
            await both.wait()
    assert received[0] == received[1] == [("c1", "wake resubscribed"), ("c2", "connect 7")]


async def test_a_stale_generation_changes_nothing(engine: Engine, tenant: str) -> None:
    session = record(tenant)
    assert await engine.session_create(session, TTL_US, 10)
    first = await engine.session_update(
        session.client_id, SessionChange(new_generation=True), TTL_US
    )
    second = await engine.session_update(
        session.client_id, SessionChange(new_generation=True), TTL_US
    )
    assert first is not None
    assert second is not None

    stale = await engine.session_update(
        session.client_id,
        SessionChange(advance={"/event/A": 5}, if_generation=first.generation),
        TTL_US,
    )
    current = await engine.session_update(
        session.client_id,
        SessionChange(advance={"/event/A": 9}, if_generation=second.generation),
        TTL_US,
    )

    assert stale is not None
    assert stale.positions.get("/event/A") is None
    assert current is not None
    assert current.positions["/event/A"] == 9
    assert current.generation == second.generation == first.generation + 1


# --- connect changes ------------------------------------------------------------------------


async def test_a_connect_change_applies_like_an_update(engine: Engine, tenant: str) -> None:
    created = record(tenant, subscriptions={A: 1})
    await engine.session_create(created, TTL_US, PLENTY)

    claimed = await engine.session_connect(
        created.client_id, SessionChange(new_generation=True, advance={A: 5}), TTL_US
    )

    assert claimed is not None
    updated, _ = claimed
    assert (updated.generation, updated.positions) == (1, {A: 5})
    assert await engine.session_get(created.client_id) == updated
    cached = engine.session_cached(created.client_id)
    assert cached is not None
    assert (cached.client_id, cached.tenant, cached.owner) == (
        created.client_id,
        tenant,
        "client-1",
    )


async def test_a_connect_change_of_a_missing_or_deleted_session_is_none(
    engine: Engine, tenant: str
) -> None:
    created = record(tenant)
    await engine.session_create(created, TTL_US, PLENTY)
    await engine.session_delete(created.client_id)

    gone = await engine.session_connect(created.client_id, SessionChange(), TTL_US)
    unknown = await engine.session_connect(uuid.uuid4().hex, SessionChange(), TTL_US)

    assert (gone, unknown) == (None, None)
    assert await engine.session_get(created.client_id) is None
