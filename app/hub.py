"""Per-node live fan-out: one engine listener per topic, reference-counted, feeding bounded
mailboxes. The fan-out loop never waits on a subscriber: a full mailbox is marked overflowed and
its subscriber is cut off (it resumes by ReplayId) instead of growing memory. Events the engine
lost on their way (an outage it could not catch up on) are no subscriber's fault: its mailbox is
told so (`EventsLost`), and it re-reads from the store.

Listeners are opened and closed under a lock per topic, so a slow engine listen for one topic
never holds up subscribers of another (the readiness canary included).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

from app.delivery import CACHED_DELIVERIES, Delivery, DeliveryCache
from app.engine import LiveSource
from app.model import Event, Topic

__all__ = ["EventsLost", "Hub", "Mailbox", "SubscriberOverflow", "wake_waiter"]

log = logging.getLogger("replaybus.hub")


class SubscriberOverflow(Exception):
    """The subscriber fell further behind than its mailbox allows; it must resume by ReplayId."""


class EventsLost(Exception):
    """Live events were lost on their way to this node (the engine could not catch up after an
    outage); the subscriber must re-read from the store what it needs. Deliveries that arrive
    after it are still buffered: the mailbox stays usable."""


class Mailbox:
    """A single-consumer queue of deliveries bounded in count (`capacity`) and in payload bytes
    (`max_bytes`, counted as `Event.size`; an empty mailbox takes one delivery however large,
    so it never exceeds the bound by more than one event)."""

    __slots__ = (
        "_bytes",
        "_capacity",
        "_items",
        "_lost_at",
        "_max_bytes",
        "_waiter",
        "_woken",
        "direct",
        "floor",
        "overflowed",
    )

    def __init__(self, capacity: int, max_bytes: int) -> None:
        self._capacity = capacity
        self._max_bytes = max_bytes
        # A list, not a deque: an empty one costs 56 bytes, where a deque allocates a block
        # of 64 slots at once; a node holds thousands of mostly empty mailboxes.
        self._items: list[Delivery] = []
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._woken = False  # a `wake` no wait has answered yet
        self.overflowed = False
        self._lost_at: int | None = None  # deliveries buffered before events were lost
        #: Per channel, the ReplayId its consumer already has: deliveries at or below it are
        #: dropped on arrival. Live copies of events read from history can arrive late (pub/sub
        #: is asynchronous); they must not take room, let alone overflow the mailbox.
        self.floor: dict[str, int] = {}
        #: A consumer that can take a delivery at once (an SSE stream writing straight to its
        #: socket) sets this: while it waits and nothing is queued ahead, `offer` hands it the
        #: delivery instead of queueing it and waking the consumer's task. It returns False to
        #: have the delivery queued as usual. It must not block. One that raises is logged
        #: and dropped: that delivery and the later ones are queued.
        self.direct: Callable[[Delivery], bool] | None = None

    def offer(self, delivery: Delivery) -> None:
        """Never blocks: a full mailbox drops the delivery and marks itself overflowed."""
        if self.overflowed or delivery.replay_id <= self.floor.get(delivery.event.key.name, -1):
            return
        direct = self.direct
        if (
            direct is not None
            and self._waiter is not None
            and not self._items
            and self._lost_at is None
        ):
            # Called from the fan-out: a failure here must not keep the event from the
            # mailboxes after this one.
            try:
                if direct(delivery):
                    return
            except Exception:
                log.exception("a direct consumer failed; its deliveries are queued instead")
                self.direct = None
        size = delivery.event.size
        if len(self._items) >= self._capacity or (
            self._items and self._bytes + size > self._max_bytes
        ):
            self.overflowed = True
        else:
            self._items.append(delivery)
            self._bytes += size
        wake_waiter(self._waiter)  # something is buffered: the next wait sees it anyway

    def lose(self) -> None:
        """Live events were lost on their way (the engine could not catch up after an outage).
        The deliveries buffered so far are still handed over first; then `take` raises
        EventsLost, once, and goes on with what arrived after."""
        if self._lost_at is None:
            self._lost_at = len(self._items)
        wake_waiter(self._waiter)

    @property
    def lost(self) -> bool:
        """Events were lost and the consumer has not been told yet."""
        return self._lost_at is not None

    def wake(self) -> None:
        """End the current wait with nothing delivered (its caller then has nothing to take),
        or, when none is under way, make the next `wait` (or `watch`) return at once: a wake
        is never lost, whatever the consumer was doing when it came."""
        if not wake_waiter(self._waiter):
            self._woken = True

    def __len__(self) -> int:
        """Deliveries buffered."""
        return len(self._items)

    def watch(self, waiter: asyncio.Future[None]) -> bool:
        """Have the next offer, overflow or loss complete `waiter`, as `wait` does, for a
        consumer that waits on several things with one future (until `unwatch`). False, and
        nothing watched, when something is waiting already (or a `wake` came meanwhile)."""
        if self._woken or self._items or self.overflowed or self._lost_at is not None:
            self._woken = False
            return False
        self._waiter = waiter
        return True

    def unwatch(self, waiter: asyncio.Future[None]) -> None:
        if self._waiter is waiter:
            self._waiter = None
            self._woken = False  # as in `wait`: answered by the end of this watch

    def reset(self) -> None:
        """Forget buffered deliveries, the overflow and any loss (the caller re-reads history
        instead)."""
        self._items.clear()
        self._bytes = 0
        self.overflowed = False
        self._lost_at = None

    async def wait(self, timeout: float | None) -> None:
        """Return once a delivery (or an overflow, or a loss) is waiting, or after `timeout`
        seconds, or at once after a `wake` no wait has answered yet."""
        if self._woken or self._items or self.overflowed or self._lost_at is not None:
            self._woken = False
            return
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self._waiter = waiter
        # A timer that completes the waiter costs less than asyncio.timeout, which cancels
        # and uncancels the task; this runs once per delivery per subscriber.
        timer = None if timeout is None else loop.call_later(timeout, wake_waiter, waiter)
        try:
            await waiter
        finally:
            self._waiter = None
            self._woken = False  # a wake that came once the wait was over: answered by it
            if timer is not None:
                timer.cancel()

    async def take(self, timeout: float | None) -> list[Delivery]:
        """Everything buffered, waiting up to `timeout` seconds for at least one delivery
        (an empty list on timeout). Raises SubscriberOverflow once the buffer is drained after
        an overflow, so the subscriber gets every delivery it had before being cut off, and
        EventsLost after the deliveries that came before a loss (`lose`)."""
        await self.wait(timeout)
        if self._lost_at is not None:
            before, self._lost_at = self._lost_at, 0
            if not before:
                self._lost_at = None
                raise EventsLost
            items, self._items = self._items[:before], self._items[before:]
            self._bytes -= sum(delivery.event.size for delivery in items)
            return items
        if not self._items:
            if self.overflowed:
                raise SubscriberOverflow
            return []
        items, self._items = self._items, []
        self._bytes = 0
        return items


_DEFAULT_CACHE_BYTES = 16 * 1024 * 1024


def wake_waiter(waiter: asyncio.Future[None] | None) -> bool:
    """Complete `waiter` if there is one and it is still pending; whether it was."""
    if waiter is None or waiter.done():
        return False
    waiter.set_result(None)
    return True


class _Feed:
    """One topic's engine listener and its mailboxes. `users` counts subscribers that hold or
    are still acquiring it; the last one to leave closes the listener (under `lock`)."""

    __slots__ = ("deliveries", "listener", "listening", "lock", "mailboxes", "users")

    def __init__(self, deliveries: DeliveryCache) -> None:
        self.deliveries = deliveries
        self.mailboxes: set[Mailbox] = set()
        self.listener = AsyncExitStack()
        self.listening = False
        self.lock = asyncio.Lock()
        self.users = 0

    def deliver(self, event: Event) -> None:
        delivery = self.deliveries.get(event)
        for mailbox in self.mailboxes:
            mailbox.offer(delivery)

    def missed(self) -> None:
        for mailbox in self.mailboxes:
            mailbox.lose()

    async def close(self) -> None:
        if self.listening:
            self.listening = False
            await self.listener.aclose()


class Hub:
    """Owns this node's engine listeners. Use as an async context manager (closes them all).

    `deliveries` is the node's cache of encoded events: every topic's feed takes its
    Deliveries from it, and readers of the store take theirs from `Hub.deliveries` too, so an
    event is encoded once per node. Without one, the hub makes its own of default size."""

    def __init__(self, engine: LiveSource, deliveries: DeliveryCache | None = None) -> None:
        self._engine = engine
        self.deliveries = (
            deliveries
            if deliveries is not None
            else DeliveryCache(CACHED_DELIVERIES, _DEFAULT_CACHE_BYTES)
        )
        self._feeds: dict[Topic, _Feed] = {}

    @property
    def subscriber_count(self) -> int:
        return sum(len(feed.mailboxes) for feed in self._feeds.values())

    @property
    def topic_count(self) -> int:
        return sum(1 for feed in self._feeds.values() if feed.listening)

    @asynccontextmanager
    async def subscribe(self, topic: Topic, mailbox: Mailbox) -> AsyncIterator[Mailbox]:
        """Deliver every event on `topic` to `mailbox` from the moment this returns. One
        mailbox can gather several topics."""
        feed = self._feeds.get(topic)
        if feed is None:
            feed = self._feeds[topic] = _Feed(self.deliveries)
        feed.users += 1
        try:
            async with feed.lock:
                if not feed.listening:
                    listen = self._engine.listen(topic, feed.deliver, feed.missed)
                    await feed.listener.enter_async_context(listen)
                    feed.listening = True
                feed.mailboxes.add(mailbox)
        except BaseException:
            await asyncio.shield(self._release(topic, feed, None))
            raise
        try:
            yield mailbox
        finally:
            await asyncio.shield(self._release(topic, feed, mailbox))

    async def _release(self, topic: Topic, feed: _Feed, mailbox: Mailbox | None) -> None:
        if mailbox is not None:
            feed.mailboxes.discard(mailbox)
        feed.users -= 1
        if feed.users:
            return
        async with feed.lock:
            # A subscriber that arrived meanwhile found this feed and keeps it.
            if not feed.users and self._feeds.get(topic) is feed:
                del self._feeds[topic]
                await feed.close()

    async def __aenter__(self) -> Hub:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        feeds, self._feeds = list(self._feeds.values()), {}
        for feed in feeds:
            async with feed.lock:
                await feed.close()
