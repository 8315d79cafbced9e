"""Connects served from the session's mailbox on the node that served its previous connect:
no store read, replies bounded by count and bytes with the rest kept for the next connect,
exact hand-over to another node and back, and gaps still found when retention took events
the node still has."""

from __future__ import annotations

import asyncio

import pytest

from app.bayeux.owned import Hold, Windows
from app.bayeux.server import BayeuxServer
from app.errors import EngineUnavailable
from app.hub import Hub
from app.model import ChannelKey, Window
from app.settings import Settings
from storage.memory import MemoryEngine
from tests.bayeux._support import (
    Background,
    BayeuxClient,
    CountingEngine,
    Publisher,
    connect_reply,
    event_ids,
    hold,
    within,
)
from tests.bayeux.conftest import ClientFactory, ServerFactory
from tests.bayeux.test_gaps import ENDED, publish_keeping
from tests.fakes import FakeClock

X = "/event/Order_Placed__e"


class Stopped:
    """A connect stopped by `TurnGate` right after it got its reply turn."""

    def __init__(self) -> None:
        self.reached = asyncio.Event()
        self.go_on: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def release(self) -> None:
        self.go_on.set_result(None)


class TurnGate:
    """Stops the next connect that asks for a reply turn right after it gets it, until the
    test releases it: a connect that a busy node leaves waiting there, in any order the
    test chooses with the others."""

    def __init__(self, server: BayeuxServer, monkeypatch: pytest.MonkeyPatch) -> None:
        self._turn = server._turn
        self._next: Stopped | None = None
        monkeypatch.setattr(server, "_turn", self.turn)

    def stop_next(self) -> Stopped:
        self._next = Stopped()
        return self._next

    async def turn(self, hold: Hold) -> None:
        await self._turn(hold)
        stopped, self._next = self._next, None
        if stopped is not None:
            stopped.reached.set()
            await stopped.go_on


async def held_delivery(
    client: BayeuxClient, background: Background, publish: Publisher, channel: str = X
) -> list[int]:
    """Hold a connect, publish one event, and return what the connect delivered."""
    held = await hold(client, background)
    await publish.one(channel)
    return event_ids(await within(held))


async def test_a_connect_after_one_on_the_same_node_reads_nothing_from_the_store(
    client: BayeuxClient, background: Background, publish: Publisher, engine: CountingEngine
) -> None:
    await client.start(X)
    first = await held_delivery(client, background, publish)
    reads = engine.reads

    second = await held_delivery(client, background, publish)
    queued = [await publish.one(X) for _ in range(3)]
    third = event_ids(await within(client.connect()))

    assert len(first) == len(second) == 1
    assert first != second
    assert third == queued
    assert engine.reads == reads


@pytest.mark.parametrize(
    ("cap", "payload", "queued_count", "cuts"),
    [
        pytest.param({"bayeux_max_reply_events": 3}, {}, 7, (3, 6), id="count"),
        pytest.param({"bayeux_max_reply_size": 1024}, {"text": "x" * 200}, 5, (2, 4), id="bytes"),
    ],
)
async def test_a_reply_stops_at_its_cap_and_the_next_gets_the_rest(
    make_server: ServerFactory,
    make_client: ClientFactory,
    background: Background,
    publish: Publisher,
    engine: CountingEngine,
    cap: dict[str, int],
    payload: dict[str, str],
    queued_count: int,
    cuts: tuple[int, int],
) -> None:
    """Served from the node's mailbox (no store read), a run longer than one reply's count or
    byte cap goes out over several replies, in order, none lost."""
    client = make_client(make_server(**cap))
    await client.start(X)
    await held_delivery(client, background, publish)
    queued = [await publish.one(X, **payload) for _ in range(queued_count)]
    reads = engine.reads

    batches = [event_ids(await within(client.connect())) for _ in range(3)]

    first, second = cuts
    assert batches == [queued[:first], queued[first:second], queued[second:]]
    assert engine.reads == reads


