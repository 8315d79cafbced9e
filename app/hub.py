"""Per-node live fan-out: one engine listener per topic, reference-counted, feeding bounded
mailboxes. The fan-out loop never waits on a subscriber: a full mailbox is marked overflowed and
its subscriber is cut off (it resumes by ReplayId) instead of growing memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from app.delivery import Delivery
from app.engine import LiveSource
from app.model import Event, Topic

__all__ = ["Hub", "Mailbox", "SubscriberOverflow"]


class SubscriberOverflow(Exception):
    """The subscriber fell further behind than its mailbox allows; it must resume by ReplayId."""


class Mailbox:
    """A bounded, single-consumer queue of deliveries."""

    __slots__ = ("_capacity", "_items", "_waiter", "floor", "overflowed")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[Delivery] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.overflowed = False
        #: Per channel, the ReplayId its consumer already has: deliveries at or below it are
        #: dropped on arrival. Live copies of events read from history can arrive late (pub/sub
        #: is asynchronous); they must not take room, let alone overflow the mailbox.
        self.floor: dict[str, int] = {}

    def offer(self, delivery: Delivery) -> None:
        """Never blocks: a full mailbox drops the delivery and marks itself overflowed."""
        if self.overflowed or delivery.replay_id <= self.floor.get(delivery.event.key.name, -1):
            return
        if len(self._items) >= self._capacity:
            self.overflowed = True
        else:
            self._items.append(delivery)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wake(self) -> None:
        """End a wait with nothing delivered (its caller then has nothing to take)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def reset(self) -> None:
        """Forget buffered deliveries and the overflow (the caller re-reads history instead)."""
        self._items.clear()
        self.overflowed = False

    async def wait(self, timeout: float | None) -> None:
        """Return once a delivery (or an overflow) is waiting, or after `timeout` seconds."""
        if self._items or self.overflowed:
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        # A timer that completes the waiter costs less than asyncio.timeout, which cancels
        # and uncancels the task; this runs once per delivery per subscriber.
        timer = None if timeout is None else loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()

    async def take(self, timeout: float | None) -> list[Delivery]:
        """Everything buffered, waiting up to `timeout` seconds for at least one delivery
        (an empty list on timeout). Raises SubscriberOverflow once the buffer is drained after
        an overflow, so the subscriber gets every delivery it had before being cut off."""
        await self.wait(timeout)
        if not self._items:
            if self.overflowed:
                raise SubscriberOverflow
            return []
        items = list(self._items)
        self._items.clear()
        return items


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Feed:
    __slots__ = ("listener", "mailboxes")

    def __init__(self) -> None:
        self.mailboxes: set[Mailbox] = set()
        self.listener = AsyncExitStack()

    def deliver(self, event: Event) -> None:
        delivery = Delivery(event)
        for mailbox in self.mailboxes:
            mailbox.offer(delivery)


class Hub:
    """Owns this node's engine listeners. Use as an async context manager (closes them all)."""

    def __init__(self, engine: LiveSource) -> None:
        self._engine = engine
        self._feeds: dict[Topic, _Feed] = {}
        self._lock = asyncio.Lock()

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.mailboxes) for feed in self._feeds.values())

    @property
    def topic_count(self) -> int:
        return len(self._feeds)

    @asynccontextmanager
    async def subscribe(
        self, topic: Topic, capacity: int, mailbox: Mailbox | None = None
    ) -> AsyncIterator[Mailbox]:
        """A mailbox receiving every event on `topic` from the moment this returns. Pass an
        existing `mailbox` to gather several topics into one (capacity is then its own)."""
        mailbox = mailbox if mailbox is not None else Mailbox(capacity)
        async with self._lock:
            feed = self._feeds.get(topic)
            if feed is None:
                feed = _Feed()
                await feed.listener.enter_async_context(self._engine.listen(topic, feed.deliver))
                self._feeds[topic] = feed
            feed.mailboxes.add(mailbox)
        try:
            yield mailbox
        finally:
            await asyncio.shield(self._release(topic, feed, mailbox))

    async def _release(self, topic: Topic, feed: _Feed, mailbox: Mailbox) -> None:
        feed.mailboxes.discard(mailbox)
        if feed.mailboxes:
            return
        async with self._lock:
            if not feed.mailboxes and self._feeds.get(topic) is feed:
                del self._feeds[topic]
                await feed.listener.aclose()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._lock:
            feeds, self._feeds = list(self._feeds.values()), {}
            for feed in feeds:
                await feed.listener.aclose()
