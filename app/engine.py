"""The `Engine` seam: shared runtime state (retention window, live fan-out).

Two complete implementations (`storage.memory`, later `storage.redis`) pass one contract suite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from app.model import (
    ChannelKey,
    Event,
    EventDraft,
    HistoryPage,
    Published,
    Retention,
    Topic,
    Window,
)

__all__ = ["Engine", "LiveCallback"]

LiveCallback = Callable[[Event], None]


class Engine(Protocol):
    async def publish(
        self, key: ChannelKey, drafts: Sequence[EventDraft], retention: Retention
    ) -> list[Published]:
        """Store `drafts` on `key` as one atomic step and announce them to live listeners.

        Each event gets `replayId = max(previous + 1, now_us)`; the batch is stored contiguously
        in order, the window is trimmed by `retention`, and the low-water mark and top are kept.
        A draft whose idempotency key was seen within the idempotency TTL is not stored again:
        its original acknowledgement comes back with `duplicate=True`. Returns one acknowledgement
        per draft, in order, only once everything is stored. Raises EngineUnavailable.
        """
        ...

    async def read(self, key: ChannelKey, after: int, limit: int) -> HistoryPage:
        """Retained events with replayId > `after`, oldest first, at most `limit`, with the
        window read at the same instant (so a caller can tell if `after` fell below it)."""
        ...

    async def window(self, key: ChannelKey) -> Window:
        """The channel's window now; an unknown channel has `Window.empty()`."""
        ...

    def listen(self, topic: Topic, deliver: LiveCallback) -> AbstractAsyncContextManager[None]:
        """While entered, call `deliver` for every event published on a channel the topic
        selects, after it is stored, in ReplayId order per channel. `deliver` must not block."""
        ...

    async def ping(self) -> None:
        """Raise EngineUnavailable unless the engine can serve requests."""
        ...