async def test_a_session_moving_to_another_node_and_back_resumes_exactly(
    engine: CountingEngine,
    clock: FakeClock,
    draining: object,
    make_client: ClientFactory,
    background: Background,
    publish: Publisher,
) -> None:
    settings = Settings()
    async with Hub(engine) as other_hub:
        first_node = make_client()
        await first_node.start(X)
        assert first_node.client_id is not None
        other = BayeuxServer(engine, other_hub, settings, clock, draining)  # type: ignore[arg-type]
        second_node = BayeuxClient(other, first_node.credentials.principal)
        second_node.client_id = first_node.client_id

        on_first = await held_delivery(first_node, background, publish)
        missed_by_first = [await publish.one(X) for _ in range(2)]
        caught_up = event_ids(await within(second_node.connect()))
        on_second = await held_delivery(second_node, background, publish)
        # The first node's mailbox still has what the second node delivered.
        back_on_first = await held_delivery(first_node, background, publish)
        again = [await publish.one(X) for _ in range(2)]
        then = event_ids(await within(first_node.connect()))

    delivered = on_first + caught_up + on_second + back_on_first + then
    assert caught_up == missed_by_first
    assert then == again
    assert [len(on_first), len(on_second), len(back_on_first)] == [1, 1, 1]
    assert delivered == sorted(set(delivered))


async def test_a_position_retention_took_from_under_the_mailbox_ends_the_session(
    client: BayeuxClient, background: Background, publish: Publisher, engine: CountingEngine
) -> None:
    await client.start(X)
    [seen] = await held_delivery(client, background, publish)
    await publish_keeping(engine, X, 4, keep=3)  # the first of them goes: a gap after `seen`

    replies = await within(client.connect())

    reply = connect_reply(replies)
    assert event_ids(replies) == []
    assert reply["successful"] is False
    assert reply["advice"] == ENDED
    assert [gap["requested"] for gap in reply["ext"]["replaybus"]["gaps"]] == [seen]


async def test_a_superseded_connect_woken_by_events_leaves_the_mailbox_to_the_newer_one(
    client: BayeuxClient,
    background: Background,
    publish: Publisher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = TurnGate(client.server, monkeypatch)
    await client.start(X)
    first = await hold(client, background)
    first_stopped = gate.stop_next()
    published = [await publish.one(X)]
    await within(first_stopped.reached.wait())  # woken, waiting to take from the mailbox
    # The client sends its next connect meanwhile: it supersedes the first, and it and the
    # one after it are served by the same mailbox.
    second = event_ids(await within(client.connect()))
    third = await hold(client, background)
    third_stopped = gate.stop_next()
    published.append(await publish.one(X))
    await within(third_stopped.reached.wait())
    first_stopped.release()  # the superseded connect goes on first
    superseded = event_ids(await within(first))
    third_stopped.release()
    delivered = second + event_ids(await within(third))
    fourth = await hold(client, background)
    published.append(await publish.one(X))
    delivered += event_ids(await within(fourth))

    assert superseded == []
    assert delivered == published


class HeldWindows(MemoryEngine):
    """The memory engine, its window reads held until `answer` is set."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, idempotency_ttl=60)
        self.reading = asyncio.Event()
        self.answer = asyncio.Event()

    async def window(self, key: ChannelKey) -> Window:
        self.reading.set()
        await self.answer.wait()
        return await super().window(key)


async def test_a_window_read_its_connect_gave_up_fails_the_joined_ones_as_unavailable(
    clock: FakeClock,
) -> None:
    engine = HeldWindows(clock)
    async with engine:
        windows = Windows(engine)
        key = ChannelKey("acme", X)
        reading = asyncio.create_task(windows.after(key, 5))
        await within(engine.reading.wait())
        joined = asyncio.create_task(windows.after(key, 3))
        await asyncio.sleep(0)  # one loop turn: its first step joins the read in flight

        reading.cancel()

        with pytest.raises(EngineUnavailable):
            await within(joined)
        assert reading.cancelled()
        engine.answer.set()
        assert await within(windows.after(key, 3)) == await engine.window(key)
