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
from app.sessions import SessionChange, SessionRecord

__all__ = ["TRIM_STEP", "Engine", "LiveCallback", "LiveSource", "MissedCallback"]

LiveCallback = Callable[[Event], None]
MissedCallback = Callable[[], None]

#: Most events one engine call evicts to bring a channel back within its retention; the rest
#: goes on the next calls, so no call walks a whole backlog (a shrunk retention, a burst).
TRIM_STEP = 2000


class LiveSource(Protocol):
    def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AbstractAsyncContextManager[None]:
        """While entered, call `deliver` for every event published on a channel the topic
        selects, after it is stored, in ReplayId order per channel. When the engine cannot do
        that (its live connection was down and what was published meanwhile is more than it
        catches up, or cannot be re-read), it calls `missed` instead, once per outage: the
        listener must then re-read from the store what it needs. Events published after the
        outage are delivered again as usual. Neither callback may block."""
        ...


class Engine(LiveSource, Protocol):
    async def publish(
        self, key: ChannelKey, drafts: Sequence[EventDraft], retention: Retention
    ) -> list[Published]:
        """Store `drafts` on `key` as one atomic step and announce them to live listeners.

        Each event gets `replayId = max(previous + 1, now_us)`, where a channel new to the
        store starts at the store's birth mark (see `Window`); the batch is stored contiguously
        in order, the window is trimmed by `retention`, and the low-water mark and top are kept.
        A publish or read evicts at most TRIM_STEP of the oldest events (an engine may evict
        fewer when they are large), so a window far past its retention shrinks over several
        calls, its count above the maximum meanwhile; the low-water mark is exact after each.
        A draft whose idempotency key was seen within the idempotency TTL is not stored again:
        its original acknowledgement comes back with `duplicate=True`. Returns one acknowledgement
        per draft, in order, only once everything is stored. Raises EngineUnavailable, or
        NotReplicated when the events are stored but fewer replicas confirmed them than the
        engine was told to wait for.
        """
        ...

    async def read(
        self, key: ChannelKey, after: int, limit: int, max_bytes: int | None = None
    ) -> HistoryPage:
        """Retained events with replayId > `after`, oldest first, with the window read at the
        same instant (so a caller can tell if `after` fell below it).

        At most `limit` events and, with `max_bytes`, at most that many bytes of them
        (`Event.size`): the page ends before the first event that would go over the budget,
        except that it always holds the first event after `after` when there is one, however
        large, so every read makes progress. A page is therefore never more than the budget
        plus one event, and never skips an event. None: no byte budget (readers that serve a
        reply always pass one).
        """
        ...

    async def window(self, key: ChannelKey) -> Window:
        """The channel's window now; an unknown channel has `Window.unused(<the birth mark>)`."""
        ...

    async def channel_names(self, tenant: str) -> list[str]:
        """Every channel of `tenant` that has ever had an event published, in any order."""
        ...

    async def channel_count(self, tenant: str) -> int:
        """How many names `channel_names` lists, in O(1). Names are only ever added until the
        tenant is dropped, so a caller holding the list can tell from this whether it is
        still whole."""
        ...

    async def drop_tenant(self, tenant: str, *, since_us: int | None = None) -> int:
        """Forget every retained event, window and idempotency key of `tenant`'s channels, and
        its Bayeux sessions, stream leases and publish allowance (the tenant is being deleted,
        or created again after a deletion); returns how many channels this call dropped.

        An engine may bound one call's work: one that stops early raises EngineUnavailable
        and keeps its progress. A later call continues that drop if it began at or after
        `since_us` (wall clock, µs), else starts over, so a caller that knows nothing has been
        written for the tenant since some instant gets a complete drop across calls; None
        always starts over."""
        ...

    async def session_create(
        self,
        record: SessionRecord,
        ttl_us: int,
        max_per_tenant: int,
        max_subscribers: int | None = None,
    ) -> bool:
        """Store a new Bayeux session that expires after `ttl_us` unless touched; False (and
        nothing stored) when its tenant already has `max_per_tenant` live sessions, or (with
        `max_subscribers`) that many live sessions and streams together."""
        ...

    async def session_get(self, client_id: str) -> SessionRecord | None:
        """The session, or None if it never existed, was deleted or has expired."""
        ...

    async def session_update(
        self, client_id: str, change: SessionChange, ttl_us: int, *, extend_only: bool = False
    ) -> SessionRecord | None:
        """Apply `change` atomically (`app.sessions.apply_change`) and set the expiry to
        `ttl_us` from now (with `extend_only`, never earlier than it already was); None, and
        nothing changed, if the session is gone."""
        ...

    async def session_connect(
        self, client_id: str, change: SessionChange, ttl_us: int
    ) -> tuple[SessionRecord, bool] | None:
        """`session_update` for a connect served by this node: one store round trip when this
        node was the last to change the session. Also says whether another node may have
        changed it since this node last did (True when this node cannot tell): only then may
        another node hold a connect of it, to be told of this one by a signal."""
        ...

    def session_cached(self, client_id: str) -> SessionRecord | None:
        """The session as this node last read or changed it, without asking the store (None:
        not known here). It may be out of date or gone: rely only on what never changes
        (client id, tenant, owner)."""
        ...

    async def session_signal(self, client_id: str, signal: str) -> None:
        """Tell every node, this one included, something about a session (opaque text)."""
        ...

    def session_signals(
        self, deliver: Callable[[str, str], None]
    ) -> AbstractAsyncContextManager[None]:
        """While entered, call `deliver(client_id, signal)` for every signal from any node.
        Signals are best effort (a node that is down misses them); `deliver` must not block."""
        ...

    async def session_delete(self, client_id: str) -> None: ...

    async def session_count(self, tenant: str) -> int:
        """Live (unexpired) sessions of `tenant`."""
        ...

    # -- quotas ----------------------------------------------------------------------------

    async def stream_admit(
        self, tenant: str, stream_id: str, ttl_us: int, max_subscribers: int | None
    ) -> bool:
        """Count a live stream (an SSE subscriber) of `tenant` until `ttl_us` from now, unless
        renewed; False (nothing counted) when the tenant already has `max_subscribers` live
        streams and Bayeux sessions together. None means no limit."""
        ...

    async def stream_renew(self, tenant: str, stream_id: str, ttl_us: int) -> None: ...

    async def stream_release(self, tenant: str, stream_id: str) -> None: ...

    async def rate_take(self, tenant: str, count: int, rate: float, burst: int) -> float:
        """Take `count` (at most `burst`) from the tenant's publish allowance, which refills at
        `rate` per second up to `burst`, shared by every node. 0.0 when taken; otherwise the
        seconds until it could be, and nothing is taken."""
        ...

    async def claim_once(self, owner: str, name: str, ttl_us: int, limit: int) -> bool:
        """Claim `name` among `owner`'s single-use names (a tenant's JWT-bearer assertions)
        for `ttl_us` from now, shared by every node: True for the first claim, False (nothing
        changed) while an earlier claim holds. An owner holds at most `limit` unexpired
        claims: one more raises QuotaExceeded, with `retry_after` the seconds until its oldest
        expires, and other owners are unaffected. `owner` and `name` are short and hold no
        whitespace. Raises EngineUnavailable when it cannot tell (never True for a name
        already claimed)."""
        ...

    async def advance_family(self, family: str, generation: int, to: int, ttl_us: int) -> bool:
        """Compare-and-set the current generation of refresh-token family `family`, shared by
        every node: when it is `generation` (a family never advanced, or expired, is at 0),
        set it to `to`, held for `ttl_us` from now (the family's expiry), and return True;
        otherwise change nothing and return False. One entry per family, dropped once it
        expires, so what is remembered is bounded by the live families, not by their uses.
        `family` is short and holds no whitespace. Raises EngineUnavailable when it cannot
        tell (never True unless the generation was `generation`)."""
        ...

    async def ping(self) -> None:
        """Raise EngineUnavailable unless the engine can serve requests."""
        ...
