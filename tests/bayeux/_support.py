"""A scripted Bayeux client that drives `BayeuxServer.process` the way a long-polling client
would, reading its replies as they would arrive on the wire (through `encode_replies`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson

from app.access import Principal
from app.bayeux.codec import Message, encode_replies
from app.bayeux.server import BayeuxServer, Credentials
from app.catalog import Tenant
from app.model import ChannelKey, HistoryPage, Published
from app.publishing import PublishService
from storage.memory import MemoryEngine

__all__ = [
    "WAIT_S",
    "Background",
    "BayeuxClient",
    "CountingEngine",
    "Publisher",
    "connect_reply",
    "event_ids",
    "events",
    "hold",
    "wait_until",
    "within",
]

T = TypeVar("T")

WAIT_S = 5.0
"""Bound on anything that must happen promptly; far below every hold timeout used with it."""


def events(replies: list[Message]) -> list[Message]:
    """The delivered event messages of a reply array (everything not on `/meta/`)."""
    return [r for r in replies if not str(r.get("channel", "")).startswith("/meta/")]


def event_ids(replies: list[Message]) -> list[int]:
    return [r["data"]["event"]["replayId"] for r in events(replies)]


def connect_reply(replies: list[Message]) -> Message:
    """The `/meta/connect` reply, which must close the array."""
    assert replies, "empty reply array"
    last = replies[-1]
    assert last["channel"] == "/meta/connect", replies
    assert [r for r in replies if r.get("channel") == "/meta/connect"] == [last], replies
    return last


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Yield to the event loop until `condition()` holds (fails after WAIT_S)."""
    try:
        async with asyncio.timeout(WAIT_S):
            # The server exposes counters, not events: yield one loop turn at a time, so the
            # condition is seen as soon as the task that makes it true has run.
            while not condition():  # noqa: ASYNC110
                await asyncio.sleep(0)
    except TimeoutError:
        raise AssertionError(f"timed out waiting until {what}") from None


async def within(awaitable: Awaitable[T], seconds: float = WAIT_S) -> T:
    """`awaitable`'s result, failing if it takes longer than `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise AssertionError(f"not answered within {seconds} s") from None


class Background:
    """Tasks a test starts (held connects); whatever is still running at teardown is
    cancelled and awaited."""

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self, coroutine: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coroutine)
        self._tasks.append(task)
        return task

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class BayeuxClient:
    def __init__(
        self,
        server: BayeuxServer,
        principal: Principal | None,
        version: str | None = "58.0",
    ) -> None:
        self.server = server
        self.credentials = Credentials(presented=True, principal=principal)
        self.version = version
        self.client_id: str | None = None
        self._ids = itertools.count(1)

    def next_id(self) -> str:
        return str(next(self._ids))

    async def send(
        self, *messages: Message, credentials: Credentials | None = None
    ) -> list[Message]:
        """One HTTP request: the decoded reply array."""
        replies = await self.server.process(
            list(messages),
            credentials if credentials is not None else self.credentials,
            self.version,
        )
        decoded: list[Message] = orjson.loads(encode_replies(replies))
        return decoded

    def handshake_message(self, ext: dict[str, Any] | None = None) -> Message:
        message: Message = {
            "channel": "/meta/handshake",
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "id": self.next_id(),
        }
        if ext is not None:
            message["ext"] = ext
        return message

    async def handshake(self, ext: dict[str, Any] | None = None) -> Message:
        [reply] = await self.send(self.handshake_message(ext))
        assert reply["successful"] is True, reply
        self.client_id = reply["clientId"]
        return reply

    def connect_message(self, *, timeout: int | None = None, ack: int | None = None) -> Message:
        message: Message = {
            "channel": "/meta/connect",
            "clientId": self.client_id,
            "connectionType": "long-polling",
            "id": self.next_id(),
        }
        if timeout is not None:
            message["advice"] = {"timeout": timeout}
        if ack is not None:
            message["ext"] = {"ack": ack}
        return message

    async def connect(self, *, timeout: int | None = None, ack: int | None = None) -> list[Message]:
        return await self.send(self.connect_message(timeout=timeout, ack=ack))

    async def poll(self, *, ack: int | None = None) -> list[Message]:
        """A connect that must not be held (`advice.timeout: 0`), answered at once."""
        return await within(self.connect(timeout=0, ack=ack))

    def subscribe_message(self, subscription: Any, replay: dict[str, Any] | None = None) -> Message:
        message: Message = {
            "channel": "/meta/subscribe",
            "clientId": self.client_id,
            "subscription": subscription,
            "id": self.next_id(),
        }
        if replay is not None:
            message["ext"] = {"replay": replay}
        return message

    async def subscribe(self, subscription: Any, replay: dict[str, Any] | None = None) -> Message:
        [reply] = await self.send(self.subscribe_message(subscription, replay))
        return reply

    async def unsubscribe(self, subscription: Any) -> Message:
        [reply] = await self.send(
            {
                "channel": "/meta/unsubscribe",
                "clientId": self.client_id,
                "subscription": subscription,
                "id": self.next_id(),
            }
        )
        return reply

    async def disconnect(self) -> Message:
        [reply] = await self.send(
            {"channel": "/meta/disconnect", "clientId": self.client_id, "id": self.next_id()}
        )
        return reply

    async def start(self, *subscriptions: str, ext: dict[str, Any] | None = None) -> None:
        """Handshake, subscribe (new events only) and make the first connect, so the next
        connect is one the server may hold."""
        await self.handshake(ext)
        for subscription in subscriptions:
            reply = await self.subscribe(subscription)
            assert reply["successful"] is True, reply
        first = await within(self.connect())
        assert connect_reply(first)["successful"] is True, first


class Publisher:
    """Publishes through the real publishing service, as the REST API does."""

    def __init__(self, service: PublishService, principal: Principal) -> None:
        self._service = service
        self._principal = principal

    async def __call__(self, channel: str, *payloads: dict[str, Any]) -> list[Published]:
        tenant = Tenant(self._principal.tenant)
        payload_list = list(payloads) or [{"n": 0}]
        return await self._service.publish(self._principal, tenant, channel, payload_list)

    async def one(self, channel: str, **payload: Any) -> int:
        [published] = await self(channel, payload or {"n": 0})
        return published.replay_id


async def hold(
    client: BayeuxClient, background: Background, **kwargs: Any
) -> asyncio.Task[list[Message]]:
    """Send a connect that the server holds, and return once it is held."""
    before = client.server.held_connects
    task = background.start(client.connect(**kwargs))
    await wait_until(
        lambda: client.server.held_connects == before + 1 or task.done(), "the connect is held"
    )
    assert not task.done(), f"the connect was answered at once: {task.result()}"
    return task


class CountingEngine(MemoryEngine):
    """The memory engine, counting history reads and the events they returned, and loads
    and counts of a tenant's channel names."""

    reads = 0
    events_read = 0
    name_loads = 0
    name_counts = 0

    async def read(
        self, key: ChannelKey, after: int, limit: int, max_bytes: int | None = None
    ) -> HistoryPage:
        page = await super().read(key, after, limit, max_bytes)
        self.reads += 1
        self.events_read += len(page.events)
        return page

    async def channel_names(self, tenant: str) -> list[str]:
        self.name_loads += 1
        return await super().channel_names(tenant)

    async def channel_count(self, tenant: str) -> int:
        self.name_counts += 1
        return await super().channel_count(tenant)
