"""A session whose position falls out of the retention window between connects.

By default (REPLAYBUS_BAYEUX_GAP=end-session) the connect that finds it ends the session
before delivering anything, with Salesforce's replay error and `reconnect: none`; the client
handshakes again, resubscribes from the ReplayIds it stored and meets the same error on the
subscribe, where replay fallbacks act. `report` keeps delivering the retained events with
`ext.replaybus.gaps` (tests/bayeux/test_server.py). Every path by which a connect reads the
store is covered: a connect answered at once, a held one reading before it waits, and a held
one reading again after its live buffer overflowed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from app.access import Principal
from app.bayeux import codec
from app.bayeux.codec import Message
from app.bayeux.server import BayeuxServer
from app.engine import LiveCallback, MissedCallback
from app.hub import Hub
from app.model import ChannelKey, EventDraft, Retention, Topic
from app.settings import Settings
from storage.memory import MemoryEngine
from tests.bayeux._support import (
    Background,
    BayeuxClient,
    Publisher,
    connect_reply,
    event_ids,
    hold,
    within,
)
from tests.bayeux.conftest import CLIENT, TENANT, ClientFactory, ServerFactory
from tests.fakes import FakeClock

X = "/event/Order_Placed__e"
Y = "/event/Low_Ink__e"  # sorts before X: a connect reads it first
ENDED = {"reconnect": "none", "interval": 0}
A_YEAR_US = 365 * 24 * 3600 * 1_000_000


async def publish_keeping(engine: MemoryEngine, channel: str, count: int, keep: int) -> list[int]:
    """Publish `count` events on `channel` in one call, the channel keeping its newest `keep`."""
    drafts = [EventDraft(str(uuid.uuid4()), orjson.dumps({"n": n}), CLIENT) for n in range(count)]
    retention = Retention(max_age_us=A_YEAR_US, max_count=keep)
    published = await engine.publish(ChannelKey(TENANT, channel), drafts, retention)
    return [p.replay_id for p in published]


async def started(client: BayeuxClient, *channels: str) -> list[int]:
    """Handshake, subscribe to every retained event of `channels`, and take them with the
    first connect (answered at once): what the client has processed and stored."""
    await client.handshake()
    for channel in channels:
        reply = await client.subscribe(channel, {channel: -2})
        assert reply["successful"] is True, reply
    replies = await within(client.connect())
    assert connect_reply(replies)["successful"] is True, replies
    return event_ids(replies)


def ended(client: BayeuxClient, replies: list[Message], gap: dict[str, Any]) -> None:
    """`replies` is the session's end alone: no event, Salesforce's replay error for the
    position that fell out, `reconnect: none`, and the gap."""
    [reply] = replies
    assert reply == {
        "channel": "/meta/connect",
        "id": reply["id"],
        "clientId": client.client_id,
        "successful": False,
        "error": codec.replay_id_invalid(gap["requested"]),
        "advice": ENDED,
        "ext": {"replaybus": {"gaps": [gap]}},
    }


async def test_a_connect_answered_at_once_ends_the_session_and_the_resubscribe_is_refused(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: MemoryEngine,
    principal: Principal,
) -> None:
    client = make_client()
    await publish.one(X)
    [stored] = await started(client, X)
    ended_id = client.client_id
    assert ended_id is not None
    new = await publish_keeping(engine, X, 3, keep=2)  # `stored` and new[0] are evicted

    replies = await client.poll()

    ended(
        client, replies, {"channel": X, "requested": stored, "earliest": new[1], "latest": new[2]}
    )
    assert await engine.session_get(ended_id) is None
    assert await engine.session_count(TENANT) == 0
    # Any node now answers the old client id as an expired session.
    elsewhere = BayeuxClient(make_server(), principal)
    elsewhere.client_id = ended_id
    after_end = connect_reply(await within(elsewhere.connect()))
    assert after_end["error"] == codec.UNKNOWN_CLIENT
    assert after_end["advice"] == {"reconnect": "handshake", "interval": 0}

    # What a Salesforce client does next: handshake, resubscribe from its stored ReplayId
    # (refused with the same error), then its fallback (-2) gets every retained event.
    await client.handshake()
    refused = await client.subscribe(X, {X: stored})
    fallback = await client.subscribe(X, {X: -2})
    assert (refused["successful"], refused["error"]) == (False, codec.replay_id_invalid(stored))
    assert fallback["successful"] is True
    assert event_ids(await within(client.connect())) == new[1:]


async def test_a_held_connect_ends_the_session_at_once_without_holding(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher, engine: MemoryEngine
) -> None:
    server = make_server(bayeux_timeout=600)
    client = make_client(server)
    await publish.one(X)
    [stored] = await started(client, X)
    new = await publish_keeping(engine, X, 4, keep=1)

    replies = await within(client.connect())  # a connect the server may hold

    ended(
        client, replies, {"channel": X, "requested": stored, "earliest": new[3], "latest": new[3]}
    )
    assert server.held_connects == 0
    assert await engine.session_count(TENANT) == 0


class LosingSource:
    """A live source whose events are all lost on their way: it delivers nothing and, on
    `lose()`, tells its listeners so, as an engine that could not catch up after an outage
    does."""

    def __init__(self) -> None:
        self._missed: list[MissedCallback] = []

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        self._missed.append(missed)
        yield

    def lose(self) -> None:
        for missed in self._missed:
            missed()


async def test_a_held_connect_told_its_live_events_were_lost_reads_the_gap_and_ends(
    engine: MemoryEngine,
    clock: FakeClock,
    draining: asyncio.Event,
    principal: Principal,
    publish: Publisher,
    background: Background,
) -> None:
    """Events evicted while their live copies were lost: the held connect reads the store
    again and finds the gap."""
    source = LosingSource()
    async with Hub(source) as hub:
        server = BayeuxServer(engine, hub, Settings(bayeux_timeout=600), clock, draining)
        client = BayeuxClient(server, principal)
        await publish.one(X)
        [stored] = await started(client, X)
        held = await hold(client, background)
        new = await publish_keeping(engine, X, 3, keep=1)

        source.lose()

        ended(
            client,
            await within(held),
            {"channel": X, "requested": stored, "earliest": new[2], "latest": new[2]},
        )
        assert await engine.session_count(TENANT) == 0


async def test_events_of_other_channels_are_not_delivered_by_the_ending_connect(
    client: BayeuxClient, publish: Publisher, engine: MemoryEngine
) -> None:
    """The connect that ends the session had read another channel's new event first; that
    event is not delivered then, but after the resubscribe from the stored ReplayIds: nothing
    is skipped, and nothing arrives twice."""
    await publish.one(X)
    await publish.one(Y)
    stored_y, stored_x = await started(client, X, Y)
    y_new = await publish.one(Y)
    x_new = await publish_keeping(engine, X, 3, keep=2)

    replies = await client.poll()

    ended(
        client,
        replies,
        {"channel": X, "requested": stored_x, "earliest": x_new[1], "latest": x_new[2]},
    )
    await client.handshake()
    assert (await client.subscribe(Y, {Y: stored_y}))["successful"] is True
    assert (await client.subscribe(X, {X: stored_x}))["successful"] is False
    assert (await client.subscribe(X, {X: -2}))["successful"] is True
    assert event_ids(await within(client.connect())) == [y_new, *x_new[1:]]


async def test_a_session_with_a_wildcard_subscription_reports_its_gap_and_goes_on(
    client: BayeuxClient, publish: Publisher, engine: MemoryEngine
) -> None:
    """A wildcard takes no ReplayId: ended, the session could not resume its channels, so the
    gap is reported with the retained events instead."""
    top = await publish.one(X)
    await client.handshake()
    assert (await client.subscribe("/event/*"))["successful"] is True
    assert connect_reply(await within(client.connect()))["successful"] is True
    new = await publish_keeping(engine, X, 3, keep=1)

    replies = await client.poll()

    reply = connect_reply(replies)
    assert reply["successful"] is True
    assert reply["ext"]["replaybus"]["gaps"] == [
        {"channel": X, "requested": top, "earliest": new[2], "latest": new[2]}
    ]
    assert event_ids(replies) == [new[2]]
