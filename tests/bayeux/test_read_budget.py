"""What a `/meta/connect` reads from the store: only what its reply can carry, in events and
in bytes, so draining a backlog costs reads linear in the backlog, however large its events;
and for wildcard sessions, only its share of channels, found without loading every channel
name of the tenant each time."""

from __future__ import annotations

from typing import Any

from tests.bayeux._support import (
    Background,
    BayeuxClient,
    CountingEngine,
    Publisher,
    event_ids,
    hold,
    within,
)
from tests.bayeux.conftest import ClientFactory, ServerFactory

X = "/event/Order_Placed__e"


async def drain(client: BayeuxClient, limit: int) -> list[list[int]]:
    """The event ids of each immediate connect until one comes back empty."""
    batches: list[list[int]] = []
    for _ in range(limit):
        batch = event_ids(await within(client.poll()))
        if not batch:
            return batches
        batches.append(batch)
    raise AssertionError(f"still delivering after {limit} connects")


async def test_a_backlog_of_large_events_drains_in_reads_linear_in_the_backlog(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: CountingEngine,
) -> None:
    backlog = 20
    client = make_client(make_server())  # 1 MiB replies: one 600 kB event each
    await client.start(X)
    ids = [await publish.one(X, p="x" * 600_000) for _ in range(backlog)]
    engine.events_read = 0

    batches = await drain(client, 2 * backlog)

    assert [i for batch in batches for i in batch] == ids
    assert len(batches) == backlog
    # Every event read once, give or take one that did not fit per connect; reading each
    # connect's whole page would have read backlog * (backlog + 1) / 2 = 210.
    assert engine.events_read <= 2 * backlog


async def test_a_connect_reads_no_more_events_than_its_reply_has_room_for(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: CountingEngine,
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=3))
    await client.start(X)
    ids = [p.replay_id for p in await publish(X, *[{"n": n} for n in range(10)])]
    engine.events_read = 0

    batches = await drain(client, 10)

    assert batches == [ids[0:3], ids[3:6], ids[6:9], ids[9:]]
    assert engine.events_read == len(ids)


# -- wildcard sessions over many channels ---------------------------------------------------

CHANNELS = [f"/event/C{n}__e" for n in range(6)]


async def wildcard_client(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher, **settings: Any
) -> BayeuxClient:
    """A client subscribed to /event/* while every channel of CHANNELS exists, after its
    first connect (which read the first channels)."""
    for channel in CHANNELS:
        await publish.one(channel)  # before the subscription: not delivered
    client = make_client(make_server(**settings))
    await client.start("/event/*")
    return client


async def test_a_wildcard_connect_reads_at_most_its_share_of_channels(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: CountingEngine,
) -> None:
    client = await wildcard_client(make_server, make_client, publish, bayeux_max_channel_reads=2)
    published = {channel: await publish.one(channel) for channel in CHANNELS}

    delivered: list[int] = []
    reads = []
    for _ in range(3):
        engine.reads = 0
        delivered += event_ids(await within(client.poll()))
        reads.append(engine.reads)

    assert sorted(delivered) == sorted(published.values())
    assert reads == [2, 2, 2]
    # Once every channel has been read, nothing more is owed.
    assert event_ids(await within(client.poll())) == []


async def test_an_event_on_a_channel_an_earlier_connect_read_waits_only_brief_holds(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    """A connect that could not read every channel found nothing there, but an event may be
    waiting in the store on a channel an earlier connect read: it holds only briefly, so the
    connects go round to that channel long before the hold timeout."""
    client = await wildcard_client(
        make_server,
        make_client,
        publish,
        bayeux_max_channel_reads=2,
        bayeux_timeout=600,
        bayeux_partial_hold=0.1,
    )
    # The first connect (in `start`) read C0 and C1.
    older = await publish.one(CHANNELS[0])

    delivered: list[list[int]] = []
    for _ in range(3):  # reads C2 and C3, then C4 and C5, then C0 and C1
        delivered.append(event_ids(await within(client.connect())))

    assert delivered == [[], [], [older]]


async def test_a_connect_that_read_every_channel_waits_for_live_events(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = await wildcard_client(
        make_server, make_client, publish, bayeux_timeout=600, bayeux_partial_hold=0.1
    )

    held = await hold(client, background)
    on_c4 = await publish.one(CHANNELS[4])

    assert event_ids(await within(held)) == [on_c4]


async def test_a_live_event_on_a_channel_read_by_an_earlier_connect_never_skips_an_older_one(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    """An event published on a channel after an earlier connect read it, then a live one on
    the same channel while a later connect holds: the live one must not be delivered first,
    or the session's position would jump over the older one."""
    client = await wildcard_client(
        make_server, make_client, publish, bayeux_max_channel_reads=3, bayeux_timeout=600
    )
    # The first connect (in `start`) read C0, C1 and C2.
    older = await publish.one(CHANNELS[0])
    held = await hold(client, background)  # reads C3, C4 and C5
    newer = await publish.one(CHANNELS[0])

    woken = event_ids(await within(held))
    rest: list[int] = []
    for _ in range(3):
        rest += event_ids(await within(client.poll()))

    assert woken == []
    assert rest == [older, newer]


async def test_a_channel_created_since_the_names_were_loaded_is_read_by_the_next_connect(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = await wildcard_client(make_server, make_client, publish, bayeux_timeout=600)
    on_new = await publish.one("/event/New__e")  # after the first connect loaded the names

    assert event_ids(await within(client.connect())) == [on_new]


async def test_a_wildcard_connect_loads_channel_names_only_when_channels_were_added(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: CountingEngine,
) -> None:
    client = await wildcard_client(make_server, make_client, publish)
    engine.name_loads = engine.name_counts = 0

    for _ in range(3):
        assert event_ids(await within(client.poll())) == []
    unchanged = (engine.name_loads, engine.name_counts)
    on_new = await publish.one("/event/New__e")
    delivered = event_ids(await within(client.poll()))

    assert unchanged == (0, 3)  # a count per connect, no load
    assert delivered == [on_new]
    assert engine.name_loads == 1  # the count changed: loaded once


async def test_a_wildcard_connect_looks_at_a_bounded_share_of_names_it_does_not_match(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: CountingEngine,
) -> None:
    """`/event/*` matches no deeper channel, but they sort among its matches; a connect goes
    past at most so many of them, and later connects go on from there."""
    deep = [f"/event/deep/{n:03}" for n in range(200)]
    for channel in ["/event/A", "/event/B", *deep]:
        await publish.one(channel)
    client = make_client(make_server(bayeux_max_channel_reads=2))
    await client.start("/event/*")  # its connect read /event/A and /event/B
    on_e = await publish.one("/event/e")  # sorts after every deep one
    names = sorted(["/event/A", "/event/B", *deep, "/event/e"])
    session = await engine.session_get(str(client.client_id))
    assert session is not None
    assert session.sweep == deep[0]

    engine.reads = 0
    delivered = event_ids(await within(client.poll()))
    session = await engine.session_get(str(client.client_id))
    assert session is not None

    assert (delivered, engine.reads) == ([], 0)
    # At most 16 names per channel it may read (2 here).
    assert 0 < names.index(session.sweep) - names.index(deep[0]) <= 16 * 2
    for _ in range(len(deep)):
        if delivered := event_ids(await within(client.poll())):
            break
    assert delivered == [on_e]
