"""Bayeux meta handling on decoded message lists (transport-free, like Faye's `server.rb`).

Sessions live in the engine: every `/meta/connect` reads the events after the session's stored
positions and, when there are none, holds on this node's hub until one arrives. Positions move
forward only as replies are built (or, with the ack extension, as replies are acknowledged), so
a client resumes exactly where it was on whichever node serves its next connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from app.access import Principal
from app.admission import Admission, jittered
from app.bayeux import codec
from app.bayeux.codec import Message
from app.bayeux.collect import ReplyBatch, Sweep, collect
from app.bayeux.names import ChannelNames
from app.bayeux.owned import Hold, Owned, Windows
from app.bayeux.targets import Targets, matching, plan
from app.catalog import Tenant
from app.channels import ChannelPattern, is_meta, is_service, subscribable_pattern
from app.clock import Clock
from app.delivery import Delivery
from app.engine import Engine
from app.errors import InvalidChannel, Overloaded, UnknownChannel
from app.hub import EventsLost, Hub, Mailbox, SubscriberOverflow, wake_waiter
from app.metrics import Metrics
from app.model import ChannelKey
from app.recovery import ALL_RETAINED, NEW_ONLY, Gap, recover
from app.sessions import Coverage, SessionChange, SessionRecord
from app.settings import Settings

__all__ = ["BayeuxServer", "ClientWatch", "Credentials", "WatchClient", "new_client_id"]

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_EVENT_UUID_SINCE = (52, 0)


def new_client_id() -> str:
    """27 base-36 characters (~139 random bits), shaped like Salesforce's client ids."""
    number = secrets.randbits(140)
    digits = []
    for _ in range(27):
        number, digit = divmod(number, 36)
        digits.append(_ALPHABET[digit])
    return "".join(digits)


class ClientWatch(Protocol):
    """Watches for an HTTP client going away (until `close`)."""

    def close(self) -> None: ...


#: Starts watching the request's client, calling the given function once it has gone away.
WatchClient = Callable[[Callable[[], None]], ClientWatch]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the request's `Authorization` header proved: nothing presented, an invalid token
    (`principal` None), a valid token of a suspended tenant, or a principal."""

    presented: bool
    principal: Principal | None
    suspended: bool = False
    tenant: Tenant | None = None  # the principal's, with its quotas


def api_version(text: str | None) -> tuple[int, int] | None:
    """`"58.0"` → (58, 0); None for no or an unparsable version (treated as the newest)."""
    if not text:
        return None
    match = re.fullmatch(r"([0-9]{1,4})(?:\.([0-9]{0,4}))?", text)
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2) or "0")


@dataclass(slots=True)
class _Request:
    """What one HTTP request's messages share."""

    credentials: Credentials
    with_uuid: bool
    holdable: bool
    watch_client: WatchClient | None
    seen: set[str] = field(default_factory=set)


#: A session with events queued replies at most once per lazy window (unless a full reply is
#: queued), so a busy channel's events go out in batches: the window starts at `_LAZY_MIN`
#: seconds and adapts, within `_LAZY_MAX`, so the node's replies with events stay near
#: `_REPLIES_PER_S` (a node with few busy sessions keeps the shortest window).
_LAZY_MIN = 0.05
_LAZY_MAX = 1.0
_REPLIES_PER_S = 2000
#: Connects at work at once, at most (a held one gives its turn back while it waits).
_REPLYING = 16


def _ext(message: Message) -> Mapping[str, Any]:
    ext = message.get("ext")
    return ext if isinstance(ext, dict) else {}


def _reply(message: Message, **fields: Any) -> Message:
    reply: Message = {"channel": message.get("channel")}
    if "id" in message:
        reply["id"] = message["id"]
    client_id = message.get("clientId")
    if isinstance(client_id, str):
        reply["clientId"] = client_id
    if message.get("channel") in ("/meta/subscribe", "/meta/unsubscribe"):
        reply["subscription"] = message.get("subscription")
    reply.update(fields)
    return reply


def _failure(message: Message, error: str, **fields: Any) -> Message:
    return _reply(message, successful=False, error=error, **fields)


def _requested_replay(message: Message, subscription: str) -> object:
    """`ext.replay[subscription]`, else the entry for the subscription without its query;
    a missing entry means -1 (new events only)."""
    replay = _ext(message).get("replay")
    if not isinstance(replay, dict):
        return NEW_ONLY
    for key in (subscription, subscription.partition("?")[0]):
        if key in replay:
            return replay[key]
    return NEW_ONLY


