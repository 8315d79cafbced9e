"""How an SSE stream writes: live events handed over by the fan-out arrive in order with their
ids, everything published at once in one write; a write that must wait for the socket holds
back what follows, which then arrives in order; and a client that goes away mid-stream frees
its lease, its place in the caps and its live subscription, as does one gone before its stream
began or while a write waited for the socket, with no event to wake the stream; a node that
drains ends a stream busy writing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import orjson

from api.services import Services
from tests.api._support import Node, bearer, running_node, stream_scope

ORDER = "/event/Order__e"
ALL = ["publish", "subscribe"]
WAIT_S = 10.0


class Subscriber:
    """One stream on the ASGI app, as a server would drive it: every body the app sends is
    kept as one write. A write can be made to wait (as for a full socket) with `hold_next`."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.status = 0
        self.gone = asyncio.Event()
        self._changed = asyncio.Event()
        self._gate: asyncio.Event | None = None
        self._requested = False
        self._bodies = 0  # body writes begun
        self._hold: tuple[int, asyncio.Event, asyncio.Event] | None = None

    async def receive(self) -> MutableMapping[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        else:
            index, self._bodies = self._bodies, self._bodies + 1
            if self._hold is not None and self._hold[0] == index:
                _, reached, release = self._hold
                self._hold = None
                reached.set()
                await release.wait()
            gate, self._gate = self._gate, None
            if gate is not None:
                await gate.wait()
            self.writes.append(message.get("body", b""))
        self._changed.set()

    def hold_next(self) -> asyncio.Event:
        """The next write waits until the returned event is set."""
        self._gate = asyncio.Event()
        return self._gate

    def hold_write(self, index: int) -> tuple[asyncio.Event, asyncio.Event]:
        """Body write number `index` (0: the opening) waits until the second event returned
        is set; the first is set once it waits."""
        reached, release = asyncio.Event(), asyncio.Event()
        self._hold = (index, reached, release)
        return reached, release

    def events(self) -> list[tuple[int, int]]:
        """(`id:`, the envelope's replayId) of every event written so far, in order."""
        found = []
        for block in b"".join(self.writes).split(b"\n\n"):
            fields = dict(line.split(b": ", 1) for line in block.split(b"\n") if b": " in line)
            if b"data" in fields:
                found.append((int(fields[b"id"]), orjson.loads(fields[b"data"])["replayId"]))
        return found

    async def until(self, events: int) -> None:
        async with asyncio.timeout(WAIT_S):
            while len(self.events()) < events:
                self._changed.clear()
                await self._changed.wait()


@asynccontextmanager
async def subscribed(node: Node, token: str, channel: str) -> AsyncIterator[Subscriber]:
    subscriber = Subscriber()
    scope = stream_scope(channel, token)
    handling = asyncio.create_task(node.app(scope, subscriber.receive, subscriber.send))
    try:
        async with asyncio.timeout(WAIT_S):
            while not subscriber.writes:  # the opening (retry hint and position) is written
                subscriber._changed.clear()
                await subscriber._changed.wait()
        assert subscriber.status == 200
        yield subscriber
    finally:
        subscriber.gone.set()
        async with asyncio.timeout(WAIT_S):
            await handling


async def publish(node: Node, token: str, count: int) -> list[int]:
    """`count` events in one request: the ReplayIds."""
    response = await node.http.post(
        "/v1/events" + ORDER, json=[{"n": n} for n in range(count)], headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    return [ack["replayId"] for ack in response.json()]


def services(node: Node) -> Services:
    found: Services = node.app.state.services
    return found


async def test_events_published_at_once_arrive_in_one_write_in_order_with_their_ids() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        async with subscribed(node, token, ORDER) as subscriber:
            first = await publish(node, token, 1)
            await subscriber.until(1)
            writes = len(subscriber.writes)

            batch = await publish(node, token, 5)
            await subscriber.until(6)

            assert subscriber.events() == [(i, i) for i in first + batch]
            assert len(subscriber.writes) == writes + 1  # the five in one write


async def test_events_behind_a_write_that_waits_for_the_socket_follow_it_in_order() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        async with subscribed(node, token, ORDER) as subscriber:
            socket_drained = subscriber.hold_next()
            held_back = await publish(node, token, 1)
            behind = await publish(node, token, 2) + await publish(node, token, 3)
            assert subscriber.events() == []  # the first write still waits

            socket_drained.set()
            await subscriber.until(6)

            assert subscriber.events() == [(i, i) for i in held_back + behind]


async def test_a_client_that_goes_away_mid_stream_frees_its_lease_and_subscription() -> None:
    async with running_node(sse_max_streams_per_client=1) as node:
        await node.create_tenant("acme", {"maxSubscribers": 1})
        token = await node.client_token("acme", ALL)
        hub = services(node).hub
        async with subscribed(node, token, ORDER) as subscriber:
            await publish(node, token, 2)
            await subscriber.until(2)
            assert hub.subscriber_count == 1
            assert await node.stream_status(token, ORDER) == (429, "too_many_subscribers")
        # `subscribed` left once the app's handling of the stream ended.
        assert hub.subscriber_count == 0
        async with subscribed(node, token, ORDER) as again:  # its places are free again
            replay_ids = await publish(node, token, 1)
            await again.until(1)
            assert again.events() == [(replay_ids[0], replay_ids[0])]


async def assert_stream_freed(node: Node, token: str) -> None:
    """Its live subscription and its place among the client's streams are free again."""
    assert services(node).hub.subscriber_count == 0
    assert await node.stream_status(token, ORDER) == (200, "")


def replaying(token: str) -> dict[str, Any]:
    scope = stream_scope(ORDER, token)
    scope["query_string"] = b"replayId=-2"  # every retained event, then live
    return scope


async def test_a_client_gone_before_its_stream_began_ends_it_with_no_event_to_wake_it() -> None:
    async with running_node(sse_max_streams_per_client=1) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        subscriber = Subscriber()
        subscriber.gone.set()  # the disconnect is there as soon as the stream looks

        handling = asyncio.create_task(
            node.app(stream_scope(ORDER, token), subscriber.receive, subscriber.send)
        )
        async with asyncio.timeout(WAIT_S):
            await handling  # no event is published on the channel

        assert subscriber.status == 200
        await assert_stream_freed(node, token)


async def test_a_client_gone_while_a_write_waits_for_the_socket_ends_its_stream() -> None:
    async with running_node(sse_max_streams_per_client=1) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        await publish(node, token, 3)
        subscriber = Subscriber()
        waiting, socket_drained = subscriber.hold_write(1)  # the history, after the opening
        handling = asyncio.create_task(
            node.app(replaying(token), subscriber.receive, subscriber.send)
        )
        async with asyncio.timeout(WAIT_S):
            await waiting.wait()

        # The disconnect is seen first (callbacks run in order), then the write completes.
        subscriber.gone.set()
        socket_drained.set()
        async with asyncio.timeout(WAIT_S):
            await handling

        assert len(subscriber.events()) == 3
        await assert_stream_freed(node, token)


class TickSeen:
    """A member of the node's Ticker: set once a round of ticks has reached every stream."""

    def __init__(self) -> None:
        self.ticked = asyncio.Event()

    def tick(self, now: float) -> None:
        self.ticked.set()


async def test_a_draining_node_ends_a_stream_that_was_busy_writing() -> None:
    async with running_node(sse_max_streams_per_client=1) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        await publish(node, token, 3)
        subscriber = Subscriber()
        waiting, socket_drained = subscriber.hold_write(1)
        handling = asyncio.create_task(
            node.app(replaying(token), subscriber.receive, subscriber.send)
        )
        async with asyncio.timeout(WAIT_S):
            await waiting.wait()

        seen = TickSeen()
        services(node).ticker.add(seen)
        services(node).lifecycle.draining.set()
        async with asyncio.timeout(WAIT_S):
            await seen.ticked.wait()  # the stream was told to end while it wrote
        socket_drained.set()
        async with asyncio.timeout(WAIT_S):
            await handling

        assert len(subscriber.events()) == 3
        assert subscriber.writes[-1].startswith(b"retry: ")  # told when to come back
        assert services(node).hub.subscriber_count == 0
