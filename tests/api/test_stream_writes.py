"""How an SSE stream writes: live events handed over by the fan-out arrive in order with their
ids, everything published at once in one write; a write that must wait for the socket holds
back what follows, which then arrives in order; and a client that goes away mid-stream frees
its lease, its place in the caps and its live subscription."""

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
            gate, self._gate = self._gate, None
            if gate is not None:
                await gate.wait()
            self.writes.append(message.get("body", b""))
        self._changed.set()

    def hold_next(self) -> asyncio.Event:
        """The next write waits until the returned event is set."""
        self._gate = asyncio.Event()
        return self._gate

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
