"""The official CometD JavaScript client against a real server.

npm `cometd` 9.0.0 runs under Node through `cometd-nodejs-client` 2.0.0 (its XMLHttpRequest and
WebSocket adapter), pinned in `tests/node/package.json` and installed with `npm ci` from the
committed lockfile. `tests/node/subscriber.mjs` configures it the way Salesforce documents:
`requestHeaders: {Authorization: "OAuth <token>"}`, the sample replay extension adding
`ext.replay = {channel: replayId}` to `/meta/subscribe` once the handshake reply says
`ext.replay: true`, and the subscription made from a `/meta/handshake` listener. CometD's own
defaults stay on: the meta type is appended to the URL (`/cometd/58.0/handshake`, `/connect`,
`/disconnect`) and, where a test says so, WebSocket is tried first.

Checklist lines (reference/salesforce-streaming.md §7) exercised here: 1 (URL suffixes), 3 (the
client parses every reply), 5 (`OAuth` and `Bearer`), 7 (handshake reply), 8 and 40 (a client
offering websocket and callback-polling; its WebSocket attempt is refused and it falls back to
long-polling), 9 (invalid token), 11 and 13 (first connect at once, live events wake held
connects: no test waits for a hold to time out), 14 (order), 17 (no cookies needed), 20
(subscribe replies), 23, 24, 25 and 26 (replay -1, -2, N and an invalid N), 27 and 28 (event
shape), 29 (`EventUuid` from 52.0 on, equal to the REST publish's uuid), 34 (disconnect).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.clients.support import port_of
from tests.e2e.bayeux_node import (
    NodeRun,
    Record,
    events,
    install_node_packages,
    is_subscribe_reply,
    meta,
    node_script,
    replay_ids,
)
from tests.e2e.bayeux_publish import (
    API_VERSION,
    bogus_replay_id,
    invalid_replay_id_error,
    keep_newest,
    publish_batches,
    publish_each,
    tampered,
)
from tests.e2e.server import CLIENT_ID, RunningServer
from tests.e2e.sse import channel_name
from tests.harness.request_gate import request_gate

DEADLINE = 15.0  # seconds a subscriber script may run before it gives up by itself
WAIT = DEADLINE + 10.0  # how long a test waits for the script's output and exit


@pytest.fixture(scope="session")
def node_dir() -> Path:
    return install_node_packages()


def subscriber(
    node_dir: Path,
    server: RunningServer,
    token: str,
    channel: str,
    replay: int,
    count: int,
    *,
    scheme: str = "OAuth",
    version: str = API_VERSION,
    websocket: bool = False,
    url: str | None = None,
    fallback: int | None = None,
    rehandshake: bool = False,
) -> AbstractAsyncContextManager[NodeRun]:
    """`url`: where the client connects, if not straight to `server`; `fallback` and
    `rehandshake`: see tests/node/subscriber.mjs."""
    arguments = [
        f"--url={url or server.base_url}",
        f"--channel={channel}",
        f"--replay={replay}",
        f"--count={count}",
        f"--version={version}",
        f"--scheme={scheme}",
        f"--deadline-ms={int(DEADLINE * 1000)}",
    ]
    if websocket:
        arguments.append("--websocket")
    if fallback is not None:
        arguments.append(f"--fallback={fallback}")
    if rehandshake:
        arguments.append("--rehandshake")
    return node_script("subscriber.mjs", arguments, token, node_dir)


def done(records: list[Record]) -> Record:
    finals = [record for record in records if record["type"] == "done"]
    assert len(finals) == 1, records
    return finals[0]


async def subscribed(run: NodeRun) -> None:
    """Wait until the subscription is in place (its successful reply came back)."""
    reply = await run.wait_for(is_subscribe_reply, WAIT)
    assert reply["message"]["successful"] is True, run.describe()


@pytest.mark.parametrize(
    ("scheme", "websocket"),
    [("OAuth", False), ("Bearer", False), ("OAuth", True)],
    ids=["oauth", "bearer", "websocket-offered-first"],
)
async def test_handshake_with_a_token_then_subscribe_receive_and_disconnect(
    node_dir: Path, server: RunningServer, token: str, scheme: str, websocket: bool
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        acks = await publish_each(client, server.base_url, token, channel, 1, "handshake")
    started = time.monotonic()
    async with subscriber(
        node_dir, server, token, channel, -2, 1, scheme=scheme, websocket=websocket
    ) as run:
        records = await run.finish(WAIT)
    elapsed = time.monotonic() - started

    assert run.returncode == 0, run.describe()
    assert done(records)["reason"] == "count"
    handshakes = meta(records, "handshake")
    if websocket:
        # CometD tries WebSocket first; the refused upgrade is a transport failure (no Bayeux
        # reply), then it handshakes again over long-polling, all well inside the deadline.
        assert len(handshakes) == 2, run.describe()
        assert "failure" in handshakes[0]
        assert "error" not in handshakes[0]
        assert elapsed < DEADLINE / 2
    else:
        assert len(handshakes) == 1, run.describe()
    handshake = handshakes[-1]
    assert handshake["successful"] is True
    assert handshake["version"] == "1.0"
    assert handshake["minimumVersion"] == "1.0"
    assert handshake["supportedConnectionTypes"] == ["long-polling"]
    assert re.fullmatch(r"[0-9a-z]{25,}", handshake["clientId"]), handshake
    assert handshake["ext"] == {"replay": True, "payload.format": True}

    [subscribe] = meta(records, "subscribe")
    assert subscribe["successful"] is True
    assert subscribe["subscription"] == channel
    assert subscribe["clientId"] == handshake["clientId"]

    assert replay_ids(records) == [acks[0]["replayId"]]
    assert meta(records, "connect") == []  # no connect failed
    [disconnect] = meta(records, "disconnect")
    assert disconnect["successful"] is True


@pytest.mark.parametrize("version", [API_VERSION, "45.0"])
async def test_replay_all_retained_delivers_every_event_in_order_with_its_uuid(
    node_dir: Path, server: RunningServer, token: str, version: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        acks = await publish_each(client, server.base_url, token, channel, 5, "all")
    async with subscriber(node_dir, server, token, channel, -2, 5, version=version) as run:
        records = await run.finish(WAIT)

    assert run.returncode == 0, run.describe()
    received = events(records)
    assert [m["data"]["event"]["replayId"] for m in received] == [a["replayId"] for a in acks]
    for number, (ack, message) in enumerate(zip(acks, received, strict=True)):
        assert set(message) == {"channel", "data"}  # no `successful` on delivered events
        assert message["channel"] == channel
        data = message["data"]
        assert set(data) == {"schema", "payload", "event"}
        assert data["payload"] == {
            "tag": "all",
            "n": number,
            "CreatedDate": ack["createdDate"],
            "CreatedById": CLIENT_ID,
        }
        if version == API_VERSION:
            assert data["event"] == {"replayId": ack["replayId"], "EventUuid": ack["uuid"]}
        else:  # EventUuid only from API version 52.0 on
            assert data["event"] == {"replayId": ack["replayId"]}


async def test_new_events_only_skips_what_was_published_before(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        await publish_each(client, server.base_url, token, channel, 3, "old")
        async with subscriber(node_dir, server, token, channel, -1, 3) as run:
            await subscribed(run)
            new = await publish_batches(
                client, server.base_url, token, channel, 3, batch_size=3, publishers=1
            )
            records = await run.finish(WAIT)

    assert run.returncode == 0, run.describe()
    assert replay_ids(records) == [ack["replayId"] for ack in new]


async def test_replay_from_a_replay_id_delivers_exactly_the_later_events(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        acks = await publish_each(client, server.base_url, token, channel, 8, "n")
        after = acks[2]["replayId"]
        async with subscriber(node_dir, server, token, channel, after, 6) as run:
            await subscribed(run)
            live = await publish_each(client, server.base_url, token, channel, 1, "live")
            records = await run.finish(WAIT)

    assert run.returncode == 0, run.describe()
    # The five retained events after N (never N itself), then the live one: nothing between.
    assert replay_ids(records) == [ack["replayId"] for ack in [*acks[3:], *live]]


async def test_events_arrive_in_replay_id_order_while_publishers_race(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    channel = channel_name()
    total = 400
    async with (
        httpx.AsyncClient(timeout=30) as client,
        subscriber(node_dir, server, token, channel, -1, total) as run,
    ):
        await subscribed(run)
        acks = await publish_batches(
            client, server.base_url, token, channel, total, batch_size=20, publishers=4
        )
        records = await run.finish(WAIT)

    assert run.returncode == 0, run.describe()
    assert replay_ids(records) == [ack["replayId"] for ack in acks]


async def test_a_new_client_resuming_from_the_last_replay_id_gets_exactly_the_rest(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    channel = channel_name()
    total, cut = 300, 120
    async with httpx.AsyncClient(timeout=30) as client:
        async with subscriber(node_dir, server, token, channel, -2, cut) as first:
            await subscribed(first)
            # Publishing goes on while the first client reads, stops after `cut` events and
            # disconnects (events it was sent but did not process are not counted as seen).
            acks = await publish_batches(
                client, server.base_url, token, channel, total, batch_size=10, publishers=3
            )
            first_records = await first.finish(WAIT)
        assert first.returncode == 0, first.describe()
        seen = replay_ids(first_records)
        assert len(seen) == cut
        [disconnect] = meta(first_records, "disconnect")
        assert disconnect["successful"] is True

        async with subscriber(node_dir, server, token, channel, seen[-1], total - cut) as second:
            second_records = await second.finish(WAIT)

    assert second.returncode == 0, second.describe()
    published = [ack["replayId"] for ack in acks]
    assert seen + replay_ids(second_records) == published  # nothing lost, no duplicates


@pytest.mark.parametrize("retained", [2, 0], ids=["past-the-top", "empty-channel"])
async def test_an_invalid_replay_id_is_refused_with_the_salesforce_text(
    node_dir: Path, server: RunningServer, token: str, retained: int
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient(timeout=30) as client:
        acks = await publish_each(client, server.base_url, token, channel, retained, "x")
    latest = acks[-1]["replayId"] if acks else 1_700_000_000_000_000
    bogus = bogus_replay_id(latest)
    async with subscriber(node_dir, server, token, channel, bogus, 1) as run:
        records = await run.finish(WAIT)

    assert run.returncode == 4, run.describe()
    assert done(records)["reason"] == "subscribe-failed"
    [subscribe] = meta(records, "subscribe")
    assert subscribe["successful"] is False
    assert subscribe["error"] == invalid_replay_id_error(bogus)
    assert subscribe["error"].startswith("400::The replayId {")
    assert subscribe["subscription"] == channel
    assert isinstance(subscribe["clientId"], str)
    assert events(records) == []


async def test_an_invalid_token_is_refused_at_handshake(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with subscriber(node_dir, server, tampered(token), channel, -1, 1) as run:
        records = await run.finish(WAIT)

    assert run.returncode == 3, run.describe()
    assert done(records)["reason"] == "handshake-denied"
    [handshake] = meta(records, "handshake")
    assert handshake["successful"] is False
    assert handshake["error"] == "403::Handshake denied"
    assert handshake["ext"]["sfdc"] == {"failureReason": "401::Authentication invalid"}
    assert handshake["advice"] == {"reconnect": "none"}
    assert "clientId" not in handshake
    assert meta(records, "subscribe") == []


async def test_a_session_that_fell_out_of_retention_ends_and_the_resubscribe_falls_back(
    node_dir: Path, server: RunningServer, token: str
) -> None:
    """The channel keeps 3 events. The client has processed `seen` when its next connect is
    held at a gate while 4 more events are published, evicting `seen`. That connect ends the
    session with the replay error and `reconnect: none`; the application handshakes again,
    its `/meta/handshake` listener subscribes from `seen` (the replay extension's last
    ReplayId), the subscribe callback gets the same error, and the application falls back
    to -2: it gets exactly the retained events, nothing twice."""
    channel = channel_name()

    def delivered(ack: dict[str, Any]) -> Callable[[Record], bool]:
        def matches(record: Record) -> bool:
            return bool(
                record["type"] == "event"
                and record["message"]["data"]["event"]["replayId"] == ack["replayId"]
            )

        return matches

    with request_gate(port_of(server)) as gate:
        async with httpx.AsyncClient(timeout=30) as http:
            await keep_newest(http, server.base_url, token, channel, 3)
            [first] = await publish_each(http, server.base_url, token, channel, 1, "first")
            async with subscriber(
                node_dir,
                server,
                token,
                channel,
                -2,
                5,
                url=gate.url,
                fallback=-2,
                rehandshake=True,
            ) as run:
                await run.wait_for(delivered(first), WAIT)
                await server.wait_for_held_connects(1)
                gate.hold()
                # The held connect delivers `seen`; the client's next connect waits at the gate.
                [seen] = await publish_each(http, server.base_url, token, channel, 1, "seen")
                await run.wait_for(delivered(seen), WAIT)
                later = await publish_each(http, server.base_url, token, channel, 4, "later")
                gate.release()
                records = await run.finish(WAIT)

    assert run.returncode == 0, run.describe()
    assert replay_ids(records) == [ack["replayId"] for ack in [first, seen, *later[1:]]]
    [ended] = meta(records, "connect")
    assert ended["successful"] is False
    assert ended["error"] == invalid_replay_id_error(seen["replayId"])
    assert ended["advice"] == {"reconnect": "none", "interval": 0}
    assert [gap["requested"] for gap in ended["ext"]["replaybus"]["gaps"]] == [seen["replayId"]]
    first_handshake, second_handshake = meta(records, "handshake")
    assert second_handshake["clientId"] != first_handshake["clientId"]
    subscribed, refused, fell_back = meta(records, "subscribe")
    assert subscribed["successful"] is True
    assert refused["successful"] is False
    assert refused["error"] == invalid_replay_id_error(seen["replayId"])
    assert fell_back["successful"] is True
    assert fell_back["clientId"] == second_handshake["clientId"]
