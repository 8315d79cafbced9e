"""The in-process engine. Every method completes without yielding to the event loop between
reading and writing state, which is what makes each publish atomic here."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from app.channels import ChannelPattern, parse_pattern
from app.clock import Clock
from app.engine import TRIM_STEP, LiveCallback, MissedCallback
from app.errors import QuotaExceeded
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
from app.sessions import SessionChange, SessionRecord, apply_change

__all__ = ["MemoryEngine"]

log = logging.getLogger("replaybus.memory")

_COMPACT_AFTER = 4096
_SWEEP_TICK = TRIM_STEP  # work the sweep does between two yields to the event loop


@dataclass(slots=True)
class _Channel:
    """Retained events are `events[head:]`; evicting advances `head`, compacting now and then,
    so eviction is O(1) amortised and positions are found by binary search."""

    events: list[Event] = field(default_factory=list)
    head: int = 0
    top: int = 0
    low_water: int = 0
    retention: Retention | None = None

    @property
    def count(self) -> int:
        return len(self.events) - self.head

    def evict_oldest(self) -> None:
        self.low_water = self.events[self.head].replay_id
        self.head += 1
        if self.head >= _COMPACT_AFTER and self.head * 2 >= len(self.events):
            del self.events[: self.head]
            self.head = 0

    def trim(self, now_us: int) -> int:
        """Evict the oldest events beyond the count or older than the age, at most TRIM_STEP
        of them: a call never walks a huge backlog on the event loop. Returns how many."""
        if self.retention is None:
            return 0
        max_count = self.retention.max_count
        oldest_kept = now_us - self.retention.max_age_us
        for evicted in range(TRIM_STEP):
            if not self.count or (
                self.count <= max_count and self.events[self.head].replay_id >= oldest_kept
            ):
                return evicted
            self.evict_oldest()
        return TRIM_STEP

    def after(self, replay_id: int, limit: int, max_bytes: int | None) -> tuple[Event, ...]:
        """O(log n + page): only the page's own events are visited, wherever it starts."""
        events = self.events
        start = bisect.bisect_right(events, replay_id, lo=self.head, key=_replay_id)
        stop = min(start + limit, len(events))
        if max_bytes is None:
            return tuple(events[start:stop])
        page: list[Event] = []
        used = 0
        for index in range(start, stop):
            event = events[index]
            if page and used + event.size > max_bytes:
                break
            page.append(event)
            used += event.size
        return tuple(page)

    def window(self) -> Window:
        earliest = self.events[self.head].replay_id if self.count else None
        return Window(earliest, self.top, self.low_water, self.count)


def _replay_id(event: Event) -> int:
    return event.replay_id


@dataclass(slots=True)
class _Listeners:
    exact: dict[Topic, list[LiveCallback]] = field(default_factory=dict)
    patterns: dict[str, dict[Topic, tuple[ChannelPattern, list[LiveCallback]]]] = field(
        default_factory=dict
    )


