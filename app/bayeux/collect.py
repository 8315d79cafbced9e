"""What one `/meta/connect` reads from the store: its target channels (`app.bayeux.targets`),
into a reply batch bounded in events and bytes (each read asks for no more than the reply can
still carry)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.bayeux.targets import Targets
from app.delivery import Delivery, DeliveryCache
from app.engine import Engine
from app.model import ChannelKey
from app.sessions import SessionRecord

__all__ = ["ReplyBatch", "Sweep", "collect"]


@dataclass(slots=True)
class ReplyBatch:
    """Events gathered for one connect reply, within the reply caps. With `stop_at_gap`,
    gathering stops at the first channel whose position fell out of retention, before any of
    that channel's events (the session is to end instead)."""

    max_events: int
    max_bytes: int
    with_uuid: bool
    stop_at_gap: bool = False
    items: list[bytes] = field(default_factory=list)
    size: int = 0
    reached: dict[str, int] = field(default_factory=dict)
    gaps: list[dict[str, Any]] = field(default_factory=list)
    newest_created_us: int = 0

    @property
    def room(self) -> int:
        """Events the reply can still take (0 once it is full in bytes)."""
        return 0 if self.size >= self.max_bytes else self.max_events - len(self.items)

    @property
    def byte_room(self) -> int:
        return max(0, self.max_bytes - self.size)

    def add(self, delivery: Delivery) -> bool:
        if self.room <= 0:
            return False
        encoded = delivery.bayeux_message(with_uuid=self.with_uuid)
        if self.items and self.size + len(encoded) > self.max_bytes:
            self.size = self.max_bytes
            return False
        self.items.append(encoded)
        self.size += len(encoded)
        self.reached[delivery.event.key.name] = delivery.replay_id
        self.newest_created_us = max(self.newest_created_us, delivery.event.created_us)
        return True

    def clear(self) -> None:
        """Forget everything gathered (its events stay in the store)."""
        self.items.clear()
        self.reached.clear()
        self.gaps.clear()


@dataclass(frozen=True, slots=True)
class Sweep:
    """What a connect's reads covered.

    `read`: the channels this connect read (each up to its top at the time, unless the reply
    filled up on it). `resume_at`: the channel the session's next connect reads first (None:
    keep where it is). `complete`: this connect read every channel the session follows, so a
    connect that found nothing may wait for live events as long as it likes: nothing it did
    not read can be waiting in the store. `topped`: the channels read through to their top
    (at the time of the read) with every event of them in the reply."""

    read: frozenset[str]
    resume_at: str | None
    complete: bool
    topped: frozenset[str] = frozenset()


async def collect(
    engine: Engine,
    cache: DeliveryCache,
    session: SessionRecord,
    batch: ReplyBatch,
    targets: Targets,
    on_read: Callable[[], None],
) -> Sweep:
    """Read the target channels after their positions, in order, until the reply is full or
    every one is read. The next connect starts where this one stopped, so a busy channel
    cannot starve the others of reply room, and a session following more channels than one
    connect reads gets through them all in turns."""
    read: set[str] = set()
    topped: set[str] = set()
    for channel, after in targets.after.items():
        if batch.room <= 0:
            return Sweep(frozenset(read), channel, False, frozenset(topped))
        # Only what the reply can still carry: a backlog of large events is read once, not
        # once per connect that could take just one of them.
        page = await engine.read(
            ChannelKey(session.tenant, channel), after, batch.room, batch.byte_room
        )
        on_read()
        read.add(channel)
        if after < page.window.low_water:
            batch.gaps.append(
                {
                    "channel": channel,
                    "requested": after,
                    "earliest": page.window.earliest,
                    "latest": page.window.latest,
                }
            )
            if batch.stop_at_gap:
                return Sweep(frozenset(read), channel, False, frozenset(topped))
            batch.reached[channel] = page.window.low_water
        for event in page.events:
            if not batch.add(cache.get(event)):
                return Sweep(frozenset(read), channel, False, frozenset(topped))
        if batch.reached.get(channel, after) >= page.window.latest:
            topped.add(channel)
        if batch.room <= 0:
            # It may hold more.
            return Sweep(frozenset(read), channel, False, frozenset(topped))
    return Sweep(frozenset(read), targets.following, targets.following is None, frozenset(topped))
