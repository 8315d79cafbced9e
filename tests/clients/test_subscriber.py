"""`replaybus_client.Subscriber` over SSE and over Bayeux, against a real server.

Events are published with plain httpx (not the client under test) and every expectation is
checked against what the server stored. Waits are bounded (`take` fails after a deadline).

An event counts as processed when the caller asks for the next one: only then does the
subscriber save its ReplayId (its position, and the checkpoint). Tests that stop part-way rely
on that and say so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal

import httpx
import pytest
from replaybus_client import (
    ALL_RETAINED,
    NEW_ONLY,
    ClientCredentials,
    Event,
    FileCheckpoints,
    Gap,
    GapError,
    MemoryCheckpoints,
    RequestFailed,
    StaticToken,
    Subscriber,
)

from tests.clients.conftest import WINDOW
from tests.clients.support import (
    DEADLINE,
    close_iterator,
    history,
    port_of,
    publish_direct,
    take,
)
from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import channel_name
from tests.harness.tcp_proxy import tcp_proxy

Transport = Literal["sse", "bayeux"]


@pytest.fixture(params=["sse", "bayeux"])
def transport(request: pytest.FixtureRequest) -> Transport:
    chosen: Transport = request.param
    return chosen


def _credentials(server: RunningServer) -> ClientCredentials:
    return ClientCredentials(server.base_url, server.client_id, server.client_secret)


@asynccontextmanager
async def _iterating(subscriber: Subscriber) -> AsyncIterator[AsyncIterator[Event]]:
    """The subscriber's events; its stream and HTTP client are closed on the way out."""
    events = aiter(subscriber)
    try:
        yield events
    finally:
        await close_iterator(events)
        await subscriber.aclose()


def _ids(events: list[Event]) -> list[int]:
    return [event.replay_id for event in events]


def _publish(server: RunningServer, channel: str, first: int, count: int) -> list[int]:
    acks = publish_direct(server, channel, [{"n": n} for n in range(first, first + count)])
    return [int(ack["replayId"]) for ack in acks]


async def test_start_minus_two_delivers_every_retained_event_in_order(
    server: RunningServer, transport: Transport
) -> None:
    channel = channel_name()
    published = _publish(server, channel, 0, 5)
    subscriber = Subscriber(
        server.base_url, channel, _credentials(server), transport=transport, start=ALL_RETAINED
    )
    async with _iterating(subscriber) as events:
        received = await take(events, 5)
    assert _ids(received) == published
    assert [event.payload["n"] for event in received] == list(range(5))
    stored = history(server, channel)
    assert [event.uuid for event in received] == [e["uuid"] for e in stored]
    assert all(event.channel == channel for event in received)


async def test_start_at_a_replay_id_resumes_after_it(
    server: RunningServer, transport: Transport
) -> None:
    channel = channel_name()
    published = _publish(server, channel, 0, 5)
    subscriber = Subscriber(
        server.base_url, channel, _credentials(server), transport=transport, start=published[1]
    )
    async with _iterating(subscriber) as events:
        received = await take(events, 3)
    assert _ids(received) == published[2:]
    assert [event.payload["n"] for event in received] == [2, 3, 4]


async def test_events_published_after_subscribing_arrive(
    server: RunningServer, transport: Transport
) -> None:
    """After the retained events, the subscription stays open and delivers new ones."""
    channel = channel_name()
    before = _publish(server, channel, 0, 2)
    subscriber = Subscriber(
        server.base_url, channel, _credentials(server), transport=transport, start=ALL_RETAINED
    )
    async with _iterating(subscriber) as events:
        assert _ids(await take(events, 2)) == before
        pending = asyncio.ensure_future(take(events, 3))
        after = _publish(server, channel, 2, 3)
        received = await pending
    assert _ids(received) == after
    assert subscriber.reconnects == 0


async def test_new_only_skips_what_was_published_before(
    server: RunningServer, transport: Transport
) -> None:
    """start=-1: nothing retained is delivered. Probes are published until one arrives (the
    subscription is then in place); everything published after that one arrives, in order."""
    channel = channel_name()
    before = _publish(server, channel, 0, 3)
    subscriber = Subscriber(
        server.base_url, channel, _credentials(server), transport=transport, start=NEW_ONLY
    )
    async with _iterating(subscriber) as events:
        first = asyncio.ensure_future(anext(events))
        probes: list[int] = []
        async with asyncio.timeout(DEADLINE):
            while not first.done():
                probes += _publish(server, channel, 100 + len(probes), 1)
                await asyncio.wait([first], timeout=0.1)
        arrived = first.result()
        pending = asyncio.ensure_future(take(events, 3))
        after = _publish(server, channel, 200, 3)
        received = [arrived, *await pending]
    assert arrived.replay_id in probes
    assert arrived.replay_id not in before
    assert _ids(received) == [*probes[probes.index(arrived.replay_id) :], *after]