class MemoryEngine:
    """While entered, a background sweep evicts expired events of channels nobody touches, so
    idle channels do not hold memory past their retention age."""

    def __init__(self, clock: Clock, idempotency_ttl: float, sweep_interval: float = 60.0) -> None:
        self._sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        self._clock = clock
        # Everything here is lost with the process: no position from before it is vouched for
        # (one µs below the clock, so an event stored in this same µs takes the clock as id).
        self._birth = clock.now_us() - 1
        self._idempotency_ttl_us = int(idempotency_ttl * 1_000_000)
        self._channels: dict[ChannelKey, _Channel] = {}
        self._seen: dict[tuple[ChannelKey, str], tuple[Published, int]] = {}
        self._seen_order: deque[tuple[int, tuple[ChannelKey, str]]] = deque()
        self._listeners = _Listeners()
        self._channel_names: dict[str, set[str]] = {}
        self._sessions: dict[str, tuple[SessionRecord, int]] = {}
        self._signal_listeners: list[Callable[[str, str], None]] = []
        self._streams: dict[str, dict[str, int]] = {}  # tenant -> stream id -> expiry (µs)
        self._buckets: dict[str, tuple[float, int]] = {}  # tenant -> (allowance, as of µs)
        self._claims: dict[str, dict[str, int]] = {}  # owner -> name -> expiry (µs)
        self._claim_expiries: dict[str, list[tuple[int, str]]] = {}  # owner -> a heap
        self._families: dict[str, tuple[int, int]] = {}  # family -> (generation, expiry µs)
        self._family_expiries: list[tuple[int, str]] = []  # a heap, one entry per family

    async def __aenter__(self) -> MemoryEngine:
        self._sweeper = asyncio.create_task(self._sweep_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        self._listeners = _Listeners()

    async def drop_tenant(self, tenant: str, *, since_us: int | None = None) -> int:
        """Done in one step, so `since_us` has nothing to continue."""
        names = self._channel_names.pop(tenant, set())
        self._streams.pop(tenant, None)
        self._buckets.pop(tenant, None)
        for name in names:
            self._channels.pop(ChannelKey(tenant, name), None)
        for seen_key in [seen_key for seen_key in self._seen if seen_key[0].tenant == tenant]:
            del self._seen[seen_key]
        for client_id in [
            c for c, (record, _) in self._sessions.items() if record.tenant == tenant
        ]:
            del self._sessions[client_id]
        return len(names)

    async def sweep(self) -> None:
        """Evict what has expired, on every channel, and forget expired idempotency keys and
        sessions. It yields to the event loop after each `_SWEEP_TICK` units of work (a channel
        or session looked at, an event evicted), so a node with many channels keeps serving."""
        now = self._clock.now_us()
        work = 0
        for key in list(self._channels):
            channel = self._channels.get(key)  # gone if its tenant was dropped meanwhile
            work += 1 + (channel.trim(now) if channel is not None else 0)
            if work >= _SWEEP_TICK:
                await asyncio.sleep(0)
                work = 0
        self._forget_expired_keys(now)
        for client_id in list(self._sessions):
            entry = self._sessions.get(client_id)
            if entry is not None and entry[1] <= now:
                del self._sessions[client_id]
            work += 1
            if work >= _SWEEP_TICK:
                await asyncio.sleep(0)
                work = 0

    def retained_count(self) -> int:
        """Events held in memory across every channel, without trimming first."""
        return sum(channel.count for channel in self._channels.values())

    async def _sweep_forever(self) -> None:
        """Sweep every interval; a failing sweep is logged and the next one runs anyway (a
        dead sweeper would let idle channels hold memory for ever, silently)."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            try:
                await self.sweep()
            except Exception:
                log.exception("the memory engine's sweep failed; the next one runs as planned")

    async def publish(
        self, key: ChannelKey, drafts: Sequence[EventDraft], retention: Retention
    ) -> list[Published]:
        now = self._clock.now_us()
        self._forget_expired_keys(now)
        channel = self._channels.get(key)
        if channel is None:
            channel = self._channels[key] = _Channel(top=self._birth, low_water=self._birth)
            self._channel_names.setdefault(key.tenant, set()).add(key.name)
        channel.retention = retention
        results: list[Published] = []
        stored: list[Event] = []
        for draft in drafts:
            if draft.idempotency_key is not None:
                seen = self._seen.get((key, draft.idempotency_key))
                if seen is not None:
                    original = seen[0]
                    results.append(
                        Published(original.replay_id, original.uuid, original.created_us, True)
                    )
                    continue
            replay_id = max(channel.top + 1, now)
            event = Event(
                key, replay_id, draft.uuid, now, draft.payload, draft.created_by, draft.schema
            )
            channel.events.append(event)
            channel.top = replay_id
            stored.append(event)
            published = Published(replay_id, draft.uuid, now)
            results.append(published)
            if draft.idempotency_key is not None:
                seen_key = (key, draft.idempotency_key)
                self._seen[seen_key] = (published, now + self._idempotency_ttl_us)
                self._seen_order.append((now + self._idempotency_ttl_us, seen_key))
        channel.trim(now)
        for event in stored:
            self._announce(event)
        return results

    async def read(
        self, key: ChannelKey, after: int, limit: int, max_bytes: int | None = None
    ) -> HistoryPage:
        channel = self._current(key)
        if channel is None:
            return HistoryPage((), Window.unused(self._birth))
        return HistoryPage(channel.after(after, limit, max_bytes), channel.window())

    async def window(self, key: ChannelKey) -> Window:
        channel = self._current(key)
        return channel.window() if channel else Window.unused(self._birth)

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        """`missed` is never called: delivery here cannot be interrupted."""
        pattern = parse_pattern(topic.pattern)
        if pattern.is_wildcard:
            by_topic = self._listeners.patterns.setdefault(topic.tenant, {})
            callbacks = by_topic.setdefault(topic, (pattern, []))[1]
        else:
            callbacks = self._listeners.exact.setdefault(topic, [])
        callbacks.append(deliver)
        try:
            yield
        finally:
            callbacks.remove(deliver)
            if not callbacks:
                if pattern.is_wildcard:
                    self._listeners.patterns.get(topic.tenant, {}).pop(topic, None)
                else:
                    self._listeners.exact.pop(topic, None)

    async def channel_names(self, tenant: str) -> list[str]:
        return list(self._channel_names.get(tenant, ()))

    async def channel_count(self, tenant: str) -> int:
        return len(self._channel_names.get(tenant, ()))

    async def session_create(
        self,
        record: SessionRecord,
        ttl_us: int,
        max_per_tenant: int,
        max_subscribers: int | None = None,
    ) -> bool:
        sessions = await self.session_count(record.tenant)
        if sessions >= max_per_tenant:
            return False
        together = sessions + self._live_streams(record.tenant)
        if max_subscribers is not None and together >= max_subscribers:
            return False
        self._sessions[record.client_id] = (record, self._clock.now_us() + ttl_us)
        return True

    async def session_get(self, client_id: str) -> SessionRecord | None:
        entry = self._sessions.get(client_id)
        if entry is None:
            return None
        if entry[1] <= self._clock.now_us():
            del self._sessions[client_id]
            return None
        return entry[0]

    async def session_update(
        self, client_id: str, change: SessionChange, ttl_us: int, *, extend_only: bool = False
    ) -> SessionRecord | None:
        record = await self.session_get(client_id)
        if record is None:
            return None
        updated = apply_change(record, change)
        expires = self._clock.now_us() + ttl_us
        if extend_only:
            expires = max(expires, self._sessions[client_id][1])
        self._sessions[client_id] = (updated, expires)
        return updated

    async def session_connect(
        self, client_id: str, change: SessionChange, ttl_us: int
    ) -> tuple[SessionRecord, bool] | None:
        updated = await self.session_update(client_id, change, ttl_us)
        return None if updated is None else (updated, False)  # one process: no other node

    def session_cached(self, client_id: str) -> SessionRecord | None:
        entry = self._sessions.get(client_id)
        return None if entry is None else entry[0]

    async def session_signal(self, client_id: str, signal: str) -> None:
        for deliver in list(self._signal_listeners):
            deliver(client_id, signal)

    @asynccontextmanager
    async def session_signals(self, deliver: Callable[[str, str], None]) -> AsyncIterator[None]:
        self._signal_listeners.append(deliver)
        try:
            yield
        finally:
            self._signal_listeners.remove(deliver)

    async def session_delete(self, client_id: str) -> None:
        self._sessions.pop(client_id, None)

    async def session_count(self, tenant: str) -> int:
        now = self._clock.now_us()
        return sum(
            1
            for record, expires in self._sessions.values()
            if record.tenant == tenant and expires > now
        )

    def _live_streams(self, tenant: str) -> int:
        streams = self._streams.get(tenant, {})
        now = self._clock.now_us()
        for stream_id in [key for key, expires in streams.items() if expires <= now]:
            del streams[stream_id]
        return len(streams)

    async def stream_admit(
        self, tenant: str, stream_id: str, ttl_us: int, max_subscribers: int | None
    ) -> bool:
        together = self._live_streams(tenant) + await self.session_count(tenant)
        if max_subscribers is not None and together >= max_subscribers:
            return False
        self._streams.setdefault(tenant, {})[stream_id] = self._clock.now_us() + ttl_us
        return True

    async def stream_renew(self, tenant: str, stream_id: str, ttl_us: int) -> None:
        streams = self._streams.get(tenant)
        if streams is not None and stream_id in streams:
            streams[stream_id] = self._clock.now_us() + ttl_us

    async def stream_release(self, tenant: str, stream_id: str) -> None:
        streams = self._streams.get(tenant)
        if streams is not None:
            streams.pop(stream_id, None)
            if not streams:
                del self._streams[tenant]

    async def rate_take(self, tenant: str, count: int, rate: float, burst: int) -> float:
        now = self._clock.now_us()
        tokens, at = self._buckets.get(tenant, (float(burst), now))
        if now > at:
            tokens = min(float(burst), tokens + (now - at) * rate / 1_000_000)
            at = now
        if tokens < count:
            self._buckets[tenant] = (tokens, at)
            return (count - tokens) / rate
        self._buckets[tenant] = (tokens - count, at)
        return 0.0

    async def claim_once(self, owner: str, name: str, ttl_us: int, limit: int) -> bool:
        now = self._clock.now_us()
        claims = self._claims.setdefault(owner, {})
        expiries = self._claim_expiries.setdefault(owner, [])
        while expiries and expiries[0][0] <= now:
            _, expired = heapq.heappop(expiries)
            del claims[expired]  # one heap entry per claim: a held name is never pushed again
        if name in claims:
            return False
        if len(claims) >= limit:
            # Forgetting a live claim would let a credential be used twice: refuse instead.
            wait = (expiries[0][0] - now) / 1_000_000
            raise QuotaExceeded(f"{owner} holds {limit} unexpired single-use names", wait)
        claims[name] = now + ttl_us
        heapq.heappush(expiries, (now + ttl_us, name))
        return True

    async def advance_family(self, family: str, generation: int, to: int, ttl_us: int) -> bool:
        now = self._clock.now_us()
        while self._family_expiries and self._family_expiries[0][0] <= now:
            _, due = heapq.heappop(self._family_expiries)
            expires = self._families[due][1]
            if expires <= now:
                del self._families[due]
            else:  # held longer since it was queued: look again then
                heapq.heappush(self._family_expiries, (expires, due))
        held = self._families.get(family)
        current = held[0] if held is not None and held[1] > now else 0
        if current != generation:
            return False
        if family not in self._families:
            heapq.heappush(self._family_expiries, (now + ttl_us, family))
        self._families[family] = (to, now + ttl_us)
        return True

    async def ping(self) -> None:
        return None

    def _current(self, key: ChannelKey) -> _Channel | None:
        channel = self._channels.get(key)
        if channel is not None:
            channel.trim(self._clock.now_us())
        return channel

    def _announce(self, event: Event) -> None:
        key = event.key
        for deliver in self._listeners.exact.get(Topic(key.tenant, key.name), ()):
            deliver(event)
        for pattern, callbacks in self._listeners.patterns.get(key.tenant, {}).values():
            if pattern.matches(key.name):
                for deliver in callbacks:
                    deliver(event)

    def _forget_expired_keys(self, now: int) -> None:
        while self._seen_order and self._seen_order[0][0] <= now:
            expires, seen_key = self._seen_order.popleft()
            entry = self._seen.get(seen_key)
            if entry is not None and entry[1] == expires:
                del self._seen[seen_key]