def _as_position(value: object) -> int | None:
    """An integer position, also from a numeric string (some clients send them); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]{1,19}\s*", value):
        return int(value)
    return None


@dataclass(slots=True)
class _Served:
    """What a held connect served from its session's mailbox, to keep once its reply is
    stored (`Owned.settle`)."""

    owned: Owned
    synced: dict[str, int]
    leftover: list[Delivery]


class BayeuxServer:
    def __init__(
        self,
        engine: Engine,
        hub: Hub,
        settings: Settings,
        clock: Clock,
        draining: asyncio.Event,
        new_id: Callable[[], str] = new_client_id,
        check_channel: Callable[[Tenant, str], Awaitable[object]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        """`check_channel` raises UnknownChannel for a channel the tenant may not use (an
        undefined one, when the tenant requires definitions)."""
        self._engine = engine
        self._metrics = metrics if metrics is not None else Metrics()
        self._jitter = settings.reconnect_jitter
        self._handshakes = Admission(
            "handshakes",
            settings.max_concurrent_handshakes,
            settings.reconnect_jitter,
            self._metrics.admission_refused.labels("handshake").inc,
        )
        self._check_channel = check_channel
        self._hub = hub
        self._clock = clock
        self._draining = draining
        self._new_id = new_id
        self._timeout_ms = int(settings.bayeux_timeout * 1000)
        self._window_us = int(settings.bayeux_reconnect_window * 1_000_000)
        self._hold_ttl_us = self._window_us + int(settings.bayeux_timeout * 1_000_000)
        self._max_events = settings.bayeux_max_reply_events
        self._max_bytes = settings.bayeux_max_reply_size
        self._max_clients = settings.bayeux_max_clients
        self._max_subscriptions = settings.bayeux_max_subscriptions
        self._max_reads = settings.bayeux_max_channel_reads
        self._partial_hold = min(settings.bayeux_partial_hold, settings.bayeux_timeout)
        self._end_on_gap = settings.bayeux_gap == "end-session"
        self._names = ChannelNames(engine)
        self._capacity = settings.subscriber_queue_size
        self._queue_bytes = settings.subscriber_queue_bytes
        self._holds: dict[str, Hold] = {}
        self._holding = 0  # connects in `_hold`
        self._owned: dict[str, Owned] = {}
        self._lazy_window = _LAZY_MIN
        self._replies = 0  # replies with events since `_replies_since` (loop time)
        self._replies_since = 0.0
        self._turns = asyncio.Semaphore(_REPLYING)
        self._windows = Windows(engine)
        self._housekeeping: asyncio.Task[None] | None = None
        self._signals: AbstractAsyncContextManager[None] | None = None

    @property
    def held_connects(self) -> int:
        return self._holding

    async def process(
        self,
        messages: list[Message],
        credentials: Credentials,
        version: str | None,
        watch_client: WatchClient | None = None,
    ) -> list[Message | bytes]:
        """Replies (and delivered events) for one HTTP request's messages, in order.

        A connect is held only when it is alone in its request, and a request gets at most one
        handshake and one connect (later ones fail), which bounds both the sessions and the
        reply size one request can produce. `watch_client` watches for the HTTP client going
        away: a held connect then ends without delivering (or advancing past) anything.
        """
        parsed = api_version(version)
        context = _Request(
            credentials,
            with_uuid=parsed is None or parsed >= _EVENT_UUID_SINCE,
            holdable=len(messages) == 1,
            watch_client=watch_client,
        )
        replies: list[Message | bytes] = []
        for message in messages:
            replies.extend(await self._process_one(message, context))
        return replies

    async def _process_one(self, message: Message, context: _Request) -> list[Message | bytes]:
        credentials = context.credentials
        channel = message.get("channel")
        if not isinstance(channel, str) or not channel:
            return [_failure({**message, "channel": "/meta/unknown"}, codec.CHANNEL_MISSING)]
        if not credentials.presented:
            return [_failure(message, codec.AUTHENTICATION_REQUIRED)]
        if credentials.suspended:
            advice = {"reconnect": "none", "interval": 0}
            return [_failure(message, codec.TENANT_SUSPENDED, advice=advice)]
        if channel in ("/meta/handshake", "/meta/connect"):
            if channel in context.seen:
                return [_failure(message, codec.ONE_PER_REQUEST)]
            context.seen.add(channel)
        if channel == "/meta/handshake":
            return [await self._handshake(message, credentials.principal, credentials.tenant)]
        client_id = message.get("clientId")
        session = None
        if isinstance(client_id, str):
            # A connect changes the session in the store first (and finds out if it is gone):
            # what it is checked against here never changes.
            if channel == "/meta/connect":
                session = self._engine.session_cached(client_id)
            if session is None:
                session = await self._engine.session_get(client_id)
        if session is None:
            advice = {"reconnect": "handshake", "interval": 0}
            return [_failure(message, codec.UNKNOWN_CLIENT, advice=advice)]
        principal = credentials.principal
        if principal is None or (principal.tenant, principal.identity) != (
            session.tenant,
            session.owner,
        ):
            advice = {"reconnect": "none", "interval": 0}
            return [_failure(message, codec.AUTHENTICATION_INVALID, advice=advice)]
        if channel == "/meta/connect":
            return await self._connect(message, session, context)
        if channel == "/meta/subscribe":
            if not principal.allows("subscribe"):
                return [_failure(message, codec.SUBSCRIBE_SCOPE_MISSING)]
            return [await self._subscribe(message, session, principal, credentials.tenant)]
        if channel == "/meta/unsubscribe":
            return [await self._unsubscribe(message, session)]
        if channel == "/meta/disconnect":
            return [await self._disconnect(message, session)]
        if is_meta(channel):
            return [_failure(message, codec.UNKNOWN_META_CHANNEL)]
        if is_service(channel):
            return [_reply(message, successful=True)]
        return [_failure(message, codec.PUBLISH_DENIED)]

    # -- handshake -------------------------------------------------------------------------

    async def _handshake(
        self, message: Message, principal: Principal | None, tenant: Tenant | None
    ) -> Message:
        ext = {"replay": True, "payload.format": True}
        reply = {k: v for k, v in _reply(message).items() if k != "clientId"}

        def denied(reason: str) -> Message:
            return {
                **reply,
                "successful": False,
                "error": codec.HANDSHAKE_DENIED,
                "ext": {"sfdc": {"failureReason": reason}, **ext},
                "advice": {"reconnect": "none"},
            }

        if principal is None:
            return denied(codec.AUTHENTICATION_INVALID)
        if not principal.allows("subscribe"):
            return denied(codec.SUBSCRIBE_SCOPE_MISSING)
        types = message.get("supportedConnectionTypes")
        if isinstance(types, list) and "long-polling" not in types:
            return denied(codec.invalid_connection_type(",".join(map(str, types))))
        wants_ack = _ext(message).get("ack") is True
        record = SessionRecord(
            client_id=self._new_id(),
            tenant=principal.tenant,
            owner=principal.identity,
            ack=wants_ack,
        )
        cap = tenant.settings.max_subscribers if tenant is not None else None
        try:
            place = self._handshakes.enter()
        except Overloaded as busy:
            return {
                **reply,
                "successful": False,
                "error": codec.BUSY,
                "advice": {"reconnect": "retry", "interval": round(busy.retry_after * 1000)},
            }
        try:
            created = await self._engine.session_create(
                record, self._window_us, self._max_clients, cap
            )
        finally:
            place.leave()
        if not created:
            return denied(codec.CONCURRENT_LIMIT)
        if wants_ack:
            ext["ack"] = True
        return {
            **reply,
            "version": "1.0",
            "minimumVersion": "1.0",
            "supportedConnectionTypes": ["long-polling"],
            "clientId": record.client_id,
            "successful": True,
            "ext": ext,
            "advice": self._advice(),
        }

    def _advice(self, *, spread: bool = False) -> dict[str, Any]:
        """`spread`: clients sent away together (a drain) come back at jittered intervals."""
        interval = round(jittered(0.0, self._jitter) * 1000) if spread else 0
        return {"reconnect": "retry", "interval": interval, "timeout": self._timeout_ms}

    # -- connect ---------------------------------------------------------------------------

    async def _connect(
        self, message: Message, session: SessionRecord, context: _Request
    ) -> list[Message | bytes]:
        connection_type = message.get("connectionType")
        if connection_type is not None and connection_type != "long-polling":
            return [_failure(message, codec.invalid_connection_type(connection_type))]
        client_id = session.client_id
        acknowledged = _as_position(_ext(message).get("ack")) if session.ack else None
        advice = message.get("advice")
        client_timeout = advice.get("timeout") if isinstance(advice, dict) else None
        hold = (
            context.holdable
            and session.connected
            and client_timeout != 0
            and self._timeout_ms > 0
            and not self._draining.is_set()
        )
        held = Hold() if hold else None
        if held is not None:
            # Registered before the session changes, so a signal about it is never missed.
            previous = self._holds.get(client_id)
            if previous is not None:
                previous.end("superseded")
            self._holds[client_id] = held
        ticket = held if held is not None else Hold()
        try:
            await self._turn(ticket)
            return await self._connect_as(message, session, context, held, acknowledged)
        finally:
            self._end_turn(ticket)
            if held is not None and self._holds.get(client_id) is held:
                del self._holds[client_id]

    async def _connect_as(
        self,
        message: Message,
        session: SessionRecord,
        context: _Request,
        held: Hold | None,
        acknowledged: int | None,
    ) -> list[Message | bytes]:
        client_id = session.client_id
        claimed = await self._engine.session_connect(
            client_id,
            SessionChange(commit_through=acknowledged, new_generation=True),
            self._hold_ttl_us if held is not None else self._window_us,
        )
        if claimed is None:
            if held is not None and held.reason == "disconnected":
                # The client disconnected while this connect waited for its turn.
                return [
                    _reply(message, successful=True, advice={"reconnect": "none", "interval": 0})
                ]
            advice = {"reconnect": "handshake", "interval": 0}
            return [_failure(message, codec.UNKNOWN_CLIENT, advice=advice)]
        updated, contended = claimed
        generation = updated.generation
        if held is not None:
            held.started(generation)
        owned = self._owned.get(client_id)
        if owned is not None:
            owned.generation = max(owned.generation, generation)
        # Counted until its next connect is due: this one's hold, then the reconnect window.
        self._metrics.bayeux_client_seen(client_id, self._hold_ttl_us / 1_000_000)
        # Any older connect of this client ends now without delivering: here, and on another
        # node if one may hold it (none can when this node made the session's last change).
        self._signal_local(client_id, f"connect {generation}")
        if contended:
            await self._engine.session_signal(client_id, f"connect {generation}")
        # A wildcard subscription takes no ReplayId, so a session that has one could not
        # resume its channels after an ending: its gaps are reported, with the retained events.
        ends_on_gap = self._end_on_gap and not Coverage.of(updated.subscriptions).wildcards
        batch = ReplyBatch(
            self._max_events, self._max_bytes, context.with_uuid, stop_at_gap=ends_on_gap
        )
        ending: str | None = None
        served: _Served | None = None
        if held is not None:
            ending, resume_at, served = await self._hold(updated, batch, context.watch_client, held)
            if ending == "gone":
                return []  # nobody to answer; positions stay where they were
        else:
            targets = await self._targets(updated)
            resume_at = (await self._collect(updated, batch, targets)).resume_at
        reply = _reply(message, successful=True)
        if not updated.connected or ending == "draining":
            reply["advice"] = self._advice(spread=ending == "draining")
        if ending == "disconnected":
            reply["advice"] = {"reconnect": "none", "interval": 0}
            return [reply]
        if batch.gaps and ends_on_gap:
            return [await self._end_gapped(message, reply, updated, batch.gaps)]
        ext: dict[str, Any] = {}
        if batch.gaps:
            ext["replaybus"] = {"gaps": batch.gaps}
        change = SessionChange(
            connected=True,
            stage=batch.reached if updated.ack else None,
            advance={} if updated.ack else batch.reached,
            sweep=resume_at,
            if_generation=generation,
        )
        final = await self._engine.session_update(client_id, change, self._window_us)
        if final is None:
            advice = {"reconnect": "handshake", "interval": 0}
            return [_failure(message, codec.UNKNOWN_CLIENT, advice=advice)]
        if final.generation != generation:
            return [reply]  # superseded meanwhile: the newer connect gets these events
        if served is not None and served.owned.mine(held):
            served.owned.settle(held, served.synced, served.leftover)
        if batch.items:
            self._replies += 1
            if held is not None:
                owned = self._owned.get(client_id)
                if owned is not None:
                    owned.replied = asyncio.get_running_loop().time()
        if final.ack:
            ext["ack"] = final.batch
        if ext:
            reply["ext"] = ext
        if batch.items:
            self._metrics.record_delivery(
                session.tenant, "bayeux", len(batch.items), batch.newest_created_us
            )
        if batch.gaps:
            self._metrics.gaps.labels("bayeux").inc(len(batch.gaps))
        return [*batch.items, reply]

    async def _end_gapped(
        self,
        message: Message,
        superseded: Message,
        session: SessionRecord,
        gaps: list[dict[str, Any]],
    ) -> Message:
        """End a session whose position on a channel fell out of retention, delivering none
        of this connect's reads, so the ReplayIds the client stored stay the last events it
        got. The reply is Salesforce's error for a replay from such a position, with the gaps
        in `ext.replaybus.gaps` and `reconnect: none`: the client, or its application,
        handshakes again and resubscribes from its stored ReplayIds, where the same error
        meets its replay fallback. Not `reconnect: handshake`, on which aiocometd
        (aiosfstream) resubscribes by itself and drops the refused subscription without a
        word to the application; not a 401 or 403 code, on which it re-sends the same
        request, to the deleted session. A connect superseded meanwhile (`superseded` is its
        plain reply) leaves the session to the newer one, which finds the same gap."""
        current = await self._engine.session_get(session.client_id)
        if current is None:
            advice = {"reconnect": "handshake", "interval": 0}
            return _failure(message, codec.UNKNOWN_CLIENT, advice=advice)
        if current.generation != session.generation:
            return superseded
        await self._end(session.client_id)
        self._metrics.gaps.labels("bayeux").inc(len(gaps))
        return _failure(
            message,
            codec.replay_id_invalid(gaps[0]["requested"]),
            advice={"reconnect": "none", "interval": 0},
            ext={"replaybus": {"gaps": gaps}},
        )

    async def _targets(self, session: SessionRecord) -> Targets:
        """What this connect reads (the tenant's names as of now: a hold plans after it
        listens, so a channel missing from them has all its events on the way live)."""
        coverage = Coverage.of(session.subscriptions)
        names = await self._names.sorted_names(session.tenant) if coverage.wildcards else []
        return plan(session, coverage, names, self._max_reads)

    async def _collect(self, session: SessionRecord, batch: ReplyBatch, targets: Targets) -> Sweep:
        return await collect(
            self._engine,
            self._hub.deliveries,
            session,
            batch,
            targets,
            self._metrics.replay_reads.labels("bayeux").inc,
        )

    async def _hold(
        self,
        session: SessionRecord,
        batch: ReplyBatch,
        watch_client: WatchClient | None,
        hold: Hold,
    ) -> tuple[str | None, str | None, _Served | None]:
        """Listen on every subscription (through the session's mailbox on this node, kept
        from its previous connect here), then read; if nothing is there, wait for the first
        live event, the timeout, a newer connect, a subscribe, a disconnect or a drain, and
        after a live event for the rest of the lazy window (`_lazy`). Returns why the hold
        ended early (None: it did not), where the next connect's reads start (None: where they
        did) and, when the
        mailbox holds every event after what this reply reaches, what it serves next.

        Reading is skipped when the session's positions are exactly where the mailbox took
        over on the previous connect (the mailbox has everything after them).

        Only a connect that read every channel of its session waits the full timeout: one
        that could not (more channels than it reads) waits REPLAYBUS_BAYEUX_PARTIAL_HOLD at
        most, since events published on the channels it did not read, before it listened,
        are in the store only; the next connects read on. Live events on a channel this
        connect did not read end the wait without being delivered: a later connect reads
        them from the store, with anything published on that channel before them."""
        if self._housekeeping is None:
            self._housekeeping = asyncio.create_task(self._keep_house())
        self._metrics.held_connects.inc()
        self._holding += 1
        try:
            owned = await self._own(session)
            if hold.reason is not None:
                return self._abandon(batch, hold.reason), None, None
            mailbox = owned.mailbox
            targets = await self._targets(session)
            every = not targets.coverage.wildcards and targets.following is None
            synced, pending = owned.take(hold)
            resume_at: str | None = None
            fast = every and bool(synced) and synced == targets.after
            if fast:
                latest = dict(synced)
                complete = True
            else:
                # What the mailbox holds is in the store too: read from the positions instead.
                pending = []
                mailbox.reset()
                await self._turn(hold)
                sweep = await self._collect(session, batch, targets)
                ending = hold.ending()
                if ending is not None:
                    return self._abandon(batch, ending), None, None
                resume_at = sweep.resume_at
                every = every and sweep.topped == targets.after.keys()
                if batch.items or batch.gaps:
                    if not every or batch.gaps:
                        return None, resume_at, None
                    reached = {c: batch.reached.get(c, a) for c, a in targets.after.items()}
                    return None, resume_at, _Served(owned, reached, [])
                latest = {channel: targets.after[channel] for channel in sweep.read}
                complete = sweep.complete
            self._end_turn(hold)
            if not pending and not len(mailbox):
                timeout = self._timeout_ms / 1000 if complete else self._partial_hold
                ending = await self._wait(hold, mailbox, watch_client, timeout)
                if ending is not None:
                    return self._abandon(batch, ending), None, None
            lazy = owned.replied + self._lazy() - asyncio.get_running_loop().time()
            if lazy > 0 and len(pending) + len(mailbox) < self._max_events:
                ending = await self._pause(hold, lazy)
                if ending is not None:
                    return self._abandon(batch, ending), None, None
            await self._turn(hold)
            # Superseded while it waited for the turn, or another connect took the mailbox
            # over: what is in it is that connect's to deliver.
            ending = hold.ending() or (None if owned.mine(hold) else "superseded")
            if ending is not None:
                return self._abandon(batch, ending), None, None
            try:
                # Taken without waiting, so it is still this connect's mailbox when it does.
                waiting = len(mailbox) or mailbox.overflowed or mailbox.lost
                taken = await mailbox.take(0) if waiting else []
                deliveries = [*pending, *taken]
            except (SubscriberOverflow, EventsLost):
                mailbox.reset()
                targets = await self._targets(session)
                return None, (await self._collect(session, batch, targets)).resume_at, None
            every = every and not (mailbox.overflowed or mailbox.lost)
            rest: list[Delivery] = []
            for index, delivery in enumerate(deliveries):
                channel = delivery.event.key.name
                after = latest.get(channel)
                if after is None:
                    after = targets.start_of_new(channel, session)
                if after is None or delivery.replay_id <= after:
                    continue
                if not batch.add(delivery):
                    rest = deliveries[index:]
                    break
                latest[channel] = delivery.replay_id
            if fast and not await self._retained(session, batch, synced):
                # Retention (or a store loss) took events after a position: the store says
                # what is left, and the gap is reported as for any other connect.
                batch.clear()
                mailbox.reset()
                return None, (await self._collect(session, batch, targets)).resume_at, None
            if not every:
                return None, resume_at, None
            return None, resume_at, _Served(owned, dict(latest), rest)
        finally:
            self._metrics.held_connects.dec()
            self._holding -= 1

    async def _retained(
        self, session: SessionRecord, batch: ReplyBatch, positions: dict[str, int]
    ) -> bool:
        """Whether every channel this reply delivers on still retains every event after the
        session's position on it (the store may have evicted some that this node has)."""
        for channel, reached in batch.reached.items():
            key = ChannelKey(session.tenant, channel)
            if positions[channel] < (await self._windows.after(key, reached)).low_water:
                return False
        return True

    async def _turn(self, hold: Hold) -> None:
        """Wait for one of the node's `_REPLYING` turns to change a session, read, or build
        and store a reply (the events of a connect waiting for one keep arriving in its
        mailbox, so it replies with more), so however many connects arrive or wake at once,
        the node goes on serving everything else: publishes above all."""
        if not hold.turn:
            await self._turns.acquire()
            hold.turn = True
            # Then one loop turn at least: connects that would not wait for anything (an
            # engine in memory) still go `_REPLYING` at a time, with everything else between.
            await asyncio.sleep(0)

    def _end_turn(self, hold: Hold) -> None:
        if hold.turn:
            hold.turn = False
            self._turns.release()

    async def _own(self, session: SessionRecord) -> Owned:
        """The session's mailbox on this node, subscribed to its subscriptions as they are
        now (a changed subscription starts a new one)."""
        client_id = session.client_id
        loop = asyncio.get_running_loop()
        owned = self._owned.get(client_id)
        if owned is not None and owned.opened is not None:
            await asyncio.shield(owned.opened)
            if self._owned.get(client_id) is not owned:
                owned = None
        if owned is not None and owned.subscriptions == session.subscriptions and owned.used > 0:
            owned.used = loop.time()
            return owned
        if owned is not None:
            del self._owned[client_id]
            await owned.close()
        owned = Owned(session.subscriptions, self._capacity, self._queue_bytes)
        owned.generation = session.generation
        owned.used = loop.time()
        self._owned[client_id] = owned
        try:
            await owned.open(self._hub, session.tenant)
        except BaseException:
            if self._owned.get(client_id) is owned:
                del self._owned[client_id]
            await asyncio.shield(owned.close())
            raise
        return owned

    async def _pause(self, hold: Hold, seconds: float) -> str | None:
        """A lazy window's wait: `seconds`, unless the hold is to end (then why) or the node
        starts draining. Its client going away is noticed by the reply."""
        if hold.reason is None:
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[None] = loop.create_future()
            hold.waiter = waiter
            timer = loop.call_later(seconds, wake_waiter, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                hold.waiter = None
        if hold.ending() is not None:
            return hold.reason
        return "draining" if self._draining.is_set() else None

    async def _wait(
        self,
        hold: Hold,
        mailbox: Mailbox,
        watch_client: WatchClient | None,
        timeout: float,
    ) -> str | None:
        """None when live events arrived (or `timeout` seconds passed); else why the hold
        ended. A newer connect wins even when events woke this one at the same moment: they
        go only to the newest connect. One future, completed by whichever comes first: no
        task per held connect."""
        if hold.reason is not None:
            return hold.reason
        if self._draining.is_set():
            return "draining"
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if not mailbox.watch(waiter):
            return None
        hold.waiter = waiter
        timer = loop.call_later(timeout, wake_waiter, waiter)
        gone = False

        def on_gone() -> None:
            nonlocal gone
            gone = True
            wake_waiter(waiter)

        watch = None if watch_client is None else watch_client(on_gone)
        try:
            await waiter
        finally:
            timer.cancel()
            hold.waiter = None
            mailbox.unwatch(waiter)
            if watch is not None:
                watch.close()
        if gone:
            return "gone"
        if hold.ending() is not None:
            return hold.reason
        return "draining" if self._draining.is_set() else None

    def _lazy(self) -> float:
        """The lazy window now, adapted at most once a second: scaled by how far the replies
        with events of the last period were from `_REPLIES_PER_S` (as many sessions reply
        about once per window, this brings them near it), within `_LAZY_MIN`..`_LAZY_MAX`."""
        now = asyncio.get_running_loop().time()
        elapsed = now - self._replies_since
        if elapsed >= 1.0:
            rate = self._replies / elapsed
            scaled = self._lazy_window * rate / _REPLIES_PER_S
            self._lazy_window = min(_LAZY_MAX, max(_LAZY_MIN, scaled))
            self._replies = 0
            self._replies_since = now
        return self._lazy_window

    @staticmethod
    def _abandon(batch: ReplyBatch, reason: str) -> str:
        """Empty a batch whose connect will not deliver it (its events stay in the store)."""
        batch.clear()
        return reason

    # -- subscriptions -----------------------------------------------------------------------

    async def _subscribe(
        self,
        message: Message,
        session: SessionRecord,
        principal: Principal,
        tenant: Tenant | None,
    ) -> Message:
        """Add subscriptions, each with its starting position.

        Positions are per channel and shared by every subscription of the session, so a new
        subscription never discards another's backlog: a channel some subscription already
        covers keeps its position unless the client asks for an explicit replay (N or -2).
        A channel nothing covers starts at its current top (for `-1` and wildcards; ReplayIds
        can run ahead of the clock after a burst, so a subscription time alone would not do).
        """
        requested = message.get("subscription")
        names = requested if isinstance(requested, list) else [requested]
        if not all(isinstance(name, str) and name for name in names):
            return _failure(message, codec.CHANNEL_NOT_SPECIFIED)
        unique: list[str] = list(dict.fromkeys(str(name) for name in names))
        if len(set(session.subscriptions) | set(unique)) > self._max_subscriptions:
            return _failure(message, codec.TOO_MANY_SUBSCRIPTIONS)
        coverage = Coverage.of(session.subscriptions)
        added: list[ChannelPattern] = []
        subscribe: dict[str, int] = {}
        positions: dict[str, int] = {}

        def covered(channel: str) -> bool:
            return coverage.covers(channel) or any(p.matches(channel) for p in added)

        for name in unique:
            if not name.startswith("/"):
                return _failure(message, codec.LEADING_SLASH)
            if is_meta(name):
                return _failure(message, codec.SUBSCRIPTION_DENIED)
            if is_service(name):
                continue
            channel = name.partition("?")[0]
            try:
                pattern = subscribable_pattern(channel)
            except (InvalidChannel, UnknownChannel):
                return _failure(message, codec.channel_does_not_exist(name))
            if not principal.allows("subscribe", channel):
                return _failure(message, codec.subscription_not_permitted(name))
            if not pattern.is_wildcard and tenant is not None and self._check_channel:
                try:
                    await self._check_channel(tenant, channel)
                except UnknownChannel:
                    return _failure(message, codec.channel_does_not_exist(name))
            raw = _requested_replay(message, name)
            position = _as_position(raw)
            if pattern.is_wildcard:
                if position != NEW_ONLY:
                    return _failure(message, codec.replay_id_invalid(raw))
                names = await self._names.sorted_names(session.tenant)
                for existing in matching(names, pattern):
                    if not covered(existing):
                        key = ChannelKey(session.tenant, existing)
                        positions[existing] = (await self._engine.window(key)).latest
            elif position is None or position < ALL_RETAINED:
                return _failure(message, codec.replay_id_invalid(raw))
            elif position != NEW_ONLY or not covered(channel):
                window = await self._engine.window(ChannelKey(session.tenant, channel))
                decision = recover(position, window)
                if isinstance(decision, Gap):
                    return _failure(message, codec.replay_id_invalid(raw))
                positions[channel] = decision.after
            added.append(pattern)
            subscribe[channel] = self._clock.now_us()
        change = SessionChange(subscribe=subscribe, set_positions=positions)
        if await self._update_subscriptions(session.client_id, change) is None:
            return _failure(message, codec.UNKNOWN_CLIENT)
        return _reply(message, successful=True)

    async def _update_subscriptions(
        self, client_id: str, change: SessionChange
    ) -> SessionRecord | None:
        """Apply a subscription change (never shortening the session's life, which a connect
        held on another node may count on) and wake the client's held connect, wherever it is."""
        updated = await self._engine.session_update(
            client_id, change, self._window_us, extend_only=True
        )
        if updated is not None:
            self._signal_local(client_id, "wake resubscribed")
            await self._engine.session_signal(client_id, "wake resubscribed")
        return updated

    async def _unsubscribe(self, message: Message, session: SessionRecord) -> Message:
        requested = message.get("subscription")
        names = requested if isinstance(requested, list) else [requested]
        if not all(isinstance(name, str) and name for name in names):
            return _failure(message, codec.CHANNEL_NOT_SPECIFIED)
        change = SessionChange(unsubscribe=tuple(str(n).partition("?")[0] for n in names))
        if await self._update_subscriptions(session.client_id, change) is None:
            return _failure(message, codec.UNKNOWN_CLIENT)
        return _reply(message, successful=True)

    async def _disconnect(self, message: Message, session: SessionRecord) -> Message:
        await self._end(session.client_id)
        return _reply(message, successful=True)

    async def _end(self, client_id: str) -> None:
        """Delete the session (it no longer counts against its tenant's caps); a connect of
        it held on any node ends with `reconnect: none`."""
        await self._engine.session_delete(client_id)
        owned = self._owned.get(client_id)
        if owned is not None:
            owned.used = float("-inf")
        self._metrics.bayeux_client_gone(client_id)
        self._signal_local(client_id, "wake disconnected")
        await self._engine.session_signal(client_id, "wake disconnected")

    def _signal_local(self, client_id: str, signal: str) -> None:
        """Handle a session signal for this node's held connect of `client_id`, if any.

        `connect <g>`: a connect of generation g began, so older holds are superseded (and a
        mailbox kept for the session is let go once no connect of it is held here).
        `wake <reason>`: subscriptions changed or the client disconnected.
        """
        hold = self._holds.get(client_id)
        owned = self._owned.get(client_id)
        kind, _, argument = signal.partition(" ")
        if kind == "connect":
            if not argument.isdigit():
                return
            generation = int(argument)
            if hold is not None:
                hold.connected(generation)
            if owned is not None and generation > owned.generation:
                owned.used = float("-inf")  # served elsewhere now: closed by the housekeeping
        elif kind == "wake" and argument in ("resubscribed", "disconnected"):
            if hold is not None:
                hold.end(argument)
            if owned is not None and argument == "disconnected":
                owned.used = float("-inf")

    async def _keep_house(self) -> None:
        """Wake every held connect when the node starts draining, and close the mailboxes of
        sessions no connect used within the reconnect window (or let go)."""
        loop = asyncio.get_running_loop()
        every = min(5.0, self._window_us / 4_000_000)
        drained = False
        while True:
            if drained:
                await asyncio.sleep(every)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(every):
                        await self._draining.wait()
                if self._draining.is_set():
                    drained = True
                    for hold in list(self._holds.values()):
                        wake_waiter(hold.waiter)
            idle_since = loop.time() - self._window_us / 1_000_000
            for client_id, owned in list(self._owned.items()):
                if owned.used < idle_since and client_id not in self._holds:
                    if self._owned.get(client_id) is owned:
                        del self._owned[client_id]
                    await owned.close()

    async def __aenter__(self) -> BayeuxServer:
        self._signals = self._engine.session_signals(self._signal_local)
        await self._signals.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            await asyncio.gather(self._housekeeping, return_exceptions=True)
            self._housekeeping = None
        owned, self._owned = list(self._owned.values()), {}
        for session in owned:
            await session.close()
        if self._signals is not None:
            await self._signals.__aexit__(None, None, None)
            self._signals = None
