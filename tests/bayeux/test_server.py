"""`BayeuxServer` against the compatibility checklist (reference/salesforce-streaming.md §7),
driven on decoded message lists with a real memory engine and hub on a fake clock.

Tests named `test_line_NN_...` cover checklist line NN. Held connects run as tasks; a test
waits for the server to report the hold (`held_connects`) and for the task's result, never for
a fixed time. Only the idle-hold test waits out a (0.2 s) hold timeout, because that is what it
checks.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from typing import Any

import orjson
import pytest

from app.access import Principal
from app.bayeux import codec
from app.bayeux.server import Credentials
from app.envelope import format_created
from app.model import ChannelKey, EventDraft, Retention
from app.publishing import PublishService
from app.settings import Settings
from storage.memory import MemoryEngine
from tests.bayeux._support import (
    Background,
    BayeuxClient,
    Publisher,
    connect_reply,
    event_ids,
    events,
    hold,
    wait_until,
    within,
)
from tests.bayeux.conftest import (
    CLIENT,
    FAR_FUTURE,
    TENANT,
    ClientFactory,
    ServerFactory,
    principal_of,
)
from tests.fakes import FakeClock

X = "/event/Order_Placed__e"
Y = "/event/Low_Ink__e"
ADVICE = {"reconnect": "retry", "interval": 0, "timeout": 110_000}
HANDSHAKE_EXT = {"replay": True, "payload.format": True}
KEEP_ALL = Retention(max_age_us=365 * 24 * 3600 * 1_000_000, max_count=1_000_000)


async def publish_retaining(
    engine: MemoryEngine, channel: str, count: int, max_count: int
) -> list[int]:
    """Publish `count` events on `channel` with a retention window of `max_count` events."""
    drafts = [EventDraft(str(uuid.uuid4()), orjson.dumps({"n": n}), CLIENT) for n in range(count)]
    retention = Retention(max_age_us=KEEP_ALL.max_age_us, max_count=max_count)
    published = await engine.publish(ChannelKey(TENANT, channel), drafts, retention)
    return [p.replay_id for p in published]


# --- line 4: channel on every element, id echoed with its type ------------------------------


@pytest.mark.parametrize("message_id", ["7", 7, None], ids=["string-id", "number-id", "no-id"])
async def test_line_04_every_reply_has_channel_and_echoes_id_with_its_type(
    client: BayeuxClient, publish: Publisher, message_id: str | int | None
) -> None:
    def message(channel: str, **fields: Any) -> dict[str, Any]:
        built: dict[str, Any] = {"channel": channel, **fields}
        if message_id is not None:
            built["id"] = message_id
        return built

    replies: list[dict[str, Any]] = []
    [handshake] = await client.send(message("/meta/handshake", version="1.0"))
    replies.append(handshake)
    cid = handshake["clientId"]
    replies += await client.send(message("/meta/subscribe", clientId=cid, subscription=X))
    replies += await client.send(message("/meta/subscribe", clientId=cid, subscription="/topic/T"))
    replies += await within(client.send(message("/meta/connect", clientId=cid)))
    await publish.one(X)
    delivered = await within(
        client.send(message("/meta/connect", clientId=cid, advice={"timeout": 0}))
    )
    assert len(events(delivered)) == 1
    replies += delivered
    replies += await client.send(message(X, clientId=cid, data={"a": 1}))
    replies += await client.send(message("/service/echo", clientId=cid, data={}))
    replies += await client.send(message("/meta/nonsense", clientId=cid))
    replies += await client.send(message("/meta/unsubscribe", clientId=cid, subscription=X))
    replies += await client.send(message("/meta/disconnect", clientId=cid))
    replies += await client.send(message("/meta/connect", clientId=cid))
    replies += await client.send(message("/meta/connect", clientId="no-such-client"))
    replies += await client.send(
        message("/meta/connect", clientId=cid), credentials=Credentials(False, None)
    )
    replies += await client.send(
        message("/meta/connect", clientId=cid), credentials=Credentials(True, None)
    )
    replies += await client.send({"id": message_id} if message_id is not None else {})

    assert len(replies) == 16
    for reply in replies:
        assert isinstance(reply.get("channel"), str), reply
        assert reply["channel"].startswith("/"), reply
        if reply in events(delivered):
            continue
        if message_id is None:
            assert "id" not in reply, reply
        else:
            assert reply["id"] == message_id, reply
            assert type(reply["id"]) is type(message_id), reply


# --- line 6: no Authorization header -------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        {"channel": "/meta/handshake", "version": "1.0", "id": "1"},
        {"channel": "/meta/connect", "clientId": "abc", "id": "2"},
        {"channel": "/meta/subscribe", "clientId": "abc", "subscription": X, "id": "3"},
    ],
    ids=["handshake", "connect", "subscribe"],
)
async def test_line_06_no_authorization_is_request_requires_authentication(
    client: BayeuxClient, message: dict[str, Any]
) -> None:
    [reply] = await client.send(message, credentials=Credentials(presented=False, principal=None))

    assert reply["channel"] == message["channel"]
    assert reply["id"] == message["id"]
    assert reply["successful"] is False
    assert reply["error"] == "401::Request requires authentication"


# --- lines 7-10: handshake -----------------------------------------------------------------


async def test_line_07_handshake_reply_has_the_salesforce_fields(client: BayeuxClient) -> None:
    [reply] = await client.send(
        {
            "channel": "/meta/handshake",
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "id": "1",
            "ext": {"replay": True},
        }
    )

    assert re.fullmatch(r"[0-9a-z]{27}", reply["clientId"])
    assert reply == {
        "channel": "/meta/handshake",
        "id": "1",
        "version": "1.0",
        "minimumVersion": "1.0",
        "supportedConnectionTypes": ["long-polling"],
        "clientId": reply["clientId"],
        "successful": True,
        "ext": HANDSHAKE_EXT,
        "advice": ADVICE,
    }


async def test_line_07_every_handshake_gets_a_fresh_client_id(client: BayeuxClient) -> None:
    ids = {(await client.handshake())["clientId"] for _ in range(20)}

    assert len(ids) == 20


@pytest.mark.parametrize(
    "types",
    [
        ["long-polling"],
        ["websocket", "long-polling"],
        ["in-process", "websocket", "long-polling"],
        ["websocket", "long-polling", "callback-polling"],
    ],
    ids=["long-polling", "aiocometd", "faye", "cometd-js"],
)
@pytest.mark.parametrize(
    "ext",
    [None, {"replay": True}, {"ack": True}, {"replay": True, "ack": True}],
    ids=["no-ext", "replay", "ack", "replay-and-ack"],
)
async def test_line_08_handshake_succeeds_whatever_else_the_client_lists(
    client: BayeuxClient, types: list[str], ext: dict[str, Any] | None
) -> None:
    message: dict[str, Any] = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": types,
    }
    if ext is not None:
        message["ext"] = ext

    [reply] = await client.send(message)

    assert reply["successful"] is True
    assert reply["supportedConnectionTypes"] == ["long-polling"]
    assert reply["ext"]["replay"] is True


async def test_line_09_handshake_with_an_invalid_token_is_denied(client: BayeuxClient) -> None:
    message = client.handshake_message({"replay": True})

    [reply] = await client.send(message, credentials=Credentials(presented=True, principal=None))

    assert reply == {
        "channel": "/meta/handshake",
        "id": message["id"],
        "successful": False,
        "error": "403::Handshake denied",
        "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}, **HANDSHAKE_EXT},
        "advice": {"reconnect": "none"},
    }


async def test_line_10_handshake_beyond_the_client_limit_is_denied(
    make_server: ServerFactory, make_client: ClientFactory, clock: FakeClock
) -> None:
    server = make_server(bayeux_max_clients=1)
    first = make_client(server)
    await first.handshake()
    second = make_client(server, principal_of(TENANT, "client-2"))
    message = second.handshake_message()

    [refused] = await second.send(message)
    other_tenant = await make_client(server, principal_of("other-tenant")).handshake()
    await first.disconnect()
    after_disconnect = await second.handshake()
    clock.advance(41)
    after_expiry = await make_client(server).handshake()

    assert refused == {
        "channel": "/meta/handshake",
        "id": message["id"],
        "successful": False,
        "error": "403::Handshake denied",
        "ext": {
            "sfdc": {"failureReason": "403::Organization concurrent user limit exceeded"},
            **HANDSHAKE_EXT,
        },
        "advice": {"reconnect": "none"},
    }
    assert other_tenant["successful"] is True
    assert after_disconnect["successful"] is True
    assert after_expiry["successful"] is True


# --- lines 11-13: when a connect is held ---------------------------------------------------


async def test_line_11_first_connect_is_answered_at_once_with_advice(
    client: BayeuxClient,
) -> None:
    await client.handshake()

    replies = await within(client.connect())

    assert replies == [
        {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "id": replies[0]["id"],
            "successful": True,
            "advice": ADVICE,
        }
    ]


async def test_line_11_advice_timeout_follows_the_setting(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    client = make_client(make_server(bayeux_timeout=25))
    await client.handshake()

    reply = connect_reply(await within(client.connect()))

    assert reply["advice"] == {"reconnect": "retry", "interval": 0, "timeout": 25_000}


async def test_line_12_connect_with_advice_timeout_zero_is_not_held(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X)

    replies = await within(client.connect(timeout=0))

    assert connect_reply(replies)["successful"] is True
    assert events(replies) == []


async def test_line_12_connect_batched_with_other_messages_is_not_held(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X)

    replies = await within(
        client.send(client.connect_message(), client.subscribe_message(Y, {Y: -1}))
    )

    assert [(r["channel"], r["successful"]) for r in replies] == [
        ("/meta/connect", True),
        ("/meta/subscribe", True),
    ]


async def test_line_12_first_connect_batched_with_subscribes_after_rehandshake(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    """aiosfstream re-subscribes in the same POST as its first connect."""
    client = make_client(make_server(bayeux_timeout=600))
    await client.handshake()
    published = await publish.one(X)

    replies = await within(
        client.send(
            client.connect_message(),
            client.subscribe_message(X, {X: -2}),
            client.subscribe_message(Y),
        )
    )
    following = await client.poll()

    assert [r["channel"] for r in replies] == [
        "/meta/connect",
        "/meta/subscribe",
        "/meta/subscribe",
    ]
    assert all(r["successful"] for r in replies)
    assert event_ids(following) == [published]


async def test_line_13_held_connect_is_answered_when_an_event_is_published(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X)
    held = await hold(client, background)

    replay_id = await publish.one(X, Ink=0.2)
    replies = await within(held)

    assert [r["channel"] for r in replies] == [X, "/meta/connect"]
    assert replies[0]["data"]["event"]["replayId"] == replay_id
    assert replies[0]["data"]["payload"]["Ink"] == 0.2
    assert replies[1] == {
        "channel": "/meta/connect",
        "clientId": client.client_id,
        "id": replies[1]["id"],
        "successful": True,
    }


async def test_line_13_idle_connect_is_held_until_the_timeout_then_answered_plainly(
    make_server: ServerFactory, make_client: ClientFactory
) -> None:
    client = make_client(make_server(bayeux_timeout=0.2))
    await client.start(X)
    loop = asyncio.get_running_loop()

    started = loop.time()
    replies = await within(client.connect())
    held_for = loop.time() - started

    assert held_for >= 0.19
    assert replies == [
        {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "id": replies[0]["id"],
            "successful": True,
        }
    ]


async def test_line_13_event_on_another_channel_does_not_answer_the_held_connect(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X)
    held = await hold(client, background)

    await publish.one(Y)
    await publish.one("/event/Other__e")
    replay_id = await publish.one(X)
    replies = await within(held)

    assert [r["channel"] for r in replies] == [X, "/meta/connect"]
    assert event_ids(replies) == [replay_id]


# --- line 14: events before the connect reply, in order per channel ------------------------


async def test_line_14_events_precede_the_connect_reply_in_replay_id_order_per_channel(
    client: BayeuxClient, publish: Publisher, clock: FakeClock
) -> None:
    await client.start(X, Y)
    published: dict[str, list[int]] = {X: [], Y: []}
    for n in range(4):
        for channel in (X, Y):
            published[channel] += [p.replay_id for p in await publish(channel, {"n": n})]
            clock.advance(0.001)
    published[X] += [p.replay_id for p in await publish(X, {"n": 5}, {"n": 6}, {"n": 7})]

    replies = await client.poll()

    connect_reply(replies)
    delivered = events(replies)
    assert len(delivered) == 11
    for channel in (X, Y):
        ids = [e["data"]["event"]["replayId"] for e in delivered if e["channel"] == channel]
        assert ids == published[channel]


# --- line 15: one outstanding connect per client -------------------------------------------


async def test_line_15_second_connect_completes_the_held_one_and_gets_the_events(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    server = make_server(bayeux_timeout=600)
    client = make_client(server)
    await client.start(X)
    first = await hold(client, background)

    second = background.start(client.connect())
    superseded = await within(first)
    await wait_until(lambda: server.held_connects == 1, "the second connect is held")
    still_held = not second.done()
    replay_id = await publish.one(X)
    newest = await within(second)

    assert events(superseded) == []
    assert connect_reply(superseded)["successful"] is True
    assert still_held
    assert event_ids(newest) == [replay_id]


# --- line 16: session expiry ---------------------------------------------------------------


async def test_line_16_session_survives_within_the_reconnect_window(
    client: BayeuxClient, clock: FakeClock
) -> None:
    await client.start(X)
    clock.advance(39)

    replies = await client.poll()
    clock.advance(39)
    again = await client.poll()

    assert connect_reply(replies)["successful"] is True
    assert connect_reply(again)["successful"] is True


@pytest.mark.parametrize("window", [40.0, 5.0])
async def test_line_16_session_without_a_connect_past_the_window_is_unknown(
    make_server: ServerFactory, make_client: ClientFactory, clock: FakeClock, window: float
) -> None:
    client = make_client(make_server(bayeux_reconnect_window=window))
    await client.start(X)
    clock.advance(window + 0.001)

    connect = client.connect_message()
    [reply] = await client.send(connect)
    [subscribe] = await client.send(client.subscribe_message(Y))

    assert reply["channel"] == "/meta/connect"
    assert reply["id"] == connect["id"]
    assert reply["successful"] is False
    assert reply["error"] == "403::Unknown client"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}
    assert subscribe["successful"] is False
    assert subscribe["error"] == "403::Unknown client"


async def test_line_16_unknown_client_id_is_told_to_handshake(client: BayeuxClient) -> None:
    client.client_id = "1cyu4thyxh3fgv1nqwcvebt3o9x"

    [reply] = await client.connect()

    assert reply["successful"] is False
    assert reply["error"] == "403::Unknown client"
    assert reply["advice"] == {"reconnect": "handshake", "interval": 0}


# --- lines 18-19: credentials on a live session --------------------------------------------


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials(presented=True, principal=principal_of(TENANT, "client-2")),
        Credentials(presented=True, principal=principal_of("other-tenant", CLIENT)),
        Credentials(presented=True, principal=None),
        Credentials(presented=True, principal=principal_of(TENANT, CLIENT, user="alice")),
    ],
    ids=["other-client", "other-tenant", "invalid-token", "a-user-of-the-same-client"],
)
async def test_line_18_connect_with_invalid_credentials_is_authentication_invalid(
    client: BayeuxClient, credentials: Credentials
) -> None:
    await client.start(X)
    message = client.connect_message()

    [reply] = await within(client.send(message, credentials=credentials))
    afterwards = await client.poll()

    assert reply == {
        "channel": "/meta/connect",
        "id": message["id"],
        "clientId": client.client_id,
        "successful": False,
        "error": "401::Authentication invalid",
        "advice": {"reconnect": "none", "interval": 0},
    }
    assert connect_reply(afterwards)["successful"] is True


@pytest.mark.parametrize(
    ("original", "renewed"),
    [
        (
            principal_of(TENANT, CLIENT),
            Principal(TENANT, CLIENT, frozenset({"subscribe"}), FAR_FUTURE + 3600),
        ),
        (
            principal_of(TENANT, CLIENT, user="alice"),
            principal_of(TENANT, "client-2", user="alice"),
        ),
    ],
    ids=["same-client", "same-user-through-another-client"],
)
async def test_line_19_new_token_of_the_same_user_is_accepted(
    make_client: ClientFactory, publish: Publisher, original: Principal, renewed: Principal
) -> None:
    client = make_client(principal=original)
    await client.start(X)
    client.credentials = Credentials(presented=True, principal=renewed)
    replay_id = await publish.one(X)

    replies = await client.poll()
    subscribed = await client.subscribe(Y)

    assert event_ids(replies) == [replay_id]
    assert subscribed["successful"] is True


async def test_a_token_without_the_subscribe_scope_cannot_subscribe(
    make_client: ClientFactory,
) -> None:
    """SSE and history require the `subscribe` scope; Bayeux must not be a way around it."""
    client = make_client(principal=Principal(TENANT, CLIENT, frozenset({"publish"}), FAR_FUTURE))

    [handshake] = await client.send(client.handshake_message())
    client.client_id = handshake.get("clientId")
    reply = await client.subscribe(X)

    assert reply["successful"] is False


# --- lines 20-22: subscribe replies and channels -------------------------------------------


@pytest.mark.parametrize(
    ("subscription", "replay", "successful"),
    [
        (X, None, True),
        ([X, Y], None, True),
        ("/event/*", None, True),
        ("/service/anything", None, True),
        ("/topic/AccountUpdates", None, False),
        ("/meta/connect", None, False),
        ("event/X__e", None, False),
        ("", None, False),
        (X, {X: 12345}, False),
    ],
)
async def test_line_20_subscribe_replies_echo_subscription_and_client_id(
    client: BayeuxClient, subscription: Any, replay: dict[str, Any] | None, successful: bool
) -> None:
    await client.handshake()
    message = client.subscribe_message(subscription, replay)

    [reply] = await client.send(message)

    assert reply["channel"] == "/meta/subscribe"
    assert reply["clientId"] == client.client_id
    assert reply["subscription"] == subscription
    assert reply["id"] == message["id"]
    assert reply["successful"] is successful
    assert ("error" in reply) is not successful


@pytest.mark.parametrize(
    "subscription",
    ["/topic/X", "/topic/AccountUpdates", "/data/AccountChangeEvent", "/u/Notifications", "/event"],
)
async def test_line_21_subscribing_to_a_channel_that_cannot_exist_fails(
    client: BayeuxClient, subscription: str
) -> None:
    await client.handshake()
    message = client.subscribe_message(subscription)

    [reply] = await client.send(message)

    assert reply == {
        "channel": "/meta/subscribe",
        "id": message["id"],
        "clientId": client.client_id,
        "subscription": subscription,
        "successful": False,
        "error": "400::The channel you requested to subscribe to does not exist "
        + "{"
        + subscription
        + "}",
    }


@pytest.mark.parametrize("subscription", ["/meta/connect", "/meta/*", "/meta/**", "/meta"])
async def test_line_22_subscribing_to_meta_channels_fails(
    client: BayeuxClient, subscription: str
) -> None:
    await client.handshake()

    reply = await client.subscribe(subscription)

    assert reply["successful"] is False
    assert reply["error"] == codec.SUBSCRIPTION_DENIED


async def test_line_22_subscribing_to_a_service_channel_is_a_successful_no_op(
    client: BayeuxClient, engine: MemoryEngine
) -> None:
    await client.start(X)
    assert client.client_id is not None
    before = await engine.session_get(client.client_id)

    reply = await client.subscribe("/service/echo")
    after = await engine.session_get(client.client_id)

    assert reply["successful"] is True
    assert before is not None
    assert after is not None
    assert after.subscriptions == before.subscriptions


# --- lines 23-27: the replay extension -----------------------------------------------------


async def _subscribe_then_poll(
    client: BayeuxClient, subscription: str, replay: dict[str, Any] | None
) -> tuple[dict[str, Any], list[int]]:
    await client.handshake()
    reply = await client.subscribe(subscription, replay)
    return reply, event_ids(await within(client.connect()))


async def test_line_23_replay_entry_for_the_subscription_without_its_query_is_used(
    client: BayeuxClient, publish: Publisher
) -> None:
    first, second, third = [await publish.one(X, n=n) for n in range(3)]

    reply, delivered = await _subscribe_then_poll(client, X + "?Field=Value", {X: first})

    assert reply["successful"] is True
    assert reply["subscription"] == X + "?Field=Value"
    assert delivered == [second, third]


async def test_line_23_replay_entry_for_the_full_subscription_wins(
    client: BayeuxClient, publish: Publisher
) -> None:
    first, second, third = [await publish.one(X, n=n) for n in range(3)]
    subscription = X + "?Field=Value"

    _, delivered = await _subscribe_then_poll(
        client, subscription, {subscription: second, X: first}
    )

    assert delivered == [third]


async def test_line_23_foreign_replay_keys_are_ignored_and_missing_means_new_only(
    client: BayeuxClient, publish: Publisher
) -> None:
    await publish.one(X)
    other = await publish.one(Y)

    reply, delivered = await _subscribe_then_poll(client, X, {Y: other - 1, "/event/Z__e": -2})
    live = await publish.one(X)
    after = await client.poll()

    assert reply["successful"] is True
    assert delivered == []
    assert event_ids(after) == [live]


async def test_line_23_replay_map_on_a_connect_or_handshake_is_ignored(
    client: BayeuxClient, publish: Publisher
) -> None:
    await publish.one(X)
    await client.handshake({"replay": {X: -2}})
    await client.subscribe(X)

    replies = await within(client.send({**client.connect_message(), "ext": {"replay": {X: -2}}}))

    assert events(replies) == []


async def test_line_24_new_only_delivers_only_events_after_the_subscribe(
    client: BayeuxClient, publish: Publisher
) -> None:
    await publish.one(X, n=1)

    reply, delivered = await _subscribe_then_poll(client, X, {X: -1})
    live = await publish.one(X, n=2)
    after = await client.poll()

    assert reply["successful"] is True
    assert delivered == []
    assert event_ids(after) == [live]


async def test_line_24_all_retained_then_live(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: MemoryEngine,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await publish_retaining(engine, X, 5, max_count=3)
    retained = [e.replay_id for e in (await engine.read(ChannelKey(TENANT, X), 0, 10)).events]

    reply, delivered = await _subscribe_then_poll(client, X, {X: -2})
    held = await hold(client, background)
    live = await publish.one(X)
    replies = await within(held)

    assert reply["successful"] is True
    assert len(retained) == 3
    assert delivered == retained
    assert event_ids(replies) == [live]


async def test_line_25_replay_from_n_is_exclusive_of_n_then_live(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    ids = [p.replay_id for p in await publish(X, *[{"n": n} for n in range(5)])]

    reply, delivered = await _subscribe_then_poll(client, X, {X: ids[1]})
    held = await hold(client, background)
    live = await publish.one(X)
    replies = await within(held)

    assert reply["successful"] is True
    assert delivered == ids[2:]
    assert event_ids(replies) == [live]


async def test_line_25_replay_from_the_latest_id_delivers_nothing_old(
    client: BayeuxClient, publish: Publisher
) -> None:
    latest = (await publish(X, {"n": 1}, {"n": 2}))[-1].replay_id

    _, delivered = await _subscribe_then_poll(client, X, {X: latest})

    assert delivered == []


async def test_line_25_numeric_string_replay_ids_are_accepted(
    client: BayeuxClient, publish: Publisher
) -> None:
    first, second = [await publish.one(X, n=n) for n in range(2)]

    reply, delivered = await _subscribe_then_poll(client, X, {X: str(first)})

    assert reply["successful"] is True
    assert delivered == [second]


async def test_line_26_replay_id_above_the_latest_is_invalid(
    client: BayeuxClient, publish: Publisher
) -> None:
    latest = await publish.one(X)
    await client.handshake()
    message = client.subscribe_message(X, {X: latest + 1})

    [reply] = await client.send(message)

    assert reply == {
        "channel": "/meta/subscribe",
        "id": message["id"],
        "clientId": client.client_id,
        "subscription": X,
        "successful": False,
        "error": f"400::The replayId {{{latest + 1}}} you provided was invalid.  Please provide "
        "a valid ID, -2 to replay all events, or -1 to replay only new events.",
    }


async def test_line_26_replay_id_below_the_low_water_mark_is_invalid(
    client: BayeuxClient, engine: MemoryEngine
) -> None:
    ids = await publish_retaining(engine, X, 4, max_count=2)
    await client.handshake()

    evicted = await client.subscribe(X, {X: ids[0]})
    at_low_water = await client.subscribe(X, {X: ids[1]})
    delivered = event_ids(await within(client.connect()))

    assert evicted["successful"] is False
    assert evicted["error"] == codec.replay_id_invalid(ids[0])
    assert at_low_water["successful"] is True
    assert delivered == ids[2:]


@pytest.mark.parametrize("requested", [5, -3, "abc", 1.5])
async def test_line_26_unusable_replay_ids_are_invalid(
    client: BayeuxClient, publish: Publisher, requested: object
) -> None:
    await publish.one(Y)
    await client.handshake()

    reply = await client.subscribe(X, {X: requested})

    assert reply["successful"] is False
    assert reply["error"] == codec.replay_id_invalid(requested)


async def test_line_26_a_refused_subscribe_stores_no_subscription(
    client: BayeuxClient, publish: Publisher
) -> None:
    latest = await publish.one(X)
    await client.handshake()
    await client.subscribe(X, {X: latest + 1})

    await publish.one(X)
    replies = await client.poll()

    assert events(replies) == []


async def test_line_27_replay_ids_are_positive_safe_integers_increasing_per_channel(
    client: BayeuxClient, publish: Publisher, clock: FakeClock
) -> None:
    await client.start(X)
    await publish(X, *[{"n": n} for n in range(3)])
    clock.advance(0.5)
    await publish(X, {"n": 3})
    clock.set_wall(clock.now_us() - 10_000_000)
    await publish(X, {"n": 4}, {"n": 5})

    ids = event_ids(await client.poll())

    assert len(ids) == 6
    assert all(type(i) is int and 0 < i < 2**53 for i in ids)
    assert all(a < b for a, b in itertools.pairwise(ids))


# --- lines 28-29: the delivered event ------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "with_uuid"),
    [("58.0", True), ("52.0", True), ("52", True), (None, True), ("51.0", False), ("45.0", False)],
)
async def test_line_28_29_platform_event_shape_and_event_uuid_by_version(
    make_client: ClientFactory, publish: Publisher, version: str | None, with_uuid: bool
) -> None:
    client = make_client(version=version)
    await client.start(X)
    [published] = await publish(X, {"Printer_Model__c": "XZO-5", "Ink_Percentage__c": 0.2})

    [event, _] = await client.poll()

    expected_event: dict[str, Any] = {"replayId": published.replay_id}
    if with_uuid:
        expected_event["EventUuid"] = published.uuid
    assert set(event) == {"channel", "data"}
    assert event["channel"] == X
    assert set(event["data"]) == {"schema", "payload", "event"}
    assert event["data"]["payload"] == {
        "Printer_Model__c": "XZO-5",
        "Ink_Percentage__c": 0.2,
        "CreatedDate": format_created(published.created_us),
        "CreatedById": CLIENT,
    }
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["data"]["payload"]["CreatedDate"]
    )
    assert event["data"]["event"] == expected_event


async def test_line_29_clients_on_different_versions_get_their_own_shape(
    make_client: ClientFactory, publish: Publisher
) -> None:
    old, new = make_client(version="45.0"), make_client(version="58.0")
    await old.start(X)
    await new.start(X)
    [published] = await publish(X, {"n": 1})

    [old_event, _] = await old.poll()
    [new_event, _] = await new.poll()

    assert old_event["data"]["event"] == {"replayId": published.replay_id}
    assert new_event["data"]["event"] == {
        "replayId": published.replay_id,
        "EventUuid": published.uuid,
    }


# --- line 33: reply caps -------------------------------------------------------------------


async def test_line_33_reply_event_count_is_capped_and_the_rest_follows(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=3))
    await client.start(X)
    published = [p.replay_id for p in await publish(X, *[{"n": n} for n in range(7)])]

    batches = [event_ids(await client.poll()) for _ in range(4)]

    assert batches == [published[:3], published[3:6], published[6:], []]


async def test_line_33_cap_applies_to_events_arriving_during_a_hold(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=3, bayeux_timeout=600))
    await client.start(X)
    held = await hold(client, background)

    published = [p.replay_id for p in await publish(X, *[{"n": n} for n in range(7)])]
    first = event_ids(await within(held))
    rest = [event_ids(await client.poll()) for _ in range(3)]

    assert [first, *rest] == [published[:3], published[3:6], published[6:], []]


async def test_line_33_cap_counts_across_channels(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = make_client(make_server(bayeux_max_reply_events=3))
    await client.start(X, Y)
    on_x = [p.replay_id for p in await publish(X, {"n": 1}, {"n": 2})]
    on_y = [p.replay_id for p in await publish(Y, {"n": 1}, {"n": 2})]

    replies = [events(await client.poll()) for _ in range(3)]

    assert [len(r) for r in replies] == [3, 1, 0]
    delivered = [(e["channel"], e["data"]["event"]["replayId"]) for r in replies for e in r]
    assert sorted(delivered) == sorted([(X, i) for i in on_x] + [(Y, i) for i in on_y])


async def test_line_33_reply_size_is_capped_but_an_oversized_event_still_goes_alone(
    make_server: ServerFactory, make_client: ClientFactory, publish: Publisher
) -> None:
    client = make_client(make_server(bayeux_max_reply_size=1024))
    await client.start(X)
    small = [p.replay_id for p in await publish(X, *[{"p": "x" * 250} for _ in range(5)])]
    large = [p.replay_id for p in await publish(X, {"p": "y" * 2000})]

    batches = [await client.poll() for _ in range(5)]

    sizes = [sum(len(orjson.dumps(e)) for e in events(b)) for b in batches]
    assert [event_ids(b) for b in batches] == [small[:2], small[2:4], small[4:], large, []]
    assert all(size <= 1024 for size in sizes[:3])


# --- line 34: disconnect -------------------------------------------------------------------


async def test_line_34_disconnect_removes_the_session_and_releases_the_held_connect(
    make_server: ServerFactory,
    make_client: ClientFactory,
    engine: MemoryEngine,
    background: Background,
) -> None:
    server = make_server(bayeux_timeout=600)
    client = make_client(server)
    await client.start(X)
    assert client.client_id is not None
    held = await hold(client, background)

    reply = await client.disconnect()
    released = await within(held)
    [after] = await client.connect()

    assert reply == {
        "channel": "/meta/disconnect",
        "clientId": client.client_id,
        "id": reply["id"],
        "successful": True,
    }
    assert connect_reply(released)["advice"] == {"reconnect": "none", "interval": 0}
    assert events(released) == []
    assert await engine.session_get(client.client_id) is None
    assert server.held_connects == 0
    assert after["error"] == "403::Unknown client"


# --- the CometD ack extension (1.12) -------------------------------------------------------


async def test_ack_handshake_is_acknowledged_only_when_asked(client: BayeuxClient) -> None:
    with_ack = await client.handshake({"replay": True, "ack": True})
    without = await client.handshake({"replay": True})

    assert with_ack["ext"] == {**HANDSHAKE_EXT, "ack": True}
    assert without["ext"] == HANDSHAKE_EXT


async def test_ack_connect_replies_carry_increasing_batch_numbers(client: BayeuxClient) -> None:
    await client.handshake({"ack": True})

    first = connect_reply(await within(client.connect(ack=-1)))
    second = connect_reply(await client.poll(ack=first["ext"]["ack"]))
    third = connect_reply(await client.poll(ack=second["ext"]["ack"]))

    assert [first["ext"], second["ext"], third["ext"]] == [{"ack": 1}, {"ack": 2}, {"ack": 3}]


async def test_ack_a_lost_reply_is_delivered_again(
    client: BayeuxClient, publish: Publisher
) -> None:
    await client.handshake({"ack": True})
    await client.subscribe(X)
    first = connect_reply(await within(client.connect()))["ext"]["ack"]
    published = [p.replay_id for p in await publish(X, {"n": 1}, {"n": 2})]

    delivered = await client.poll(ack=first)
    # The reply was lost: the client connects again acknowledging only the batch before it.
    again = await client.poll(ack=first)
    acknowledged = await client.poll(ack=connect_reply(again)["ext"]["ack"])
    later = await publish.one(X)
    next_batch = await client.poll(ack=connect_reply(acknowledged)["ext"]["ack"])

    assert event_ids(delivered) == published
    assert event_ids(again) == published
    assert connect_reply(again)["ext"]["ack"] > connect_reply(delivered)["ext"]["ack"]
    assert event_ids(acknowledged) == []
    assert event_ids(next_batch) == [later]


async def test_ack_acknowledging_the_latest_batch_delivers_nothing_again(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X, ext={"ack": True})
    published = await publish.one(X)
    delivered = await client.poll(ack=1)
    batch = connect_reply(delivered)["ext"]["ack"]

    held = await hold(client, background, ack=batch)
    live = await publish.one(X)
    replies = await within(held)

    assert event_ids(delivered) == [published]
    assert event_ids(replies) == [live]


async def test_ack_is_ignored_for_a_session_that_did_not_ask_for_it(
    client: BayeuxClient, publish: Publisher
) -> None:
    await client.start(X)
    published = await publish.one(X)

    delivered = await client.poll(ack=0)
    after = await client.poll(ack=0)

    assert event_ids(delivered) == [published]
    assert "ext" not in connect_reply(delivered)
    assert event_ids(after) == []


async def test_ack_superseded_connect_does_not_undo_the_newer_batch(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    """The client gives up on a held connect and connects again just as an event arrives: the
    newer connect gets the event, and acknowledging its batch must commit it."""
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X, ext={"ack": True})
    held = await hold(client, background, ack=1)

    published = await publish.one(X)
    newer = await within(client.connect(ack=1))
    superseded = await within(held)
    after = await client.poll(ack=connect_reply(newer)["ext"]["ack"])

    assert event_ids(newer) == [published]
    assert events(superseded) == []
    assert event_ids(after) == []


# --- subscriptions while a connect is held -------------------------------------------------


async def test_subscribe_while_a_connect_is_held_wakes_it(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start(X)
    held = await hold(client, background)

    subscribed = await client.subscribe(Y)
    woken = await within(held)
    next_held = await hold(client, background)
    on_y = await publish.one(Y)
    replies = await within(next_held)

    assert subscribed["successful"] is True
    assert connect_reply(woken)["successful"] is True
    assert events(woken) == []
    assert event_ids(replies) == [on_y]


async def test_unsubscribe_stops_delivery(client: BayeuxClient, publish: Publisher) -> None:
    await client.start(X, Y)

    reply = await client.unsubscribe(X)
    await publish.one(X)
    on_y = await publish.one(Y)
    replies = await client.poll()

    assert reply["successful"] is True
    assert reply["subscription"] == X
    assert event_ids(replies) == [on_y]


# --- wildcard subscriptions ----------------------------------------------------------------


async def test_wildcard_delivers_channels_created_after_it_across_connects(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start("/event/*")

    on_a = await publish.one("/event/A__e")
    first = await client.poll()
    on_b = await publish.one("/event/B__e")
    second = await client.poll()
    held = await hold(client, background)
    on_c = await publish.one("/event/C__e")
    third = await within(held)
    on_a_again = await publish.one("/event/A__e")
    fourth = await client.poll()

    assert [(e["channel"], e["data"]["event"]["replayId"]) for e in events(first)] == [
        ("/event/A__e", on_a)
    ]
    assert [(e["channel"], e["data"]["event"]["replayId"]) for e in events(second)] == [
        ("/event/B__e", on_b)
    ]
    assert [(e["channel"], e["data"]["event"]["replayId"]) for e in events(third)] == [
        ("/event/C__e", on_c)
    ]
    assert [(e["channel"], e["data"]["event"]["replayId"]) for e in events(fourth)] == [
        ("/event/A__e", on_a_again)
    ]


async def test_wildcard_skips_events_published_before_it(
    client: BayeuxClient, publish: Publisher, clock: FakeClock
) -> None:
    await publish.one("/event/Old__e")
    clock.advance(1)
    await client.handshake()
    await client.subscribe("/event/*")

    first = await within(client.connect())
    new = await publish.one("/event/Old__e")
    replies = await client.poll()

    assert event_ids(first) == []
    assert event_ids(replies) == [new]


async def test_wildcard_skips_a_burst_published_just_before_it(
    client: BayeuxClient, publish: Publisher, clock: FakeClock
) -> None:
    """A batch publish runs ReplayIds ahead of the clock (`max(previous + 1, now)`); events
    published before the subscription must stay out even though their ids are newer than the
    subscription time."""
    burst = [p.replay_id for p in await publish("/event/Burst__e", *[{"n": n} for n in range(5)])]
    clock.advance(0.000_001)
    await client.handshake()
    await client.subscribe("/event/*")

    first = await within(client.connect())
    new = await publish.one("/event/Burst__e")
    replies = await client.poll()

    assert new > burst[-1]
    assert event_ids(first) + event_ids(replies) == [new]


async def test_wildcard_resubscribe_delivers_only_events_after_it(
    client: BayeuxClient, publish: Publisher, clock: FakeClock
) -> None:
    await client.start("/event/*")
    first = await publish.one("/event/A__e")
    delivered = await client.poll()
    await client.unsubscribe("/event/*")

    clock.advance(1)
    await publish.one("/event/A__e")
    clock.advance(1)
    await client.subscribe("/event/*")
    after = await publish.one("/event/A__e")
    replies = await client.poll()

    assert event_ids(delivered) == [first]
    assert event_ids(replies) == [after]


async def test_wildcard_and_exact_subscription_deliver_each_event_once(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    background: Background,
) -> None:
    client = make_client(make_server(bayeux_timeout=600))
    await client.start("/event/*", X)

    from_history = await publish.one(X)
    polled = await client.poll()
    held = await hold(client, background)
    live = await publish.one(X)
    replies = await within(held)
    nothing = await client.poll()

    assert event_ids(polled) == [from_history]
    assert event_ids(replies) == [live]
    assert event_ids(nothing) == []


async def test_wildcard_matches_one_segment_and_double_wildcard_any_depth(
    make_client: ClientFactory, publish: Publisher
) -> None:
    single, double = make_client(), make_client()
    await single.start("/event/*")
    await double.start("/event/**")

    shallow = await publish.one("/event/A__e")
    deep = await publish.one("/event/A/B")

    assert event_ids(await single.poll()) == [shallow]
    assert sorted(event_ids(await double.poll())) == sorted([shallow, deep])


# --- draining ------------------------------------------------------------------------------


async def test_draining_releases_a_held_connect_with_retry_advice(
    make_server: ServerFactory,
    make_client: ClientFactory,
    draining: asyncio.Event,
    background: Background,
) -> None:
    server = make_server(bayeux_timeout=600, reconnect_jitter=0)
    client = make_client(server)
    await client.start(X)
    held = await hold(client, background)

    draining.set()
    replies = await within(held)
    while_draining = await within(client.connect())

    assert replies == [
        {
            "channel": "/meta/connect",
            "clientId": client.client_id,
            "id": replies[0]["id"],
            "successful": True,
            "advice": {"reconnect": "retry", "interval": 0, "timeout": 600_000},
        }
    ]
    assert connect_reply(while_draining)["successful"] is True
    assert server.held_connects == 0


# --- gaps between connects -----------------------------------------------------------------


async def test_clients_released_by_a_drain_are_told_to_come_back_at_spread_out_intervals(
    make_server: ServerFactory,
    make_client: ClientFactory,
    draining: asyncio.Event,
    background: Background,
) -> None:
    server = make_server(bayeux_timeout=600, reconnect_jitter=3)
    clients = [make_client(server) for _ in range(8)]
    held = []
    for client in clients:
        await client.start(X)
        held.append(await hold(client, background))

    draining.set()
    intervals = [connect_reply(await within(h))["advice"]["interval"] for h in held]

    assert all(0 <= interval <= 3000 for interval in intervals)
    assert len(set(intervals)) > 1


async def test_reporting_a_position_below_the_low_water_mark_delivers_retained_events_and_a_gap(
    make_server: ServerFactory,
    make_client: ClientFactory,
    publish: Publisher,
    engine: MemoryEngine,
) -> None:
    """REPLAYBUS_BAYEUX_GAP=report (the default ends the session: tests/bayeux/test_gaps.py)."""
    client = make_client(make_server(bayeux_gap="report"))
    position = await publish.one(X)
    await client.start(X)

    ids = await publish_retaining(engine, X, 5, max_count=2)
    replies = await client.poll()
    after = await client.poll()

    assert event_ids(replies) == ids[3:]
    assert connect_reply(replies)["ext"] == {
        "replaybus": {
            "gaps": [{"channel": X, "requested": position, "earliest": ids[3], "latest": ids[4]}]
        }
    }
    assert event_ids(after) == []
    assert "ext" not in connect_reply(after)


async def test_reporting_a_gap_on_a_held_connect_too(
    make_server: ServerFactory,
    make_client: ClientFactory,
    engine: MemoryEngine,
    background: Background,
) -> None:
    """Events trimmed while the client was between connects: with REPLAYBUS_BAYEUX_GAP=report
    the next (holdable) connect answers at once with what is retained and the gap."""
    client = make_client(make_server(bayeux_timeout=600, bayeux_gap="report"))
    await client.start(X)
    ids = await publish_retaining(engine, X, 4, max_count=1)

    replies = await within(client.connect())

    assert event_ids(replies) == ids[3:]
    [gap] = connect_reply(replies)["ext"]["replaybus"]["gaps"]
    assert gap["channel"] == X
    assert gap["earliest"] == ids[3]


async def test_line_31_replay_honours_the_retention_age(
    make_server: ServerFactory,
    make_client: ClientFactory,
    engine: MemoryEngine,
    principal: Principal,
    clock: FakeClock,
) -> None:
    """Events older than the retention age are gone: a position among them is refused, and
    -2 replays only what is still within the window."""
    settings = Settings(retention_max_age=3600.0)
    publish = Publisher(PublishService(engine, settings), principal)
    client = make_client(make_server(retention_max_age=3600.0))
    old = [await publish.one(X, n=n) for n in range(2)]
    clock.advance(3601)
    fresh = await publish.one(X, n=2)
    await client.handshake()

    expired = await client.subscribe(X, {X: old[0] - 1})
    everything = await client.subscribe(X, {X: -2})
    delivered = event_ids(await within(client.connect()))

    assert expired["successful"] is False
    assert expired["error"] == codec.replay_id_invalid(old[0] - 1)
    assert everything["successful"] is True
    assert delivered == [fresh]
