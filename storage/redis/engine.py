"""`Engine` on Redis. Publishing is one script call (assign ReplayIds, append, trim, keep the
low-water mark, announce live); reading is another, so history and live never disagree.

Every driver error becomes `EngineUnavailable` here; nothing from redis-py leaves `storage/`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, TypeVar

import orjson
import redis.asyncio as aioredis
from redis.asyncio.cluster import PipelineCommand
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, ResponseError

from app.channels import parse_pattern
from app.clock import Clock
from app.engine import TRIM_STEP, LiveCallback, MissedCallback
from app.errors import EngineUnavailable, NotReplicated, QuotaExceeded
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
from storage.failures import describe
from storage.redis import keys
from storage.redis.failures import DRIVER_ERRORS, unavailable
from storage.redis.group_commit import GroupCommit
from storage.redis.live import CatchUp, LiveFeed
from storage.redis.tenant_drop import drop_tenant

__all__ = ["RedisEngine"]


def _draft_size(draft: EventDraft) -> int:
    return len(draft.payload)  # bytes: the encoded JSON


log = logging.getLogger("replaybus.redis")
T = TypeVar("T")
_SCRIPT = resources.files("storage.redis").joinpath("scripts/engine.lua").read_text()
# KEYS: the index to join and the other index of the same tenant (sessions and streams);
# ARGV: now, most in this index, member, its expiry, most in both (-1: no limit).
_RESERVE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local own = redis.call('ZCARD', KEYS[1])
if own >= tonumber(ARGV[2]) then return 0 end
local total = tonumber(ARGV[5])
if total >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
  if own + redis.call('ZCARD', KEYS[2]) >= total then return 0 end
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
return 1
"""
# A token bucket on the Redis clock. ARGV: count, rate per second, burst. Returns "0" when
# taken, else the seconds to wait.
_RATE = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local count, rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000000)
  at = now
end
if tokens < count then return tostring((count - tokens) / rate) end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - count), 'at', tostring(at))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return '0'
"""
# A session's compare-and-set. KEYS[1]: the session, KEYS[2] (standalone only): its tenant's
# index; ARGV: the value expected, the new one, its lifetime in ms, the client id, its expiry
# (µs, the index score). {1} when stored, else {0, the value held (nil: none)}: the caller
# applies its change to that and tries again, in one round trip per try.
_SESSION_SWAP = """
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then return {0, current} end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
if KEYS[2] then redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4]) end
return {1}
"""
_SERVER_NOW = """
local now = tonumber(ARGV[1])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
"""
# A single-use claim among an owner's. KEYS[1]: the owner's claims, a sorted set of names
# scored by expiry (µs); ARGV: now in µs ("" = this server's clock), the name, its lifetime in
# µs, the owner's limit. 1: claimed; 0: held already; a negative number: the owner is at its
# limit, and minus the µs until its oldest claim expires. The scores decide (so a test clock
# does too); Redis drops the set once its last claim has expired.
_CLAIM = (
    _SERVER_NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZSCORE', KEYS[1], ARGV[2]) then return 0 end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return -math.max(1, tonumber(oldest[2]) - now)
end
redis.call('ZADD', KEYS[1], string.format('%.0f', now + tonumber(ARGV[3])), ARGV[2])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((tonumber(last[2]) - now) / 1000)))
return 1
"""
)
# A refresh-token family's generation, compare-and-set. KEYS[1]: the family; ARGV: now in µs
# ("" = this server's clock), the expected generation, the new one, its lifetime in µs. The
# key holds "<generation> <expiry µs>", so a test clock decides too; Redis drops it then. A
# value without a generation is a refresh token's single-use claim from before families:
# spent.
_ADVANCE_FAMILY = (
    _SERVER_NOW
    + """
local current = 0
local held = redis.call('GET', KEYS[1])
if held then
  local generation, expires = string.match(held, '^(%-?%d+) (%d+)$')
  if not generation then
    current = nil
  elseif tonumber(expires) > now then
    current = tonumber(generation)
  end
end
if current ~= tonumber(ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[4])
local value = ARGV[3] .. ' ' .. string.format('%.0f', now + ttl)
redis.call('SET', KEYS[1], value, 'PX', math.max(1, math.ceil(ttl / 1000)))
return 1
"""
)
_SESSION_GRACE_US = 60_000_000  # Redis keeps a session this long past its expiry, then drops it
#: Sessions whose stored value this process remembers (as last read or written), most
#: recently used first out; each is at most a few KiB (subscriptions are capped per session).
_CACHED_SESSIONS = 50_000
# A group commit round: enough events to amortise a round trip, small enough to keep one
# script call short (Redis runs nothing else meanwhile).
_ROUND_EVENTS = 500
_ROUND_BYTES = 1 << 20
_UNLIMITED = 2**62
_KNOWN_CHANNELS = 100_000  # channels whose index entry this process has written
_CATCH_UP_PAGE = 1000  # events per read when catching up after a reconnect
#: An acknowledgement, and how many replicas confirmed the round that stored it.
_Stored = tuple[Published, int]


