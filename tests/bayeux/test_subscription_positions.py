"""How subscriptions set positions: a new subscription never discards another's backlog, a
re-subscription never replays what its predecessor had passed, explicit replays win."""

from __future__ import annotations

from app.access import Principal
from app.bayeux import codec
from app.bayeux.server import Credentials
from storage.memory import MemoryEngine
from tests.bayeux._support import (
    BayeuxClient,
    Publisher,
    connect_reply,
    event_ids,
    within,
)
from tests.bayeux.conftest import CLIENT, TENANT, ClientFactory, ServerFactory, principal_of

X = "/event/Order_Placed__e"
Y = "/event/Low_Ink__e"


async def _drain(client: BayeuxClient) -> list[int]:
    """Every event the session is owed, over as many immediate connects as it takes."""
    delivered: list[int] = []
    for _ in range(50):
        batch = event_ids(await within(client.poll()))
        if not batch:
            return delivered
        delivered.extend(batch)
    raise AssertionError("the session never ran dry")


async def test_a_second_wildcard_does_not_discard_the_first_ones_backlog(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=2))
    await client.start("/event/*")
    ids = [await publish.one(X, n=n) for n in range(5)]
    first = event_ids(await within(client.poll()))

    assert (await client.subscribe("/event/**"))["successful"] is True
    rest = await _drain(client)

    assert first + rest == ids


async def test_new_only_subscribe_to_a_covered_channel_keeps_the_backlog(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=2))
    await client.start("/event/*")
    ids = [await publish.one(X, n=n) for n in range(5)]
    first = event_ids(await within(client.poll()))

    assert (await client.subscribe(X))["successful"] is True
    rest = await _drain(client)

    assert first + rest == ids


async def test_replay_and_a_wildcard_in_one_message_keep_the_replay(
    client: BayeuxClient, publish: Publisher
) -> None:
    ids = [await publish.one(X, n=n) for n in range(3)]
    await client.handshake()

    reply = await client.send(
        {
            "channel": "/meta/subscribe",
            "clientId": client.client_id,
            "subscription": [X, "/event/**"],
            "ext": {"replay": {X: -2}},
        }
    )

    assert reply[0]["successful"] is True
    assert await _drain(client) == ids


async def test_resubscribing_after_unsubscribe_starts_after_what_was_published_meanwhile(
    client: BayeuxClient, publish: Publisher
) -> None:
    await client.start("/event/*")
    first = await publish.one(X, n=1)
    assert event_ids(await within(client.poll())) == [first]
    await client.unsubscribe("/event/*")
    await publish.one(X, n=2)

    await client.subscribe("/event/*")
    later = await publish.one(X, n=3)

    assert await _drain(client) == [later]


async def test_handshake_needs_the_subscribe_scope(make_client: ClientFactory) -> None:
    publisher_only = Principal(TENANT, CLIENT, frozenset({"publish"}), 4_000_000_000.0)
    client = make_client(principal=publisher_only)

    [reply] = await client.send(client.handshake_message())

    assert reply["successful"] is False
    assert reply["error"] == codec.HANDSHAKE_DENIED
    assert reply["ext"]["sfdc"]["failureReason"] == codec.SUBSCRIBE_SCOPE_MISSING


async def test_a_client_and_a_user_of_the_same_name_never_share_sessions(
    make_client: ClientFactory,
) -> None:
    client = make_client(principal=principal_of(TENANT, "bob"))
    await client.handshake()
    impostor = Credentials(presented=True, principal=principal_of(TENANT, "other", user="bob"))

    [reply] = await client.send(
        {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "connectionType": "long-polling",
        },
        credentials=impostor,
    )

    assert reply["error"] == codec.AUTHENTICATION_INVALID


async def test_odd_replay_and_ack_values_are_refused_not_crashed(
    client: BayeuxClient, publish: Publisher
) -> None:
    await publish.one(X)
    await client.handshake({"ack": True})

    replies = [await client.subscribe(X, {X: odd}) for odd in ("--1", "²", "9" * 5000, None)]
    [connected] = await client.send(
        {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "connectionType": "long-polling",
            "ext": {"ack": "²"},
        }
    )

    assert [reply["successful"] for reply in replies] == [False] * 4
    assert replies[3]["error"].startswith("400::The replayId {null} you provided was invalid.")
    assert connect_reply([connected])["successful"] is True


async def test_unsubscribing_forgets_the_positions_of_uncovered_channels(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: MemoryEngine,
) -> None:
    client = make_client(make_server())
    await client.start("/event/*", X)
    await publish.one(X)
    await publish.one(Y)
    assert len(event_ids(await within(client.poll()))) == 2
    assert client.client_id is not None

    await client.unsubscribe("/event/*")
    session = await engine.session_get(client.client_id)
    assert session is not None
    assert set(session.positions) == {X}

    await client.unsubscribe(X)
    session = await engine.session_get(client.client_id)
    assert session is not None
    assert dict(session.positions) == {}
