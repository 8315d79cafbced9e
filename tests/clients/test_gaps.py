"""One typed `Gap` on every transport of `replaybus_client.Subscriber`, against a real server.

The `small_window` server keeps the newest WINDOW events of each channel. A subscriber that is
away (the caller busy with an event, a stream cut) while more than that is published must be
told, with the same `Gap` whatever the transport, before any event after it; and its saved
position must not move past the gap unless the gap was handed to the caller.

Over Bayeux the gap reaches the client either in the connect reply (`ext.replaybus.gaps`) or,
when the server ends the session instead, as the `400::` replay error of the resubscribe; the
client turns either into the same `Gap`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

import pytest
from replaybus_client import (
    ALL_RETAINED,
    NEW_ONLY,
    ClientCredentials,
    Event,
    Gap,
    GapError,
    MemoryCheckpoints,
    Subscriber,
)
from replaybus_client.checkpoints import CheckpointStore
from replaybus_client.subscriber import GapHandler

from tests.clients.conftest import WINDOW
from tests.clients.support import (
    DEADLINE,
    close_iterator,
    history,
    port_of,
    publish_direct,
    take,
)
from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name
from tests.harness.tcp_proxy import TcpProxy, tcp_proxy

Transport = Literal["sse", "bayeux", "history"]
POLL_INTERVAL = 0.05  # seconds between history pulls once caught up


@pytest.fixture(params=["sse", "bayeux", "history"])
def transport(request: pytest.FixtureRequest) -> Transport:
    chosen: Transport = request.param
    return chosen


def _subscriber(
    server: RunningServer,
    channel: str,
    transport: Transport,
    *,
    url: str | None = None,
    start: int = ALL_RETAINED,
    checkpoints: CheckpointStore | None = None,
    on_gap: GapHandler | None = None,
) -> Subscriber:
    return Subscriber(
        url or server.base_url,
        channel,
        ClientCredentials(server.base_url, server.client_id, server.client_secret),
        transport=transport,
        start=start,
        checkpoints=checkpoints,
        on_gap=on_gap,
        poll_interval=POLL_INTERVAL,
    )


@asynccontextmanager
async def _iterating(subscriber: Subscriber) -> AsyncIterator[AsyncIterator[Event]]:
    events = aiter(subscriber)
    try:
        yield events
    finally:
        await close_iterator(events)
        await subscriber.aclose()


def _publish(server: RunningServer, channel: str, first: int, count: int) -> list[int]:
    acks = publish_direct(server, channel, [{"n": n} for n in range(first, first + count)])
    return [int(ack["replayId"]) for ack in acks]


def _without_reason(gap: Gap) -> Gap:
    """The server may explain a gap (Bayeux: its replay error); the tests compare the rest."""
    return dataclasses.replace(gap, reason=None)


def _seen(log: list[Gap | Event]) -> list[Gap | int]:
    """What the caller was handed, in order: gaps, and events by ReplayId."""
    return [_without_reason(item) if isinstance(item, Gap) else item.replay_id for item in log]


def _away(transport: Transport, proxy: TcpProxy) -> None:
    """The subscriber stops reading while the caller holds an event. Bayeux and history read
    nothing meanwhile; a stream would go on reading, so its connection is cut (and
    reconnections refused until `proxy.restore()`)."""
    if transport == "sse":
        proxy.cut()


async def test_a_gap_while_away_is_reported_before_the_next_event(
    small_window: RunningServer, transport: Transport
) -> None:
    """Over Bayeux this is a live session whose position fell out of the window between two
    connects."""
    channel = channel_name()
    [first] = _publish(small_window, channel, 0, 1)
    log: list[Gap | Event] = []
    with tcp_proxy(port_of(small_window)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        subscriber = _subscriber(small_window, channel, transport, url=url, on_gap=log.append)
        async with _iterating(subscriber) as events:
            assert [event.replay_id for event in await take(events, 1)] == [first]
            _away(transport, proxy)
            later = _publish(small_window, channel, 1, 2 * WINDOW)
            proxy.restore()
            log += await take(events, WINDOW)
    assert [event["replayId"] for event in history(small_window, channel)] == later[-WINDOW:]
    assert _seen(log) == [
        Gap(requested=first, earliest=later[-WINDOW], latest=later[-1], channel=channel),
        *later[-WINDOW:],
    ]


async def test_a_checkpoint_below_the_window_reports_the_gap_then_the_retained_events(
    small_window: RunningServer, transport: Transport
) -> None:
    """A restarted consumer whose saved position fell out of the window (over Bayeux: its
    resubscribe is refused with the `400::` replay error, which the client reports)."""
    channel = channel_name()
    published = _publish(small_window, channel, 0, 2 * WINDOW)
    checkpoints = MemoryCheckpoints()
    await checkpoints.save(channel, published[0])
    log: list[Gap | Event] = []
    subscriber = _subscriber(
        small_window, channel, transport, checkpoints=checkpoints, on_gap=log.append
    )
    async with _iterating(subscriber) as events:
        log += await take(events, WINDOW)
    assert _seen(log) == [
        Gap(
            requested=published[0],
            earliest=published[-WINDOW],
            latest=published[-1],
            channel=channel,
        ),
        *published[-WINDOW:],
    ]
    if transport == "bayeux":
        reported = log[0]
        assert isinstance(reported, Gap)
        assert str(reported.reason).startswith(f"400::The replayId {{{published[0]}}} ")


async def test_without_on_gap_the_saved_position_stays_before_the_gap(
    small_window: RunningServer, transport: Transport
) -> None:
    """GapError ends the subscription with the checkpoint still before the gap, so a restart
    with the same checkpoints reports the same gap again rather than going on silently."""
    channel = channel_name()
    [first] = _publish(small_window, channel, 0, 1)
    checkpoints = MemoryCheckpoints()
    with tcp_proxy(port_of(small_window)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        subscriber = _subscriber(small_window, channel, transport, url=url, checkpoints=checkpoints)
        async with _iterating(subscriber) as events:
            await take(events, 1)
            _away(transport, proxy)
            later = _publish(small_window, channel, 1, 2 * WINDOW)
            proxy.restore()
            with pytest.raises(GapError) as raised:
                await take(events, 1)
    gap = Gap(requested=first, earliest=later[-WINDOW], latest=later[-1], channel=channel)
    assert _without_reason(raised.value.gap) == gap
    assert await checkpoints.load(channel) == first

    gaps: list[Gap] = []
    again = _subscriber(
        small_window, channel, transport, checkpoints=checkpoints, on_gap=gaps.append
    )
    async with _iterating(again) as events:
        resumed = await take(events, WINDOW)
    assert [_without_reason(reported) for reported in gaps] == [gap]
    assert [event.replay_id for event in resumed] == later[-WINDOW:]


async def test_a_wildcard_stream_reconnected_reports_a_gap_naming_its_pattern(
    small_window: RunningServer,
) -> None:
    """Wildcard streams are live-only: after a reconnect the server says events may have been
    missed; the Gap names the subscribed pattern and comes before the next event."""
    prefix = f"/event/W{uuid.uuid4().hex[:12]}"
    pattern, channel = prefix + "/*", prefix + "/Orders__e"
    log: list[Gap | Event] = []
    with tcp_proxy(port_of(small_window)) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        subscriber = _subscriber(
            small_window, pattern, "sse", url=url, start=NEW_ONLY, on_gap=log.append
        )
        async with _iterating(subscriber) as events:
            log.append(await _next_while_publishing(small_window, channel, events))
            proxy.cut()
            proxy.restore()
            log.append(await _next_while_publishing(small_window, channel, events))
    assert [type(item) for item in log] == [Event, Gap, Event]
    gap = log[1]
    assert isinstance(gap, Gap)
    assert (gap.requested, gap.earliest, gap.latest) == (None, None, None)
    assert (gap.channel, gap.channels) == (None, pattern)
    assert gap.reason


async def _next_while_publishing(
    server: RunningServer, channel: str, events: AsyncIterator[Event]
) -> Event:
    """The next event, publishing to `channel` until one arrives (a live-only stream delivers
    only what is published once it is in place)."""
    pending = asyncio.ensure_future(anext(events))
    async with asyncio.timeout(DEADLINE):
        while not pending.done():
            _publish(server, channel, 0, 1)
            await asyncio.wait([pending], timeout=0.1)
    return pending.result()