class RedisEngine:
    """`url`: `redis://`, `rediss://` (TLS) or `redis+cluster://…` / `cluster=True` for Redis
    Cluster. `clock`: None uses the Redis server's clock (production); tests pass one."""

    def __init__(
        self,
        url: str,
        idempotency_ttl: float,
        clock: Clock | None = None,
        *,
        cluster: bool = False,
        max_connections: int = 64,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        pool_timeout: float = 5.0,
        health_check_interval: float = 5.0,
        catch_up_events: int = 5000,
        catch_up_bytes: int = 16 * 1024 * 1024,
        drop_timeout: float = 20.0,
        min_replicas: int = 0,
        replica_timeout: float = 1.0,
        fsync_always: bool = False,
    ) -> None:
        """Every call is bounded: `connect_timeout` to open a connection, `command_timeout` for
        an answer, `pool_timeout` waiting for a free connection (standalone); the live feed
        pings every `health_check_interval` and reconnects when one goes unanswered for
        `command_timeout` more. Beyond a bound, the call raises EngineUnavailable.
        `catch_up_events` and `catch_up_bytes` bound the re-read of each channel after the
        live connection came back: past them its listeners are told they missed events (a
        listener's own buffer would overflow on that much anyway). `drop_timeout` bounds one
        `drop_tenant` call. What acknowledged writes were made to survive (`min_replicas`: a
        failover to a replica; `fsync_always`: a restart of Redis from its AOF) keeps the
        birth mark across those; it moves up (a gap for every older position) across anything
        else that may have lost acknowledged writes.

        `min_replicas` > 0: a publish is acknowledged only once that many of the channel's
        replicas (on a Cluster, its master's) confirmed it (WAIT, up to `replica_timeout`); fewer
        raise NotReplicated.
        `fsync_always`: refuse to start unless Redis fsyncs its append-only file before it
        answers a write (`appendonly yes`, `appendfsync always`)."""
        self._survives = ",".join(
            name for name, made in (("fsync", fsync_always), ("replicas", min_replicas)) if made
        )
        self._min_replicas = min_replicas
        self._replica_timeout = replica_timeout
        self._fsync_always = fsync_always
        self._drop_timeout = drop_timeout
        self._catch_up_events = catch_up_events
        self._catch_up_bytes = catch_up_bytes
        self._url = url
        self._cluster = cluster
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool_timeout = pool_timeout
        self._health_check_interval = health_check_interval
        self._clock = clock
        self._idempotency_ttl_us = int(idempotency_ttl * 1_000_000)
        self._client: Any = None
        #: Bayeux connects' session reads and changes, on a pool of their own (the same client
        #: on a Cluster), so a crowd of connects never makes a publish wait for a connection.
        self._session_client: Any = None
        self._script: Any = None
        self._reserve: Any = None
        self._session_swap: Any = None
        #: Per client id, the session value as this process last read or wrote it, decoded,
        #: and, when this process wrote it and made its connect generation (a handshake or a
        #: connect here), that generation; else None.
        self._sessions: OrderedDict[str, tuple[bytes, SessionRecord, int, int | None]] = (
            OrderedDict()
        )
        self._rate: Any = None
        self._claim: Any = None
        self._advance_family: Any = None
        self._live: LiveFeed | None = None
        self._known_channels: set[ChannelKey] = set()
        self._group_commit: GroupCommit[tuple[ChannelKey, Retention], EventDraft, _Stored] = (
            GroupCommit(
                self._publish_now,
                _draft_size,
                _ROUND_EVENTS,
                _ROUND_BYTES,
                lambda: EngineUnavailable("the event store connection is closing"),
            )
        )

    async def __aenter__(self) -> RedisEngine:
        # No automatic retries: a publish whose reply was lost may have been stored, and a
        # blind retry would store it twice. The caller gets a 503 and decides (Idempotency-Key).
        no_retry = Retry(NoBackoff(), 0)
        # A socket timeout bounds every command's wait for its answer. The live feed's
        # blocking reads pass their own (short) timeout, so it never ends an idle
        # subscription; the feed checks those connections with pings instead.
        options: dict[str, Any] = {
            "socket_connect_timeout": self._connect_timeout,
            "socket_timeout": self._command_timeout,
            "retry": no_retry,
            "max_connections": self._max_connections,
        }
        if self._cluster:
            await asyncio.to_thread(keys.slot_tags)
            self._client = aioredis.RedisCluster.from_url(self._url, **options)
            try:
                await self._client.initialize()  # the slot map, before pub/sub routes by slot
            except DRIVER_ERRORS as error:
                await self._close_client()
                raise unavailable(
                    error, "to map the cluster", "the Redis Cluster is unavailable"
                ) from None
        else:
            # A pool that makes callers wait for a free connection: the default one fails
            # the 101st concurrent command (MaxConnectionsError), which was a 503 under load.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url, timeout=self._pool_timeout, **options
            )
            self._client = aioredis.Redis(connection_pool=pool)
            self._session_client = aioredis.Redis(
                connection_pool=aioredis.BlockingConnectionPool.from_url(
                    self._url, timeout=self._pool_timeout, **options
                )
            )
        self._script = self._client.register_script(_SCRIPT)
        self._reserve = self._client.register_script(_RESERVE)
        if self._session_client is None:
            self._session_client = self._client
        self._session_swap = self._session_client.register_script(_SESSION_SWAP)
        self._rate = self._client.register_script(_RATE)
        self._claim = self._client.register_script(_CLAIM)
        self._advance_family = self._client.register_script(_ADVANCE_FAMILY)
        if self._fsync_always:
            await self._check_fsync()
        self._live = LiveFeed(
            self._client,
            sharded=self._cluster,
            on_resume=self._missed,
            top=self._top,
            confirm_timeout=2 * self._command_timeout,  # a subscribe, then a read of the top
            ping_interval=self._health_check_interval,
            patience=self._command_timeout,
        )
        try:
            await self._live.__aenter__()
        except DRIVER_ERRORS as error:
            await self._live.__aexit__(None, None, None)
            await self._close_client()
            raise unavailable(
                error, "to open the live feed", "the live feed is unavailable"
            ) from None
        return self

    async def _check_fsync(self) -> None:
        """Raise EngineUnavailable, saying what to change, unless every Redis this engine
        writes to fsyncs its append-only file before it answers a write."""
        needed = "appendonly yes and appendfsync always"
        try:
            if self._cluster:
                configs = [
                    await self._client.config_get("append*", target_nodes=node)
                    for node in self._client.get_primaries()
                ]
            else:
                configs = [await self._client.config_get("append*")]
        except ResponseError as error:
            await self._close_client()
            raise EngineUnavailable(
                f"REPLAYBUS_REDIS_FSYNC=always must check that Redis has {needed}, but this "
                f"Redis refuses CONFIG GET ({error}); allow it, or set REPLAYBUS_REDIS_FSYNC=off "
                "and make sure of the setting yourself"
            ) from None
        except DRIVER_ERRORS as error:
            await self._close_client()
            raise unavailable(error, "to read its configuration") from None
        for config in configs:
            found = (config.get("appendonly"), config.get("appendfsync"))
            if found != ("yes", "always"):
                await self._close_client()
                raise EngineUnavailable(
                    f"REPLAYBUS_REDIS_FSYNC=always needs Redis with {needed} (so a write is "
                    f"on disk before it is acknowledged); this Redis has appendonly "
                    f"{found[0]}, appendfsync {found[1]}"
                )

    async def __aexit__(self, *exc_info: object) -> None:
        await self._group_commit.aclose()
        if self._live is not None:
            await self._live.__aexit__(*exc_info)
        await self._close_client()

    async def _close_client(self) -> None:
        if self._session_client is not None and self._session_client is not self._client:
            await self._session_client.aclose(close_connection_pool=True)
        if self._client is not None:
            if self._cluster:
                await self._client.aclose()
            else:
                await self._client.aclose(close_connection_pool=True)

    async def _call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """The operation's result; any driver or socket failure (timeouts included) becomes
        EngineUnavailable. Its detail names Redis's address, so it goes to the log only."""
        try:
            return await operation()
        except DRIVER_ERRORS as error:
            raise unavailable(error, "a call") from None

    def _now(self) -> str:
        return "" if self._clock is None else str(self._clock.now_us())

    def _keys(self, key: ChannelKey) -> list[str]:
        return [*keys.channel_keys(key), keys.birth_key(key, cluster=self._cluster)]

    # -- events ----------------------------------------------------------------------------

    async def publish(
        self, key: ChannelKey, drafts: Sequence[EventDraft], retention: Retention
    ) -> list[Published]:
        """Raises NotReplicated when fewer than `min_replicas` replicas confirmed the round."""
        stored = await self._group_commit.submit((key, retention), drafts)
        published = [ack for ack, _ in stored]
        confirmed = min(replicas for _, replicas in stored)
        if confirmed < self._min_replicas:
            raise self._not_replicated(published, confirmed)
        return published

    def _not_replicated(self, published: list[Published], confirmed: int) -> NotReplicated:
        ids = [ack.replay_id for ack in published]
        shown = str(ids[0]) if len(ids) == 1 else f"{ids[0]} to {ids[-1]}"
        return NotReplicated(
            f"{len(ids)} event(s) stored on the Redis primary as ReplayId {shown}, but "
            f"{confirmed} of the {self._min_replicas} replica(s) required confirmed them within "
            f"{self._replica_timeout:g}s: they are kept and delivered, but a failover of the "
            "primary now could lose them. Send the same request again with the same "
            "Idempotency-Key: it stores nothing twice and answers these ReplayIds once the "
            "replicas have them (without a key, a retry stores them again)",
            ids,
        )

    async def _publish_now(
        self, lane: tuple[ChannelKey, Retention], drafts: list[EventDraft]
    ) -> list[_Stored]:
        """The round's acknowledgements, each with how many replicas confirmed the round."""
        key, retention = lane
        arguments: list[Any] = [
            "publish",
            self._now(),
            TRIM_STEP,
            self._survives,
            retention.max_age_us,
            retention.max_count,
            self._idempotency_ttl_us,
            keys.live_channel(key),
            len(drafts),
        ]
        for draft in drafts:
            arguments += [
                draft.uuid,
                draft.payload,
                draft.created_by,
                draft.schema or "",
                draft.idempotency_key or "",
            ]
        arguments += ["sharded" if self._cluster else "classic", keys.live_tenant(key.tenant)]

        async def run() -> tuple[list[bytes], int]:
            indexed = key in self._known_channels
            if not indexed:
                # The tenant's channel index lives in another slot than the channel, so it
                # cannot be in the script; doing it once per channel per process keeps a
                # publish at one round trip.
                await self._client.sadd(keys.channels_of(key.tenant), key.name)
                if len(self._known_channels) >= _KNOWN_CHANNELS:
                    self._known_channels.clear()
                self._known_channels.add(key)
            (fresh, result), replicas = await self._store(self._keys(key), arguments)
            if fresh and indexed:
                # The channel was new to Redis though this process had indexed it before: its
                # tenant was dropped meanwhile (on any node), index and all.
                await self._client.sadd(keys.channels_of(key.tenant), key.name)
            acknowledgements: list[bytes] = result
            return acknowledgements, replicas

        acknowledgements, replicas = await self._call(run)
        published = []
        for raw in acknowledgements:
            replay, uuid, created, duplicate = raw.decode().split("|")
            ack = Published(int(replay), uuid, int(created), duplicate == "1")
            published.append((ack, replicas))
        return published

    async def _store(self, script_keys: list[str], arguments: list[Any]) -> tuple[Any, int]:
        """The publish script's answer, and how many replicas confirmed it (0 when none are
        asked for).

        WAIT counts the writes of its own connection, so it follows the script on the same
        one, in one round trip. It also covers an earlier call's events that this one finds
        stored already (an idempotent retry): the script always writes the channel's meta, and
        replicas apply one ordered stream, so a replica that has this call's writes has every
        earlier one."""
        if not self._min_replicas:
            return await self._script(keys=script_keys, args=arguments), 0
        answer, replicas = await self._script_then_wait(script_keys, arguments)
        if isinstance(answer, NoScriptError):  # a restarted Redis, or another one
            await self._client.script_load(_SCRIPT)
            answer, replicas = await self._script_then_wait(script_keys, arguments)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(replicas, Exception):
            # The events are stored (and announced): say they are not confirmed, never that
            # nothing was stored, so a retry without a key does not store them twice.
            log.warning("WAIT failed after a publish: %s", describe(replicas))
            return answer, 0
        return answer, int(replicas)

    async def _script_then_wait(self, script_keys: list[str], arguments: list[Any]) -> list[Any]:
        timeout_ms = max(1, round(self._replica_timeout * 1000))  # WAIT 0 would never end
        if self._cluster:
            # The channel's master, and on it one connection for both: WAIT then counts the
            # replicas of that master, which are the ones that hold the channel.
            node = self._client.get_node_from_key(script_keys[0])
            script = ("EVALSHA", self._script.sha, len(script_keys), *script_keys, *arguments)
            commands = [
                PipelineCommand(0, *script),
                PipelineCommand(1, "WAIT", self._min_replicas, timeout_ms),
            ]
            await node.execute_pipeline(commands)
            return [command.result for command in commands]
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.evalsha(self._script.sha, len(script_keys), *script_keys, *arguments)
            pipe.execute_command("WAIT", self._min_replicas, timeout_ms)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def read(
        self, key: ChannelKey, after: int, limit: int, max_bytes: int | None = None
    ) -> HistoryPage:
        async def run() -> list[Any]:
            budget = "" if max_bytes is None else max_bytes
            arguments = ["read", self._now(), TRIM_STEP, self._survives, after, limit, budget]
            result: list[Any] = await self._script(keys=self._keys(key), args=arguments)
            return result

        window_fields, entries = await self._call(run)
        return HistoryPage(tuple(_event(key, entry) for entry in entries), _window(window_fields))

    async def window(self, key: ChannelKey) -> Window:
        return (await self.read(key, 0, 0)).window

    @asynccontextmanager
    async def listen(
        self, topic: Topic, deliver: LiveCallback, missed: MissedCallback
    ) -> AsyncIterator[None]:
        assert self._live is not None
        pattern = parse_pattern(topic.pattern)
        if pattern.is_wildcard:
            source = keys.live_tenant(topic.tenant)

            def matching(event: Event) -> None:
                if event.key.tenant == topic.tenant and pattern.matches(event.key.name):
                    deliver(event)

            async with self._live.listen(source, matching, missed, is_tenant=True):
                yield
        else:
            source = keys.live_channel(ChannelKey(topic.tenant, topic.pattern))
            async with self._live.listen(source, deliver, missed, is_tenant=False):
                yield

    async def _top(self, channel: str) -> int:
        key = keys.channel_from_live(channel)
        return 0 if key is None else (await self.window(key)).latest

    async def _missed(self, channel: str, after: int) -> CatchUp:
        """Events a listener may have missed while the live connection was down, up to the
        catch-up bounds. Incomplete past the bounds, and as soon as retention has evicted
        events after `after` (the listener must hear of that hole, not skip it)."""
        key = keys.channel_from_live(channel)
        if key is None:
            return CatchUp([], True, 0)
        events: list[Event] = []
        size = 0
        while True:
            limit = min(_CATCH_UP_PAGE, self._catch_up_events - len(events))
            page = await self.read(key, after, limit, self._catch_up_bytes - size)
            top = page.window.latest
            if after < page.window.low_water:
                return CatchUp(events, False, top)
            if not page.events:
                return CatchUp(events, True, top)
            events.extend(page.events)
            size += sum(event.size for event in page.events)
            after = page.events[-1].replay_id
            if after >= top:
                return CatchUp(events, True, top)
            if len(events) >= self._catch_up_events or size >= self._catch_up_bytes:
                return CatchUp(events, False, top)

    async def channel_names(self, tenant: str) -> list[str]:
        async def run() -> set[bytes]:
            names: set[bytes] = await self._client.smembers(keys.channels_of(tenant))
            return names

        return [name.decode() for name in await self._call(run)]

    async def channel_count(self, tenant: str) -> int:
        async def run() -> int:
            count: int = await self._client.scard(keys.channels_of(tenant))
            return count

        return await self._call(run)

    async def drop_tenant(self, tenant: str, *, since_us: int | None = None) -> int:
        """See `storage.redis.tenant_drop`: one SCAN pass over the keyspace, unlinking as it
        goes, within `drop_timeout`; an unfinished pass begun at or after `since_us` is
        continued, an older one started over."""
        now_us = self._now_us()
        dropped = await self._call(
            lambda: drop_tenant(
                self._client,
                tenant,
                cluster=self._cluster,
                now_us=now_us,
                since_us=since_us,
                timeout=self._drop_timeout,
            )
        )
        self._known_channels = {key for key in self._known_channels if key.tenant != tenant}
        for client_id in [c for c, cached in self._sessions.items() if cached[1].tenant == tenant]:
            del self._sessions[client_id]
        return dropped

    async def ping(self) -> None:
        """Redis answers, and this node's live feed is connected (a node whose live delivery
        is down would accept subscribers it cannot serve)."""
        await self._call(self._client.ping)
        if self._live is None or not self._live.healthy:
            raise EngineUnavailable("live delivery from Redis is reconnecting")

    # -- Bayeux sessions ---------------------------------------------------------------------

    def _now_us(self) -> int:
        if self._clock is not None:
            return self._clock.now_us()
        return time.time_ns() // 1000

    async def session_create(
        self,
        record: SessionRecord,
        ttl_us: int,
        max_per_tenant: int,
        max_subscribers: int | None = None,
    ) -> bool:
        now = self._now_us()
        expires = now + ttl_us

        async def run() -> bool:
            # Counting and reserving a place is one atomic step on the tenant's index, so
            # concurrent handshakes can never exceed the limit.
            reserved = await self._reserve(
                keys=[keys.sessions_of(record.tenant), keys.streams_of(record.tenant)],
                args=[
                    now,
                    max_per_tenant,
                    record.client_id,
                    expires,
                    -1 if max_subscribers is None else max_subscribers,
                ],
            )
            if not reserved:
                return False
            raw = _encode_session(record, expires)
            await self._client.set(
                keys.session_key(record.client_id), raw, px=(ttl_us + _SESSION_GRACE_US) // 1000
            )
            self._remember(record.client_id, raw, record, expires, record.generation)
            return True

        return await self._call(run)

    def _remember(
        self, client_id: str, raw: bytes, record: SessionRecord, expires: int, ours: int | None
    ) -> None:
        self._sessions[client_id] = (raw, record, expires, ours)
        self._sessions.move_to_end(client_id)
        if len(self._sessions) > _CACHED_SESSIONS:
            self._sessions.popitem(last=False)

    async def session_get(self, client_id: str) -> SessionRecord | None:
        async def run() -> bytes | None:
            raw: bytes | None = await self._session_client.get(keys.session_key(client_id))
            return raw

        raw = await self._call(run)
        if raw is None:
            self._sessions.pop(client_id, None)
            return None
        record, expires = _decode_session(raw)
        cached = self._sessions.get(client_id)
        # Read back as this process last wrote it: still its claim, if it had one.
        ours = cached[3] if cached is not None and cached[0] == raw else None
        self._remember(client_id, raw, record, expires, ours)
        return record if expires > self._now_us() else None

    def session_cached(self, client_id: str) -> SessionRecord | None:
        cached = self._sessions.get(client_id)
        return None if cached is None else cached[1]

    async def session_update(
        self, client_id: str, change: SessionChange, ttl_us: int, *, extend_only: bool = False
    ) -> SessionRecord | None:
        swapped = await self._swap(client_id, change, ttl_us, extend_only)
        return None if swapped is None else swapped[0]

    async def session_connect(
        self, client_id: str, change: SessionChange, ttl_us: int
    ) -> tuple[SessionRecord, bool] | None:
        return await self._swap(client_id, change, ttl_us, False)

    async def _swap(
        self, client_id: str, change: SessionChange, ttl_us: int, extend_only: bool
    ) -> tuple[SessionRecord, bool] | None:
        """Apply `app.sessions.apply_change` to the value this process last saw and
        compare-and-set it: one round trip when no other node changed the session since. A
        stale value costs one more try per change met (the script answers with the current
        one). Also says whether another node may have changed the session since this process last
        did: False only when the value this process wrote last was still the stored one, with
        the connect generation this process made (a change stored for a superseded connect
        here rewrites another node's generation, whose connect that node may still hold)."""
        key = keys.session_key(client_id)
        cached = self._sessions.get(client_id)
        ours = None if cached is None else cached[3]
        stale = ours is None
        raw, record, expires = cached[:3] if cached is not None else (b"", None, 0)
        confirmed = False  # `raw` just came from Redis (a cached one may be out of date)

        async def run() -> tuple[SessionRecord, bool] | None:
            nonlocal raw, record, expires, confirmed, stale, ours
            for _ in range(50):
                now = self._now_us()
                if record is not None and expires <= now and confirmed:
                    self._sessions.pop(client_id, None)
                    return None
                expected = raw
                if record is None or expires <= now:
                    # Nothing (current) known here: the script only reads, as "" is never held.
                    expected, updated, new_raw, new_expiry, index = b"", None, b"", now, []
                    replaced = None
                else:
                    replaced = record.generation
                    updated = apply_change(record, change)
                    new_expiry = max(expires, now + ttl_us) if extend_only else now + ttl_us
                    new_raw = _encode_session(updated, new_expiry)
                    index = [] if self._cluster else [keys.sessions_of(record.tenant)]
                answer = await self._session_swap(
                    keys=[key, *index],
                    args=[
                        expected,
                        new_raw,
                        (new_expiry - now + _SESSION_GRACE_US) // 1000,
                        client_id,
                        new_expiry,
                    ],
                )
                if answer[0] == 1 and updated is not None:
                    if self._cluster:
                        await self._client.zadd(
                            keys.sessions_of(updated.tenant), {client_id: new_expiry}
                        )
                    stale = stale or replaced != ours
                    if change.new_generation:
                        ours = updated.generation
                    elif updated.generation != ours:
                        ours = None
                    self._remember(client_id, new_raw, updated, new_expiry, ours)
                    return updated, stale
                held: bytes | None = answer[1] if len(answer) > 1 else None
                if held is None:
                    self._sessions.pop(client_id, None)
                    return None
                stale = confirmed = True
                raw = held
                record, expires = _decode_session(held)
            raise EngineUnavailable("a session is updated too often to apply a change")

        return await self._call(run)

    async def session_signal(self, client_id: str, signal: str) -> None:
        live = self._live
        assert live is not None
        await self._call(lambda: live.signal(client_id, signal))

    @asynccontextmanager
    async def session_signals(self, deliver: Callable[[str, str], None]) -> AsyncIterator[None]:
        assert self._live is not None
        with self._live.on_signal(deliver):
            yield

    async def session_delete(self, client_id: str) -> None:
        self._sessions.pop(client_id, None)

        async def run() -> None:
            raw = await self._client.get(keys.session_key(client_id))
            await self._client.delete(keys.session_key(client_id))
            if raw is not None:
                record, _ = _decode_session(raw)
                await self._client.zrem(keys.sessions_of(record.tenant), client_id)

        await self._call(run)

    async def session_count(self, tenant: str) -> int:
        async def run() -> int:
            index = keys.sessions_of(tenant)
            await self._client.zremrangebyscore(index, "-inf", self._now_us())
            count: int = await self._client.zcard(index)
            return count

        return await self._call(run)

    # -- quotas ----------------------------------------------------------------------------

    async def stream_admit(
        self, tenant: str, stream_id: str, ttl_us: int, max_subscribers: int | None
    ) -> bool:
        now = self._now_us()
        limit = -1 if max_subscribers is None else max_subscribers
        reserved = await self._call(
            lambda: self._reserve(
                keys=[keys.streams_of(tenant), keys.sessions_of(tenant)],
                args=[now, _UNLIMITED, stream_id, now + ttl_us, limit],
            )
        )
        return bool(reserved)

    async def stream_renew(self, tenant: str, stream_id: str, ttl_us: int) -> None:
        expires = self._now_us() + ttl_us
        await self._call(
            lambda: self._client.zadd(keys.streams_of(tenant), {stream_id: expires}, xx=True)
        )

    async def stream_release(self, tenant: str, stream_id: str) -> None:
        await self._call(lambda: self._client.zrem(keys.streams_of(tenant), stream_id))

    async def rate_take(self, tenant: str, count: int, rate: float, burst: int) -> float:
        wait = await self._call(
            lambda: self._rate(keys=[keys.rate_of(tenant)], args=[count, repr(rate), burst])
        )
        return float(wait)

    async def claim_once(self, owner: str, name: str, ttl_us: int, limit: int) -> bool:
        claimed = int(
            await self._call(
                lambda: self._claim(
                    keys=[keys.claims_of(owner)], args=[self._now(), name, ttl_us, limit]
                )
            )
        )
        if claimed < 0:
            # Forgetting a live claim would let a credential be used twice: refuse instead.
            raise QuotaExceeded(
                f"{owner} holds {limit} unexpired single-use names", -claimed / 1_000_000
            )
        return claimed == 1

    async def advance_family(self, family: str, generation: int, to: int, ttl_us: int) -> bool:
        advanced = await self._call(
            lambda: self._advance_family(
                keys=[keys.family_key(family)], args=[self._now(), generation, to, ttl_us]
            )
        )
        return bool(advanced)


