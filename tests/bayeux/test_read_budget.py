"""What a `/meta/connect` reads from the store: only what its reply can carry, in events and
in bytes, so draining a backlog costs reads linear in the backlog, however large its events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.model import ChannelKey, HistoryPage
from storage.memory import MemoryEngine
from tests.bayeux._support import Background, BayeuxClient, Publisher, event_ids, hold, within
from tests.bayeux.conftest import ClientFactory, ServerFactory
from tests.fakes import FakeClock

X = "/event/Order_Placed__e"


class CountingEngine(MemoryEngine):
    """The memory engine, counting history reads and the events they returned."""

    reads = 0
    events_read = 0

    async def read(
        self, key: ChannelKey, after: int, limit: int, max_bytes: int | None = None
    ) -> HistoryPage:
        page = await super().read(key, after, limit, max_bytes)
        self.reads += 1
        self.events_read += len(page.events)
        return page


@pytest.fixture
async def engine(clock: FakeClock) -> AsyncIterator[CountingEngine]:
    counting = CountingEngine(clock, idempotency_ttl=60)
    async with counting:
        yield counting


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


async def test_a_wildcard_connect_that_has_not_read_every_channel_answers_at_once(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = await wildcard_client(
        make_server, make_client, publish, bayeux_max_channel_reads=2, bayeux_timeout=600
    )

    # Six channels, two reads a connect: the first connect (in `start`) read C0 and C1, the
    # next reads C2 and C3 and answers at once; the one whose reads come round to the last
    # channel waits for live events.
    assert event_ids(await within(client.connect())) == []
    held = await hold(client, background)
    on_c4 = await publish.one(CHANNELS[4])  # read by the held connect: delivered live

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
    held = await hold(client, background)  # reads C3, C4 and C5: every channel read
    newer = await publish.one(CHANNELS[0])

    woken = event_ids(await within(held))
    rest: list[int] = []
    for _ in range(3):
        rest += event_ids(await within(client.poll()))

    assert woken == []
    assert rest == [older, newer]
