"""Helpers shared by the contract suites. They use only the `Engine` protocol, the Hub and the
stream, so every engine implementation runs the same tests unchanged.

Waiting helpers wait on a *condition* (events recorded, items delivered), bounded by WAIT_S so a
broken engine fails fast instead of hanging. With the memory engine the condition already holds
when `publish` returns, so nothing waits; an engine whose live feed is asynchronous (Redis
pub/sub) waits only as long as delivery takes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from app.delivery import Delivery
from app.engine import Engine, LiveCallback, MissedCallback
from app.hub import Mailbox
from app.model import (
    ChannelKey,
    Event,
    EventDraft,
    Published,
    Retention,
    Topic,
    Window,
)
from app.recovery import Gap
from app.streaming import ChannelStream, LiveGap, StreamItem

__all__ = [
    "IDEMPOTENCY_TTL_S",
    "KEEP_ALL",
    "QUIET_S",
    "WAIT_S",
    "ListenCounter",
    "Recorder",
    "assert_nothing_more",
    "collect",
    "draft",
    "drain",
    "flatten",
    "is_unused",
    "publish_one",
]

IDEMPOTENCY_TTL_S = 300.0
"""The idempotency TTL every engine under test is built with."""

KEEP_ALL = Retention(max_age_us=365 * 24 * 3600 * 1_000_000, max_count=1_000_000)
"""A retention window no test reaches, for tests that are not about trimming."""

WAIT_S = 5.0
"""Upper bound for a condition that must come true (never a sleep: returns as soon as it holds)."""

QUIET_S = 0.05
"""How long an idle stream is watched to check that nothing more is coming."""


def draft(
    payload: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    schema: str | None = None,
) -> EventDraft:
    return EventDraft(
        uuid=str(uuid.uuid4()),
        payload=orjson.dumps(payload if payload is not None else {"n": 0}),
        created_by="test",
        schema=schema,
        idempotency_key=idempotency_key,
    )


async def publish_one(
    engine: Engine,
    key: ChannelKey,
    retention: Retention = KEEP_ALL,
    **payload: Any,
) -> Published:
    [ack] = await engine.publish(key, [draft(payload)], retention)
    return ack


class Recorder:
    """A live callback that records what it is given (no awaits: `deliver` must not block)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.missed_count = 0
        self._changed = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def missed(self) -> None:
        """The `missed` callback: counts how often the engine said events were lost."""
        self.missed_count += 1
        self._changed.set()

    async def wait_for_missed(self) -> None:
        """Until the engine has said at least once that events were missed."""
        try:
            async with asyncio.timeout(WAIT_S):
                while self.missed_count == 0:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"never told of missed events; got {self.ids}") from None

    @property
    def ids(self) -> list[int]:
        return [event.replay_id for event in self.events]

    async def wait_for(self, count: int) -> list[Event]:
        """The recorded events once there are at least `count` of them."""
        try:
            async with asyncio.timeout(WAIT_S):
                while len(self.events) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"expected {count} live events, got {len(self.events)}: {self.ids}"
            ) from None
        return list(self.events)


async def drain(mailbox: Mailbox, count: int) -> list[Delivery]:
    """Take from `mailbox` until `count` deliveries arrived (fails if they do not)."""
    taken: list[Delivery] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while len(taken) < count:
                taken.extend(await mailbox.take(timeout=WAIT_S))
    except TimeoutError:
        raise AssertionError(f"expected {count} deliveries, got {len(taken)}") from None
    return taken


async def collect(stream: ChannelStream, count: int) -> list[StreamItem]:
    """Read `stream` until `count` items (deliveries and gaps) arrived (fails if they do not)."""
    items: list[StreamItem] = []
    try:
        async with asyncio.timeout(WAIT_S):
            while len(items) < count:
                items.extend(await stream.next_batch(timeout=WAIT_S))
    except TimeoutError:
        raise AssertionError(
            f"expected {count} stream items, got {len(items)}: {flatten(items)}"
        ) from None
    return items


async def assert_nothing_more(stream: ChannelStream) -> None:
    """The stream stays idle. Two reads: the first may only discard live duplicates of events
    already delivered from history (returning early and empty); the second then really idles."""
    rest = await stream.next_batch(timeout=QUIET_S)
    rest += await stream.next_batch(timeout=QUIET_S)
    assert flatten(rest) == []


def flatten(items: Sequence[StreamItem]) -> list[int | Gap | LiveGap]:
    """Stream items as comparable values: a delivery becomes its ReplayId, a gap stays."""
    return [item.replay_id if isinstance(item, Delivery) else item for item in items]


class ListenCounter:
    """A LiveSource over a real engine that counts live listeners (opened and still open)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.opened = 0
        self.active = 0

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        async with self._engine.listen(topic, deliver, missed):
            self.opened += 1
            self.active += 1
            try:
                yield
            finally:
                self.active -= 1


def is_unused(window: Window) -> bool:
    """The window of a channel without events: nothing retained, and its top and low-water
    mark both at the store's birth mark (a clock reading, never 0)."""
    return Window.unused(window.latest) == window and window.latest > 0
