"""A real Python Salesforce Streaming client against a real server: aiosfstream-ng 0.7.5 on
aiocometd-ng 0.5.6 (both pinned in the `dev` extra).

Why this library. aiocometd 0.4.5 (the original, 2019) passes `loop=` to asyncio primitives and
cannot run on Python 3.10+. Its forks on PyPI:
- aiocometd-ng 0.5.6 (2024) with aiosfstream-ng 0.7.5 (2024), one maintainer's forks of
  aiocometd and of aiosfstream, the Salesforce client built on it. They are the newest, they ship
  type information (`py.typed`, so mypy strict checks our use of them), and aiosfstream is what
  Python users of the Streaming API run: its Salesforce replay extension (ReplayMarker storage
  sending `ext.replay = {channel: id}` on subscribe), `replay_fallback` on a 400 replay error,
  re-authentication after a 401/403 reply, `Bearer` tokens. The reference digest's §2.5 and §2.6
  describe exactly this client, so it is the faithful one to test against.
- aiocometd-noloop 0.4.9 (2023) removes `loop=` too, but is untyped and is only the generic CometD
  client (no Salesforce replay extension); aiocometd-ng has the same code apart from one line.
That line is aiocometd-ng's known defect on 3.10+: `Client._wait_connection_timeout` still
passes `loop=` to `asyncio.wait_for`. It runs only after the transport lost the server (a network
error on `/meta/connect`); `receive()` then raises `TransportTimeoutError` at once instead of
waiting `connection_timeout` for the reconnect. No test here goes through that path: the server
answers every request. Closing the client while a `/meta/connect` is in flight also makes
aiocometd-ng log "Exception in callback TransportBase._connect_done" (it catches `Exception`,
and `CancelledError` is not one since Python 3.8): logged by asyncio, not raised, harmless.

aiosfstream hard-codes `/cometd/45.0`; `StreamingClient` uses 58.0 so events carry `EventUuid`.
aiosfstream needs `payload.CreatedDate` on platform events to store replay markers, so every
test that receives also checks the server fills it.

Checklist lines (reference/salesforce-streaming.md §7) exercised here: 2 (aiohttp's
`application/json` arrays), 3, 4 (ids echoed), 5 (`Bearer`), 7, 8 (websocket offered, not
used), 9 (invalid token, and aiocometd's re-authenticate-and-resend after it), 11, 13, 14, 17
(aiohttp drops cookies for 127.0.0.1), 20, 23, 24, 25, 26 (and aiosfstream's `replay_fallback`
on it), 27, 28, 29, 34.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import httpx
import pytest
from aiosfstream_ng.exceptions import ServerError
from aiosfstream_ng.replay import DefaultMappingStorage, ReplayMarker, ReplayOption

from tests.clients.support import port_of
from tests.e2e.bayeux_publish import (
    bogus_replay_id,
    invalid_replay_id_error,
    keep_newest,
    publish_batches,
    publish_each,
)
from tests.e2e.bayeux_python import ClientCredentials, StreamingClient, receive
from tests.e2e.server import CLIENT_ID, RunningServer
from tests.e2e.sse import channel_name
from tests.harness.request_gate import request_gate

DEADLINE = 15.0  # seconds for any one client operation


def ids(messages: list[dict[str, Any]]) -> list[int]:
    return [int(message["data"]["event"]["replayId"]) for message in messages]


def acked(acks: list[dict[str, Any]]) -> list[int]:
    return [int(ack["replayId"]) for ack in acks]


def subscribe_replay(auth: ClientCredentials) -> list[Any]:
    """The `ext.replay` maps the client sent with its subscribes."""
    return [m.get("ext", {}).get("replay") for m in auth.requests("/meta/subscribe")]


async def test_handshake_with_a_token_then_subscribe_receive_and_disconnect(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as http:
        acks = await publish_each(http, server.base_url, token, channel, 1, "handshake")
    auth = ClientCredentials(server)
    async with asyncio.timeout(DEADLINE):
        async with StreamingClient(auth, replay=ReplayOption.ALL_EVENTS) as client:
            await client.subscribe(channel)
            [message] = await receive(client, 1, DEADLINE)

    assert auth.token_type == "Bearer"
    assert auth.instance_url == server.base_url
    [request] = auth.requests("/meta/handshake")
    assert request["supportedConnectionTypes"] == ["websocket", "long-polling"]
    [handshake] = auth.replies("/meta/handshake")
    assert handshake["successful"] is True
    assert handshake["id"] == request["id"]
    assert handshake["version"] == "1.0"
    assert handshake["minimumVersion"] == "1.0"
    assert handshake["supportedConnectionTypes"] == ["long-polling"]
    assert re.fullmatch(r"[0-9a-z]{25,}", handshake["clientId"]), handshake
    assert handshake["ext"] == {"replay": True, "payload.format": True}
    assert client.connection_type is not None
    assert client.connection_type.value == "long-polling"

    connects = auth.replies("/meta/connect")
    assert connects[0]["successful"] is True
    assert connects[0]["advice"] == {"reconnect": "retry", "interval": 0, "timeout": 110000}
    assert all(m["connectionType"] == "long-polling" for m in auth.requests("/meta/connect"))

    [subscribe] = auth.replies("/meta/subscribe")
    assert subscribe["successful"] is True
    assert subscribe["subscription"] == channel
    assert subscribe["clientId"] == handshake["clientId"]
    assert ids([message]) == acked(acks)

    [disconnect] = auth.replies("/meta/disconnect")
    assert disconnect["successful"] is True
    assert auth.authentications == 1  # no request was refused


async def test_replay_all_retained_delivers_every_event_in_order_with_its_uuid(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as http:
        acks = await publish_each(http, server.base_url, token, channel, 5, "all")
    auth = ClientCredentials(server)
    async with asyncio.timeout(DEADLINE):
        async with StreamingClient(auth, replay=ReplayOption.ALL_EVENTS) as client:
            await client.subscribe(channel)
            messages = await receive(client, 5, DEADLINE)

    assert subscribe_replay(auth) == [{channel: -2}]
    assert ids(messages) == acked(acks)
    for number, (ack, message) in enumerate(zip(acks, messages, strict=True)):
        assert set(message) == {"channel", "data"}  # no `successful` on delivered events
        assert message["channel"] == channel
        assert message["data"]["payload"] == {
            "tag": "all",
            "n": number,
            "CreatedDate": ack["createdDate"],
            "CreatedById": CLIENT_ID,
        }
        assert message["data"]["event"] == {"replayId": ack["replayId"], "EventUuid": ack["uuid"]}


async def test_new_events_only_skips_what_was_published_before(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    auth = ClientCredentials(server)
    async with httpx.AsyncClient(timeout=30) as http:
        await publish_each(http, server.base_url, token, channel, 3, "old")
        async with asyncio.timeout(DEADLINE):
            async with StreamingClient(auth, replay=ReplayOption.NEW_EVENTS) as client:
                await client.subscribe(channel)
                new = await publish_batches(
                    http, server.base_url, token, channel, 3, batch_size=3, publishers=1
                )
                messages = await receive(client, 3, DEADLINE)

    assert subscribe_replay(auth) == [{channel: -1}]
    assert ids(messages) == acked(new)


async def test_replay_from_a_replay_id_delivers_exactly_the_later_events(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    auth = ClientCredentials(server)
    async with httpx.AsyncClient(timeout=30) as http:
        acks = await publish_each(http, server.base_url, token, channel, 8, "n")
        marker = ReplayMarker(date=acks[2]["createdDate"], replay_id=acks[2]["replayId"])
        async with asyncio.timeout(DEADLINE):
            async with StreamingClient(auth, replay={channel: marker}) as client:
                await client.subscribe(channel)
                live = await publish_each(http, server.base_url, token, channel, 1, "live")
                messages = await receive(client, 6, DEADLINE)

    assert subscribe_replay(auth) == [{channel: acks[2]["replayId"]}]
    # The five retained events after N (never N itself), then the live one: nothing between.
    assert ids(messages) == acked([*acks[3:], *live])


async def test_events_arrive_in_replay_id_order_while_publishers_race(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    total = 400
    async with httpx.AsyncClient(timeout=30) as http:
        async with asyncio.timeout(DEADLINE * 2):
            async with StreamingClient(ClientCredentials(server)) as client:
                await client.subscribe(channel)
                acks, messages = await asyncio.gather(
                    publish_batches(
                        http, server.base_url, token, channel, total, batch_size=20, publishers=4
                    ),
                    receive(client, total, DEADLINE * 2),
                )

    assert ids(messages) == acked(acks)


async def test_a_new_client_resuming_from_the_last_replay_id_gets_exactly_the_rest(
    server: RunningServer, token: str
) -> None:
    """aiosfstream's own resume: the replay storage (a dict here, a shelf in real use) keeps the
    marker of the last message consumed; a new client given the same storage subscribes from
    it."""
    channel = channel_name()
    total, cut = 300, 120
    markers: dict[str, ReplayMarker] = {}
    first_auth, second_auth = ClientCredentials(server), ClientCredentials(server)
    async with httpx.AsyncClient(timeout=30) as http:
        async with asyncio.timeout(DEADLINE * 2):
            storage = DefaultMappingStorage(markers, ReplayOption.ALL_EVENTS)
            async with StreamingClient(first_auth, replay=storage) as first:
                await first.subscribe(channel)
                publishing = asyncio.create_task(
                    publish_batches(
                        http, server.base_url, token, channel, total, batch_size=10, publishers=3
                    )
                )
                seen = ids(await receive(first, cut, DEADLINE))
            # The first client is closed (disconnected) while publishing goes on.
            acks = await publishing
        assert markers[channel].replay_id == seen[-1]

        async with asyncio.timeout(DEADLINE):
            async with StreamingClient(second_auth, replay=markers) as second:
                await second.subscribe(channel)
                rest = ids(await receive(second, total - cut, DEADLINE))

    assert subscribe_replay(first_auth) == [{channel: -2}]
    assert subscribe_replay(second_auth) == [{channel: seen[-1]}]
    assert [m["successful"] for m in first_auth.replies("/meta/disconnect")] == [True]
    assert seen + rest == acked(acks)  # nothing lost, no duplicates


@pytest.mark.parametrize("retained", [2, 0], ids=["past-the-top", "empty-channel"])
async def test_an_invalid_replay_id_is_refused_with_the_salesforce_text(
    server: RunningServer, token: str, retained: int
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as http:
        acks = await publish_each(http, server.base_url, token, channel, retained, "x")
    latest = acks[-1]["replayId"] if acks else 1_700_000_000_000_000
    bogus = bogus_replay_id(latest)
    marker = ReplayMarker(date="2026-01-01T00:00:00.000Z", replay_id=bogus)
    auth = ClientCredentials(server)
    async with asyncio.timeout(DEADLINE):
        async with StreamingClient(auth, replay={channel: marker}) as client:
            with pytest.raises(ServerError) as raised:
                await client.subscribe(channel)

    assert raised.value.error_code == 400
    reply = raised.value.response
    assert reply is not None
    assert reply["error"] == invalid_replay_id_error(bogus)
    assert reply["error"].startswith("400::The replayId {")
    assert reply["successful"] is False
    assert reply["subscription"] == channel
    assert isinstance(reply["clientId"], str)


async def test_replay_fallback_resubscribes_after_the_invalid_replay_id(
    server: RunningServer, token: str
) -> None:
    """aiosfstream's documented recovery: on a 400 subscribe error it subscribes again with
    the fallback option."""
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as http:
        acks = await publish_each(http, server.base_url, token, channel, 3, "fallback")
    bogus = bogus_replay_id(acks[-1]["replayId"])
    marker = ReplayMarker(date=acks[0]["createdDate"], replay_id=bogus)
    auth = ClientCredentials(server)
    async with asyncio.timeout(DEADLINE):
        async with StreamingClient(
            auth, replay={channel: marker}, replay_fallback=ReplayOption.ALL_EVENTS
        ) as client:
            await client.subscribe(channel)
            messages = await receive(client, 3, DEADLINE)

    assert subscribe_replay(auth) == [{channel: bogus}, {channel: -2}]
    assert [m["successful"] for m in auth.replies("/meta/subscribe")] == [False, True]
    assert ids(messages) == acked(acks)


async def test_an_invalid_token_is_refused_at_handshake(server: RunningServer) -> None:
    auth = ClientCredentials(server, tamper=True)
    async with asyncio.timeout(DEADLINE):
        with pytest.raises(ServerError) as raised:
            async with StreamingClient(auth):
                pytest.fail("the handshake must be refused")

    reply = raised.value.response
    assert reply is not None
    assert reply["channel"] == "/meta/handshake"
    assert reply["successful"] is False
    assert reply["error"] == "403::Handshake denied"
    assert reply["ext"]["sfdc"] == {"failureReason": "401::Authentication invalid"}
    assert reply["advice"] == {"reconnect": "none"}
    assert "clientId" not in reply
    # aiocometd treats the 403 as an authentication error: it fetches a new token and sends
    # the same handshake once more, which is refused the same way.
    assert auth.authentications == 2
    assert [m["error"] for m in auth.replies("/meta/handshake")] == ["403::Handshake denied"] * 2


async def test_a_session_that_fell_out_of_retention_ends_and_replay_fallback_takes_over(
    server: RunningServer, token: str
) -> None:
    """The channel keeps 3 events. The client has processed `seen` when its next connect is
    held at a gate while 4 more events are published, evicting `seen`. That connect ends the
    session: `receive()` raises the replay error. Opened again with the same replay storage,
    the client subscribes from `seen`, is refused with the same error, and `replay_fallback`
    subscribes again with -2: it gets exactly the retained events."""
    channel = channel_name()
    storage = DefaultMappingStorage({}, ReplayOption.ALL_EVENTS)
    with request_gate(port_of(server)) as gate:
        through_gate = dataclasses.replace(server, base_url=gate.url)
        first_auth, second_auth = ClientCredentials(through_gate), ClientCredentials(through_gate)
        async with httpx.AsyncClient(timeout=30) as http, asyncio.timeout(2 * DEADLINE):
            await keep_newest(http, server.base_url, token, channel, 3)
            [first] = await publish_each(http, server.base_url, token, channel, 1, "first")
            async with StreamingClient(
                first_auth, replay=storage, replay_fallback=ReplayOption.ALL_EVENTS
            ) as client:
                await client.subscribe(channel)
                assert ids(await receive(client, 1, DEADLINE)) == acked([first])
                await server.wait_for_held_connects(1)
                gate.hold()
                # The held connect delivers `seen`; the client's next connect waits at the gate.
                [seen] = await publish_each(http, server.base_url, token, channel, 1, "seen")
                assert ids(await receive(client, 1, DEADLINE)) == acked([seen])
                later = await publish_each(http, server.base_url, token, channel, 4, "later")
                gate.release()
                with pytest.raises(ServerError) as ended:
                    await client.receive()
            async with StreamingClient(
                second_auth, replay=storage, replay_fallback=ReplayOption.ALL_EVENTS
            ) as client:
                await client.subscribe(channel)
                replayed = await receive(client, 3, DEADLINE)

    reply = ended.value.response
    assert reply is not None
    assert reply["channel"] == "/meta/connect"
    assert reply["successful"] is False
    assert reply["error"] == invalid_replay_id_error(seen["replayId"])
    assert reply["advice"] == {"reconnect": "none", "interval": 0}
    assert [gap["requested"] for gap in reply["ext"]["replaybus"]["gaps"]] == [seen["replayId"]]
    assert subscribe_replay(second_auth) == [{channel: seen["replayId"]}, {channel: -2}]
    [refused, accepted] = second_auth.replies("/meta/subscribe")
    assert refused["error"] == invalid_replay_id_error(seen["replayId"])
    assert accepted["successful"] is True
    assert ids(replayed) == acked(later[1:])