async def test_a_cut_connection_reconnects_and_delivers_every_event_once_in_order(
    server: RunningServer, transport: Transport
) -> None:
    """The subscriber reaches the server through a TCP proxy. Half-way, while it waits for the
    next event (an open stream, or a held long poll), every proxied connection is cut; it must
    reconnect by itself from the last event it processed."""
    channel = channel_name()
    first = _publish(server, channel, 0, 5)
    with tcp_proxy(port_of(server)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        subscriber = Subscriber(
            url, channel, _credentials(server), transport=transport, start=ALL_RETAINED
        )
        async with _iterating(subscriber) as events:
            received = await take(events, 5)
            pending = asyncio.ensure_future(take(events, 10))
            # Cut until the subscriber notices (its request may not have been sent yet).
            async with asyncio.timeout(DEADLINE):
                while subscriber.reconnects == 0:
                    proxy.cut()
                    proxy.restore()
                    await asyncio.wait([pending], timeout=0.05)
            second = _publish(server, channel, 5, 5)
            third = _publish(server, channel, 10, 5)
            received += await pending
    assert _ids(received) == first + second + third
    assert [event.payload["n"] for event in received] == list(range(15))


async def test_file_checkpoints_resume_after_the_last_processed_event(
    server: RunningServer, transport: Transport, tmp_path: Path
) -> None:
    """The first consumer processes 3 of 6 events. Asking for the 4th is what marks the 3rd
    processed (its ReplayId is saved then), so the loop breaks on receiving the 4th, without
    processing it. A new subscriber with the same file must start exactly at the 4th."""
    channel = channel_name()
    published = _publish(server, channel, 0, 6)
    path = tmp_path / "positions.json"
    processed: list[Event] = []
    first = Subscriber(
        server.base_url,
        channel,
        _credentials(server),
        transport=transport,
        start=ALL_RETAINED,
        checkpoints=FileCheckpoints(path),
    )
    async with _iterating(first) as events, asyncio.timeout(DEADLINE):
        async for event in events:
            if len(processed) == 3:
                break  # the 4th arrived: the 3rd is processed and saved; the 4th is not
            processed.append(event)
    assert _ids(processed) == published[:3]
    assert first.position == published[2]
    assert json.loads(path.read_text()) == {channel: published[2]}

    second = Subscriber(
        server.base_url,
        channel,
        _credentials(server),
        transport=transport,
        start=ALL_RETAINED,  # the saved position wins over it
        checkpoints=FileCheckpoints(path),
    )
    async with _iterating(second) as events:
        resumed = await take(events, 3)
    assert _ids(resumed) == published[3:]
    assert json.loads(path.read_text()) == {channel: published[4]}


def _gapped_channel(server: RunningServer) -> tuple[str, list[int]]:
    """A channel that had 6 events of which the window keeps the newest WINDOW."""
    channel = channel_name()
    published = _publish(server, channel, 0, 3) + _publish(server, channel, 3, 3)
    assert [e["replayId"] for e in history(server, channel)] == published[-WINDOW:]
    return channel, published


async def test_a_checkpoint_older_than_the_window_calls_on_gap_and_goes_on(
    small_window: RunningServer, transport: Transport
) -> None:
    channel, published = _gapped_channel(small_window)
    checkpoints = MemoryCheckpoints()
    await checkpoints.save(channel, published[0])
    gaps: list[Gap] = []
    subscriber = Subscriber(
        small_window.base_url,
        channel,
        _credentials(small_window),
        transport=transport,
        checkpoints=checkpoints,
        on_gap=gaps.append,
    )
    async with _iterating(subscriber) as events:
        received = await take(events, WINDOW)
    assert _ids(received) == published[-WINDOW:]  # from the oldest retained on
    assert len(gaps) == 1
    assert gaps[0].requested == published[0]
    assert (gaps[0].earliest, gaps[0].latest) == (published[-WINDOW], published[-1])


async def test_without_on_gap_a_gap_raises_gap_error(
    small_window: RunningServer, transport: Transport
) -> None:
    channel, published = _gapped_channel(small_window)
    subscriber = Subscriber(
        small_window.base_url,
        channel,
        _credentials(small_window),
        transport=transport,
        start=published[0],
    )
    async with _iterating(subscriber) as events:
        with pytest.raises(GapError) as raised:
            await take(events, 1)
    assert raised.value.gap.requested == published[0]


REFUSAL_DEADLINE = 5.0  # a refusal takes one or two requests; a retrying subscriber never ends


async def _next_unless_retrying_forever(
    subscriber: Subscriber, events: AsyncIterator[Event]
) -> None:
    try:
        await take(events, 1, timeout=REFUSAL_DEADLINE)
    except TimeoutError:
        pytest.fail(
            f"no RequestFailed within {REFUSAL_DEADLINE} s: the subscriber is still "
            f"reconnecting ({subscriber.reconnects} reconnects so far)"
        )


@pytest.mark.parametrize(
    ("token", "channel", "statuses"),
    [
        ("publish-only", channel_name(), {"sse": {403}, "bayeux": {403}}),
        ("full", "/data/Not_An_Event__e", {"sse": {404}, "bayeux": {400}}),
        # A token the server refuses (401) that cannot be replaced: a StaticToken. Refreshing
        # once is fair (as the Publisher does); retrying forever is not.
        ("not-a-token", channel_name(), {"sse": {401}, "bayeux": {401, 403}}),
    ],
    ids=["token-without-subscribe-scope", "channel-outside-event", "refused-static-token"],
)
async def test_a_permanent_refusal_raises_request_failed(
    server: RunningServer,
    transport: Transport,
    token: str,
    channel: str,
    statuses: dict[str, set[int]],
) -> None:
    access = {"publish-only": server.token("publish"), "full": server.token()}.get(token, token)
    subscriber = Subscriber(server.base_url, channel, StaticToken(access), transport=transport)
    async with _iterating(subscriber) as events:
        with pytest.raises(RequestFailed) as refused:
            await _next_unless_retrying_forever(subscriber, events)
    assert refused.value.status in statuses[transport]
    assert subscriber.reconnects <= 1


@pytest.fixture
def own_server() -> Iterator[RunningServer]:
    """A server for one test alone, so its /readyz counts are this test's subscriber's."""
    with run_server() as running:
        yield running


async def _subscribed(server: RunningServer, transport: Transport) -> None:
    """Until `server` holds exactly one subscription: an SSE stream, or a held Bayeux connect."""
    if transport == "bayeux":
        await server.wait_for_held_connects(1)
        return
    async with httpx.AsyncClient() as probe, asyncio.timeout(DEADLINE):
        for _ in range(10_000):
            if (await probe.get(server.base_url + "/readyz")).json()["liveSubscribers"] == 1:
                return
            await asyncio.sleep(0.01)  # another process's state: nothing to await but it
    raise AssertionError("the SSE stream was never registered")


async def test_a_cut_before_the_first_event_resumes_from_where_it_subscribed(
    own_server: RunningServer, transport: Transport
) -> None:
    """start=-1, subscribed, and the connection is cut before any event arrived. Event E is
    published while the subscriber cannot reach the server. Reconnecting "from the last event
    processed" means, with none processed yet, from where it had subscribed: E must arrive
    (or at least a Gap be reported), not be skipped silently as if it had started afresh."""
    server = own_server
    channel = channel_name()
    _publish(server, channel, 0, 1)  # before subscribing: never delivered
    gaps: list[Gap] = []
    with tcp_proxy(port_of(server)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        subscriber = Subscriber(
            url, channel, _credentials(server), transport=transport, on_gap=gaps.append
        )
        async with _iterating(subscriber) as events:
            pending = asyncio.ensure_future(anext(events))
            await _subscribed(server, transport)
            proxy.cut()  # and refuse reconnections until restored
            async with asyncio.timeout(DEADLINE):
                while subscriber.reconnects == 0:
                    await asyncio.wait([pending], timeout=0.01)
            [missed] = _publish(server, channel, 1, 1)
            proxy.restore()
            probes: list[int] = []
            async with asyncio.timeout(DEADLINE):
                while not pending.done():  # publish until something arrives
                    probes += _publish(server, channel, 100 + len(probes), 1)
                    await asyncio.wait([pending], timeout=0.1)
            first = pending.result()
    assert (first.replay_id, gaps) == (missed, []), f"probes {probes}"


@pytest.mark.parametrize("transport", ["bayeux", "history"])
def test_a_wildcard_is_refused_on_a_transport_that_follows_one_channel(
    transport: Literal["bayeux", "history"],
) -> None:
    tokens = StaticToken("a-token")
    with pytest.raises(ValueError, match="subscribe to a wildcard over SSE"):
        Subscriber("http://127.0.0.1:1", "/event/*", tokens, transport=transport)
