"""Frozen domain values shared by every layer."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChannelKey",
    "Event",
    "EventDraft",
    "HistoryPage",
    "Published",
    "Retention",
    "Topic",
    "Window",
]


@dataclass(frozen=True, slots=True)
class ChannelKey:
    """One tenant's channel. The same name in two tenants is two channels that never meet."""

    tenant: str
    name: str


@dataclass(frozen=True, slots=True)
class Topic:
    """What a live listener follows: one channel, or a wildcard pattern within one tenant."""

    tenant: str
    pattern: str

    @classmethod
    def of(cls, key: ChannelKey) -> Topic:
        return cls(key.tenant, key.name)


@dataclass(frozen=True, slots=True)
class Retention:
    """A channel's retention window: events older than `max_age_us` or beyond the newest
    `max_count` are evicted, whichever trims first."""

    max_age_us: int
    max_count: int


@dataclass(frozen=True, slots=True)
class EventDraft:
    """An event before the engine has stored it. `payload` is the encoded JSON object."""

    uuid: str
    payload: bytes
    created_by: str
    schema: str | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """A stored event. `created_us` is the engine's clock at publish, in microseconds."""

    key: ChannelKey
    replay_id: int
    uuid: str
    created_us: int
    payload: bytes
    created_by: str
    schema: str | None = None

    @property
    def size(self) -> int:
        """What byte budgets count for this event (reads, mailboxes, caches): its payload's
        bytes, which dominate what holding or sending the event costs. Every engine measures
        the same way, so a budget means the same on each."""
        return len(self.payload)


@dataclass(frozen=True, slots=True)
class Published:
    """The acknowledgement of one stored event; `duplicate` when an idempotency key matched."""

    replay_id: int
    uuid: str
    created_us: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Window:
    """A channel's retention window at one instant.

    `latest` is the top ReplayId ever assigned, kept even after every event expired.
    `low_water` is the ReplayId of the newest event ever evicted: every event above it is still
    retained, so any position in [low_water, latest] resumes without loss. Neither is ever
    below the store's birth mark (a ReplayId taken from the clock when the store last started
    empty, or may have lost acknowledged events): a position from before it is a gap.
    `earliest` is the oldest retained ReplayId, or None when nothing is retained.
    """

    earliest: int | None
    latest: int
    low_water: int
    count: int

    @classmethod
    def unused(cls, birth: int) -> Window:
        """The window of a channel that has no event in a store born at `birth`."""
        return cls(earliest=None, latest=birth, low_water=birth, count=0)


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Retained events after a position, oldest first, with the window read at the same instant."""

    events: tuple[Event, ...]
    window: Window
