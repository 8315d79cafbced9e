"""One subscriber's stream: retained history after its position, then live events, merged so
that nothing is missed and nothing is delivered twice. Transports (SSE, later others) only
decide how to write what `next_batch` returns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.delivery import Delivery, DeliveryCache
from app.engine import Engine
from app.hub import EventsLost, Hub, Mailbox
from app.model import ChannelKey, Topic
from app.recovery import Gap, recover

__all__ = ["ChannelStream", "LiveGap", "StreamItem", "open_stream"]


@dataclass(frozen=True, slots=True)
class LiveGap:
    """Live events on channels matching `pattern` may have been lost on their way to this node
    (its live connection to the store was replaced, and a wildcard listener has no one stream
    to catch up from). Every event a wildcard stream did not receive lies behind one of these.
    A wildcard stream is live-only, so it reports this in band and goes on; the events are in
    the store, per channel."""

    pattern: str


StreamItem = Delivery | Gap | LiveGap


class ChannelStream:
    """History-then-live for one channel, or live-only for a wildcard topic (`key` is None).

    Order of operations is what makes it lossless: the live mailbox is attached *before* history
    is read, history is read page by page up to the top, and live deliveries at or below the last
    delivered ReplayId are dropped. Before each history read the mailbox is emptied (and any
    overflow forgotten), since everything the live feed carried so far is also in the store.
    Each history read is bounded by `page_size` events and `page_bytes` payload bytes; catching
    up ends once a read reaches the channel's top.
    If events are evicted while the subscriber is catching up, a Gap is reported in band before
    continuing from the oldest retained event.
    When the engine lost live events on their way (`EventsLost`), the stream catches up from
    the store again from its position, so nothing is missed (or an eviction meanwhile is
    reported as a Gap); a wildcard stream reports a LiveGap instead.
    """

    def __init__(
        self,
        engine: Engine,
        key: ChannelKey | None,
        mailbox: Mailbox,
        after: int,
        page_size: int,
        page_bytes: int,
        initial_gap: Gap | None,
        on_history_read: Callable[[], None] | None = None,
        *,
        deliveries: DeliveryCache,
        pattern: str = "",
    ) -> None:
        """`deliveries`: the node's cache, so events read from the store are encoded once for
        every subscriber. `pattern`: what a wildcard stream (`key` None) follows, named in its
        LiveGaps."""
        self._deliveries = deliveries
        self._engine = engine
        self._page_bytes = page_bytes
        self._on_history_read = on_history_read
        self._key = key
        self._pattern = pattern
        self._mailbox = mailbox
        self._page_size = page_size
        self._pending: list[StreamItem] = [initial_gap] if initial_gap else []
        self.position = after
        self._catching_up = key is not None
        self._sink: Callable[[Delivery], bool] | None = None

    @property
    def catching_up(self) -> bool:
        """Still reading retained history (False once live)."""
        return self._catching_up

    @property
    def cursor(self) -> int | None:
        """The position a reconnecting client may resume from right now, before anything was
        delivered: None for a wildcard stream, or while a gap is still to be reported."""
        if self._key is None or self._pending:
            return None
        return self.position

    def wake(self) -> None:
        """Make a pending `next_batch` return now (with nothing, if nothing arrived), or the
        next one at once if none is pending."""
        self._mailbox.wake()

    def write_through(self, sink: Callable[[Delivery], bool] | None) -> None:
        """While this stream is live and its consumer waits in `next_batch` with nothing
        queued, hand each new live delivery to `sink` at once, on the fan-out's own call,
        instead of queueing it and waking the consumer (None: stop). `sink` returns False to
        have the delivery queued as usual, and must not block. Order and position are kept:
        `sink` sees a delivery only when everything before it was taken, and the stream's
        position moves past each delivery `sink` accepts."""
        self._sink = sink
        self._mailbox.direct = None if sink is None else self._through

    def _through(self, delivery: Delivery) -> bool:
        sink = self._sink
        if sink is None or self._catching_up or self._pending or not sink(delivery):
            return False
        if self._key is not None:
            self.position = self._mailbox.floor[self._key.name] = delivery.replay_id
        return True

    async def next_batch(self, timeout: float | None) -> list[StreamItem]:
        """The next items in order; an empty list if nothing arrived within `timeout` seconds.
        Raises SubscriberOverflow when a live subscriber fell too far behind."""
        if self._catching_up:
            items = await self._read_history()
            if items:
                return items
        try:
            taken = await self._mailbox.take(timeout)
        except EventsLost:
            if self._key is None:
                return [LiveGap(self._pattern)]
            self._catching_up = True
            return await self._read_history()
        if self._key is None:
            return list(taken)
        fresh = [d for d in taken if d.replay_id > self.position]
        if fresh:
            self.position = fresh[-1].replay_id
            self._mailbox.floor[self._key.name] = self.position
        return list(fresh)

    async def _read_history(self) -> list[StreamItem]:
        assert self._key is not None
        # Everything buffered so far was stored before this read, which therefore covers it:
        # dropping it keeps stale copies from using up the live capacity (or an overflow).
        self._mailbox.reset()
        page = await self._engine.read(self._key, self.position, self._page_size, self._page_bytes)
        if self._on_history_read is not None:
            self._on_history_read()
        items, self._pending = self._pending, []
        if self.position < page.window.low_water:
            items.append(
                Gap(
                    requested=self.position,
                    earliest=page.window.earliest,
                    latest=page.window.latest,
                    resume_after=page.window.low_water,
                )
            )
        items.extend(self._deliveries.get(event) for event in page.events)
        if page.events:
            self.position = page.events[-1].replay_id
        self._mailbox.floor[self._key.name] = self.position
        # An empty page or the top, not a short page, says history is done (a page is also
        # short when full in bytes). Anything newer is in the mailbox, attached before.
        caught_up = not page.events or self.position >= page.window.latest
        if caught_up and not self._mailbox.overflowed and not self._mailbox.lost:
            self._catching_up = False
        return items


@asynccontextmanager
async def open_stream(
    engine: Engine,
    hub: Hub,
    topic: Topic,
    requested: int,
    *,
    is_wildcard: bool,
    capacity: int,
    queue_bytes: int,
    page_size: int,
    page_bytes: int,
    on_history_read: Callable[[], None] | None = None,
) -> AsyncIterator[ChannelStream]:
    """Attach to live events, then decide where history starts (`recover`), and yield the stream.

    For a wildcard topic only live events are delivered and `requested` is ignored. The live
    mailbox holds at most `capacity` events and `queue_bytes` payload bytes.
    """
    async with hub.subscribe(topic, Mailbox(capacity, queue_bytes)) as mailbox:
        if is_wildcard:
            yield ChannelStream(
                engine,
                None,
                mailbox,
                0,
                page_size,
                page_bytes,
                None,
                deliveries=hub.deliveries,
                pattern=topic.pattern,
            )
            return
        key = ChannelKey(topic.tenant, topic.pattern)
        decision = recover(requested, await engine.window(key))
        if isinstance(decision, Gap):
            after, gap = decision.resume_after, decision
        else:
            after, gap = decision.after, None
        yield ChannelStream(
            engine,
            key,
            mailbox,
            after,
            page_size,
            page_bytes,
            gap,
            on_history_read,
            deliveries=hub.deliveries,
        )
