"""Bayeux sessions as the engine stores them: who, which subscriptions, and where each channel
stands. Any node can serve any message of a session because all of it lives in the engine.

Changes are field-level (`SessionChange`) and applied atomically by the engine with
`apply_change`, so a subscribe arriving while another node holds a connect for the same client
can never be overwritten by that connect's position update.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from app.channels import ChannelPattern, parse_pattern
from app.errors import InvalidChannel

__all__ = ["Coverage", "SessionChange", "SessionRecord", "apply_change"]

#: Unacknowledged batches kept per session; a client that never acknowledges cannot grow it.
_MAX_PENDING = 16


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """One Bayeux client.

    `subscriptions` maps each subscribed channel or pattern to the time (µs) it was subscribed;
    a wildcard pattern delivers events of channels it matches from that moment on.
    `positions` maps each concrete channel to the newest ReplayId delivered (and, with the ack
    extension, acknowledged). `pending` holds, per unacknowledged reply batch, the positions that
    batch reached; acknowledging batch N commits every batch up to N. `sweep` is the channel
    the next connect reads first ("": the first in name order), since connects read the
    session's channels in turns.
    """

    client_id: str
    tenant: str
    owner: str
    ack: bool = False
    connected: bool = False
    batch: int = 0
    generation: int = 0
    subscriptions: Mapping[str, int] = field(default_factory=dict)
    positions: Mapping[str, int] = field(default_factory=dict)
    pending: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    sweep: str = ""


@dataclass(frozen=True, slots=True)
class SessionChange:
    """Field-level edits, applied in this order: subscribe, unsubscribe, set positions, advance
    positions, stage the next batch (numbered `batch + 1`), commit acknowledged batches, mark
    connected, start a new connect generation, move the sweep (None: leave it).

    With `if_generation`, nothing at all changes unless the session is still at that
    generation: a connect superseded by a newer one (on any node) cannot move positions.
    """

    subscribe: Mapping[str, int] = field(default_factory=dict)
    unsubscribe: tuple[str, ...] = ()
    set_positions: Mapping[str, int] = field(default_factory=dict)
    advance: Mapping[str, int] = field(default_factory=dict)
    stage: Mapping[str, int] | None = None
    commit_through: int | None = None
    connected: bool | None = None
    new_generation: bool = False
    sweep: str | None = None
    if_generation: int | None = None


def _forward(positions: dict[str, int], updates: Mapping[str, int]) -> None:
    for channel, replay_id in updates.items():
        if replay_id > positions.get(channel, -1):
            positions[channel] = replay_id


@functools.lru_cache(maxsize=4096)
def _pattern(name: str) -> ChannelPattern | None:
    try:
        return parse_pattern(name)
    except InvalidChannel:
        return None


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which channels a session's subscriptions select: `exact` names themselves (a name that
    is no valid pattern too), each of `wildcards` the channels it matches from the time (µs)
    it was subscribed. Patterns come from a parse cache, so building one costs a lookup per
    subscription."""

    exact: frozenset[str]
    wildcards: tuple[tuple[ChannelPattern, int], ...]

    @classmethod
    def of(cls, subscriptions: Mapping[str, int]) -> Coverage:
        exact: set[str] = set()
        wildcards: list[tuple[ChannelPattern, int]] = []
        for name, since in subscriptions.items():
            pattern = _pattern(name)
            if pattern is not None and pattern.is_wildcard:
                wildcards.append((pattern, since))
            else:
                exact.add(name)
        return cls(frozenset(exact), tuple(wildcards))

    def covers(self, channel: str) -> bool:
        return channel in self.exact or any(
            pattern.matches(channel) for pattern, _ in self.wildcards
        )

    def wildcard_since(self, channel: str) -> int | None:
        """When the first wildcard matching `channel` was subscribed (None: none matches)."""
        starts = [since for pattern, since in self.wildcards if pattern.matches(channel)]
        return min(starts) if starts else None


def apply_change(record: SessionRecord, change: SessionChange) -> SessionRecord:
    """The new record. Positions only move forward through `advance` and commits; `set_positions`
    (a subscribe with a replay position) may move them anywhere. An unsubscribe drops the
    positions (staged ones too) of every channel no remaining subscription covers, so they
    neither accumulate nor come back with a later subscription."""
    if change.if_generation is not None and change.if_generation != record.generation:
        return record
    subscriptions = dict(record.subscriptions)
    subscriptions.update(change.subscribe)
    removed = [name for name in change.unsubscribe if subscriptions.pop(name, None) is not None]
    positions = dict(record.positions)
    pending = dict(record.pending)
    if removed:
        covers = Coverage.of(subscriptions).covers
        positions = {channel: at for channel, at in positions.items() if covers(channel)}
        pending = {
            number: {channel: at for channel, at in staged.items() if covers(channel)}
            for number, staged in pending.items()
        }
    positions.update(change.set_positions)
    _forward(positions, change.advance)
    batch = record.batch
    if change.stage is not None:
        # Numbered here, inside the atomic update, so two connects never share a batch.
        batch += 1
        pending[batch] = dict(change.stage)
        for stale in sorted(pending)[:-_MAX_PENDING]:
            del pending[stale]
    if change.commit_through is not None:
        for number in sorted(n for n in pending if n <= change.commit_through):
            _forward(positions, pending.pop(number))
    return replace(
        record,
        subscriptions=subscriptions,
        positions=positions,
        pending=pending,
        batch=batch,
        connected=record.connected if change.connected is None else change.connected,
        generation=record.generation + 1 if change.new_generation else record.generation,
        sweep=record.sweep if change.sweep is None else change.sweep,
    )
