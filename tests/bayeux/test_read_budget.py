"""What a `/meta/connect` reads from the store: only what its reply can carry, in events and
in bytes, so draining a backlog costs reads linear in the backlog, however large its events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from app.model import ChannelKey, HistoryPage
from storage.memory import MemoryEngine
from tests.bayeux._support import BayeuxClient, Publisher, event_ids, within
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
