"""What one `/meta/connect` reads from the store: the channels a session follows, read in turns
so that one connect does a bounded amount of work, into a reply batch bounded in events and
bytes (each read asks for no more than the reply can still carry)."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.channels import ChannelPattern, parse_pattern
from app.delivery import Delivery, DeliveryCache
from app.engine import Engine
from app.model import ChannelKey
from app.sessions import SessionRecord

__all__ = ["ReplyBatch", "Sweep", "collect", "read_targets", "wildcard_after", "wildcards"]


@dataclass(slots=True)
class ReplyBatch:
    """Events gathered for one connect reply, within the reply caps."""

    max_events: int
    max_bytes: int
    with_uuid: bool
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
    keep where it is). `turned`: the reads reached the last channel in name order, so every
    channel has been read since the previous turn; only then may a connect that found nothing
    wait for live events."""

    read: frozenset[str]
    resume_at: str | None
    turned: bool


def wildcards(session: SessionRecord) -> list[tuple[ChannelPattern, int]]:
    """The session's wildcard subscriptions, with the time (µs) each was made."""
    patterns = ((parse_pattern(name), since) for name, since in session.subscriptions.items())
    return [(pattern, since) for pattern, since in patterns if pattern.is_wildcard]


def wildcard_after(
    session: SessionRecord, patterns: list[tuple[ChannelPattern, int]], channel: str
) -> int | None:
    """A channel reached only through patterns starts at its first pattern's subscription
    time: ReplayIds are at least their publish time in µs, so that selects exactly the
    events published after the subscription. None when no pattern matches it."""
    starts = [since for pattern, since in patterns if pattern.matches(channel)]
    if not starts:
        return None
    return session.positions.get(channel, min(starts) - 1)


async def read_targets(engine: Engine, session: SessionRecord) -> dict[str, int]:
    """Each concrete channel the session follows, with the ReplayId to read after."""
    targets = {
        name: session.positions.get(name, 0)
        for name in session.subscriptions
        if not parse_pattern(name).is_wildcard
    }
    patterns = wildcards(session)
    if patterns:
        for channel in await engine.channel_names(session.tenant):
            if channel not in targets:
                after = wildcard_after(session, patterns, channel)
                if after is not None:
                    targets[channel] = after
    return targets


async def collect(
    engine: Engine,
    cache: DeliveryCache,
    session: SessionRecord,
    batch: ReplyBatch,
    targets: dict[str, int],
    max_reads: int,
    on_read: Callable[[], None],
) -> Sweep:
    """Read target channels after their positions, in name order starting at the session's
    `sweep` and wrapping around, until the reply is full, every channel is read, or
    `max_reads` channels are. The next connect starts where this one stopped, so a busy
    channel cannot starve the others of reply room, and a session following more channels
    than one connect reads gets through them all in turns."""
    names = sorted(targets)
    if not names:
        return Sweep(frozenset(), None, turned=True)
    start = bisect.bisect_left(names, session.sweep) % len(names)
    read: set[str] = set()
    turned = False
    for channel in names[start:] + names[:start]:
        if batch.room <= 0 or len(read) >= max_reads:
            return Sweep(frozenset(read), channel, turned)
        after = targets[channel]
        # Only what the reply can still carry: a backlog of large events is read once, not
        # once per connect that could take just one of them.
        page = await engine.read(
            ChannelKey(session.tenant, channel), after, batch.room, batch.byte_room
        )
        on_read()
        read.add(channel)
        turned = turned or channel == names[-1]
        if after < page.window.low_water:
            batch.gaps.append(
                {
                    "channel": channel,
                    "requested": after,
                    "earliest": page.window.earliest,
                    "latest": page.window.latest,
                }
            )
            batch.reached[channel] = page.window.low_water
        for event in page.events:
            if not batch.add(cache.get(event)):
                return Sweep(frozenset(read), channel, turned)
        if batch.room <= 0:
            return Sweep(frozenset(read), channel, turned)  # it may hold more
    return Sweep(frozenset(read), None, turned=True)
