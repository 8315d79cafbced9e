"""Bayeux meta handling on decoded message lists (transport-free, like Faye's `server.rb`).

Sessions live in the engine: every `/meta/connect` reads the events after the session's stored
positions and, when there are none, holds on this node's hub until one arrives. Positions move
forward only as replies are built (or, with the ack extension, as replies are acknowledged), so
a client resumes exactly where it was on whichever node serves its next connect.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from app.access import Principal
from app.admission import Admission, jittered
from app.bayeux import codec
from app.bayeux.codec import Message
from app.bayeux.collect import ReplyBatch, Sweep, collect
from app.bayeux.names import ChannelNames
from app.bayeux.targets import Targets, matching, plan
from app.catalog import Tenant
from app.channels import ChannelPattern, is_meta, is_service, subscribable_pattern
from app.clock import Clock
from app.engine import Engine
from app.errors import InvalidChannel, Overloaded, UnknownChannel
from app.hub import EventsLost, Hub, Mailbox, SubscriberOverflow
from app.metrics import Metrics
from app.model import ChannelKey, Topic
from app.race import first_completed
from app.recovery import ALL_RETAINED, NEW_ONLY, Gap, recover
from app.sessions import Coverage, SessionChange, SessionRecord
from app.settings import Settings

__all__ = ["BayeuxServer", "Credentials", "new_client_id"]

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
    client_gone: Callable[[], Awaitable[None]] | None
    seen: set[str] = field(default_factory=set)


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


@dataclass(slots=True)
class _Hold:
    generation: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str | None = None  # "superseded" | "disconnected" | "resubscribed"


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
        self._holds: dict[str, _Hold] = {}
        self._signals: AbstractAsyncContextManager[None] | None = None

    @property
    def held_connects(self) -> int:
        return len(self._holds)

    async def process(
        self,
        messages: list[Message],
        credentials: Credentials,
        version: str | None,
        client_gone: Callable[[], Awaitable[None]] | None = None,
    ) -> list[Message | bytes]:
        """Replies (and delivered events) for one HTTP request's messages, in order.

        A connect is held only when it is alone in its request, and a request gets at most one
        handshake and one connect (later ones fail), which bounds both the sessions and the
        reply size one request can produce. `client_gone` returns when the HTTP client has gone
        away: a held connect then ends without delivering (or advancing past) anything.
        """
        parsed = api_version(version)
        context = _Request(
            credentials,
            with_uuid=parsed is None or parsed >= _EVENT_UUID_SINCE,
            holdable=len(messages) == 1,
            client_gone=client_gone,
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
        session = await self._engine.session_get(client_id) if isinstance(client_id, str) else None
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
        updated = await self._engine.session_update(
            client_id,
            SessionChange(commit_through=acknowledged, new_generation=True),
            self._hold_ttl_us if hold else self._window_us,
        )
        if updated is None:
            advice = {"reconnect": "handshake", "interval": 0}
            return [_failure(message, codec.UNKNOWN_CLIENT, advice=advice)]
        # Counted until its next connect is due: this one's hold, then the reconnect window.
        self._metrics.bayeux_client_seen(client_id, self._hold_ttl_us / 1_000_000)
        # Any older connect of this client, on any node, ends now without delivering.
        self._signal_local(client_id, f"connect {updated.generation}")
        await self._engine.session_signal(client_id, f"connect {updated.generation}")
        # A wildcard subscription takes no ReplayId, so a session that has one could not
        # resume its channels after an ending: its gaps are reported, with the retained events.
        ends_on_gap = self._end_on_gap and not Coverage.of(updated.subscriptions).wildcards
        batch = ReplyBatch(
            self._max_events, self._max_bytes, context.with_uuid, stop_at_gap=ends_on_gap
        )
        ending: str | None = None
        if hold:
            ending, resume_at = await self._hold(updated, batch, context.client_gone)
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
        generation = updated.generation
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
        client_gone: Callable[[], Awaitable[None]] | None,
    ) -> tuple[str | None, str | None]:
        """Listen on every subscription, then read; if nothing is there, wait for the first
        live event, the timeout, a newer connect, a subscribe, a disconnect or a drain.
        Returns why the hold ended early (None: it did not) and where the next connect's
        reads start (None: where they did).

        Only a connect that read every channel of its session waits the full timeout: one
        that could not (more channels than it reads) waits REPLAYBUS_BAYEUX_PARTIAL_HOLD at
        most, since events published on the channels it did not read, before it listened,
        are in the store only; the next connects read on. Live events on a channel this
        connect did not read end the wait without being delivered: a later connect reads
        them from the store, with anything published on that channel before them."""
        hold = _Hold(session.generation)
        self._holds[session.client_id] = hold
        self._metrics.held_connects.inc()
        try:
            async with AsyncExitStack() as listening:
                mailbox = Mailbox(self._capacity, self._queue_bytes)
                for name in session.subscriptions:
                    topic = Topic(session.tenant, name)
                    await listening.enter_async_context(self._hub.subscribe(topic, mailbox))
                # A signal sent before this hold was registered is lost: look again now.
                current = await self._engine.session_get(session.client_id)
                if current is None:
                    return self._abandon(batch, "disconnected"), None
                if current.generation != session.generation:
                    return self._abandon(batch, "superseded"), None
                if current.subscriptions != session.subscriptions:
                    return self._abandon(batch, "resubscribed"), None
                targets = await self._targets(session)
                sweep = await self._collect(session, batch, targets)
                if hold.reason is not None:
                    return self._abandon(batch, hold.reason), None
                if batch.items or batch.gaps:
                    return None, sweep.resume_at
                timeout = self._timeout_ms / 1000 if sweep.complete else self._partial_hold
                ending = await self._wait(hold, mailbox, client_gone, timeout)
                if ending is not None:
                    return self._abandon(batch, ending), None
                try:
                    deliveries = await mailbox.take(0)
                except (SubscriberOverflow, EventsLost):
                    targets = await self._targets(session)
                    return None, (await self._collect(session, batch, targets)).resume_at
                latest = {channel: targets.after[channel] for channel in sweep.read}
                for delivery in deliveries:
                    channel = delivery.event.key.name
                    after = latest.get(channel)
                    if after is None:
                        after = targets.start_of_new(channel, session)
                    if after is None or delivery.replay_id <= after:
                        continue
                    if not batch.add(delivery):
                        break
                    latest[channel] = delivery.replay_id
                return None, sweep.resume_at
        finally:
            self._metrics.held_connects.dec()
            if self._holds.get(session.client_id) is hold:
                del self._holds[session.client_id]

    async def _wait(
        self,
        hold: _Hold,
        mailbox: Mailbox,
        client_gone: Callable[[], Awaitable[None]] | None,
        timeout: float,
    ) -> str | None:
        """None when live events arrived (or `timeout` seconds passed); else why the hold
        ended. A newer connect wins even when events woke this one at the same moment: they
        go only to the newest connect."""
        waits: list[Coroutine[Any, Any, Any]] = [
            mailbox.wait(timeout),
            hold.wake.wait(),
            self._draining.wait(),
        ]
        if client_gone is not None:
            waits.append(_await(client_gone()))
        winner, _ = await first_completed(*waits)
        if winner == 3:
            return "gone"
        if hold.reason is not None:
            return hold.reason
        return "draining" if winner == 2 else None

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
        self._metrics.bayeux_client_gone(client_id)
        self._signal_local(client_id, "wake disconnected")
        await self._engine.session_signal(client_id, "wake disconnected")

    def _signal_local(self, client_id: str, signal: str) -> None:
        """Handle a session signal for this node's held connect of `client_id`, if any.

        `connect <g>`: a connect of generation g began, so older holds are superseded.
        `wake <reason>`: subscriptions changed or the client disconnected.
        """
        hold = self._holds.get(client_id)
        if hold is None:
            return
        kind, _, argument = signal.partition(" ")
        if kind == "connect":
            if not argument.isdigit() or int(argument) <= hold.generation:
                return
            hold.reason = "superseded"
        elif kind == "wake" and argument in ("resubscribed", "disconnected"):
            hold.reason = argument
        else:
            return
        hold.wake.set()

    async def __aenter__(self) -> BayeuxServer:
        self._signals = self._engine.session_signals(self._signal_local)
        await self._signals.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._signals is not None:
            await self._signals.__aexit__(None, None, None)
            self._signals = None