def _window(fields: list[Any]) -> Window:
    earliest, top, low, count = fields
    return Window(int(earliest) if earliest else None, int(top), int(low), int(count))


def _event(key: ChannelKey, entry: list[Any]) -> Event:
    entry_id, raw_fields = entry
    fields = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
    ms, _, seq = entry_id.decode().partition("-")
    schema = fields[b"s"].decode()
    return Event(
        key=key,
        replay_id=int(ms) * 1000 + int(seq),
        uuid=fields[b"u"].decode(),
        created_us=int(fields[b"c"]),
        payload=fields[b"p"],
        created_by=fields[b"b"].decode(),
        schema=schema or None,
    )


def _encode_session(record: SessionRecord, expires_us: int) -> bytes:
    return orjson.dumps(
        {
            "client_id": record.client_id,
            "tenant": record.tenant,
            "owner": record.owner,
            "ack": record.ack,
            "connected": record.connected,
            "batch": record.batch,
            "generation": record.generation,
            "subscriptions": dict(record.subscriptions),
            "positions": dict(record.positions),
            "pending": {str(n): dict(p) for n, p in record.pending.items()},
            "sweep": record.sweep,
            "expires": expires_us,
        }
    )


def _decode_session(raw: bytes) -> tuple[SessionRecord, int]:
    data = orjson.loads(raw)
    record = SessionRecord(
        client_id=data["client_id"],
        tenant=data["tenant"],
        owner=data["owner"],
        ack=data["ack"],
        connected=data["connected"],
        batch=data["batch"],
        generation=data.get("generation", 0),
        subscriptions=data["subscriptions"],
        positions=data["positions"],
        pending={int(n): p for n, p in data["pending"].items()},
        sweep=data.get("sweep", ""),
    )
    return record, int(data["expires"])
