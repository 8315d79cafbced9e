"""One pub/sub connection per node, shared by every live listener of the node.

Redis answers SUBSCRIBE asynchronously, so a listener is only handed back once Redis has
confirmed its subscription: whatever is stored after that reaches it live, whatever was stored
before is in the stream for the caller to read.

If the connection drops, the feed reconnects with backoff and subscribes again; when Redis
confirms each channel again, the feed reads from the stream what was published after the last
event it delivered, so listeners miss nothing (the ReplayId order per channel is kept). That
re-read is bounded (`on_resume` says whether it got everything); past the bound, when retention
evicted events it would have delivered, and for tenant feeds, which have no stream to re-read,
listeners are told they missed events instead.

Wildcard listeners follow their tenant's one announcement channel (every publish of the tenant
is announced there too) and match channel names here, so a wildcard subscription costs nothing
to other tenants' publishes, unlike a Redis pattern subscription, which every publish of every
tenant is checked against.

A connection that goes silent without dropping (a paused Redis, a half-open network) would
never fail a read: reads wait a second at a time, so an idle subscription is not mistaken for a
dead one. Instead the feed pings each of its connections once it has been quiet for
`ping_interval`; one that leaves a ping unanswered for `patience` counts as dropped (a reader
that was merely busy has no ping outstanding, so it is never mistaken for a dead one).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from redis.exceptions import RedisError

from app.errors import EngineUnavailable
from app.model import Event
from storage.failures import describe
from storage.redis import keys
from storage.redis.failures import unavailable

__all__ = ["CatchUp", "LiveFeed"]

log = logging.getLogger("replaybus.redis.live")
_CONTROL = keys.PREFIX + "control"
Deliver = Callable[[Event], None]
Missed = Callable[[], None]


class CatchUp(NamedTuple):
    """What a re-read after a lost connection found on one live channel: the events after the
    listeners' position, in order; whether they are all that was missed (False: beyond the
    re-read's bound, or retention evicted some of them first); and the channel's top ReplayId
    as the re-read saw it."""

    events: list[Event]
    complete: bool
    top: int


#: The catch-up of a live channel after a ReplayId.
Resume = Callable[[str, int], Awaitable[CatchUp]]
Top = Callable[[str], Awaitable[int]]
_CONFIRMATIONS = ("subscribe", "ssubscribe")
_PING = "replaybus-liveness"
_READ_S = 1.0  # one blocking read's wait; between reads the feed checks liveness


class _Liveness:
    """Whether one pub/sub connection still answers: it is pinged after `ping_interval` without
    a word from it, and counts as dead once a ping has gone unanswered for `patience`. Silence
    alone proves nothing (the reader may have been busy elsewhere, catching up or delivering):
    only a ping that Redis leaves unanswered does. `clock`: monotonic seconds."""

    def __init__(
        self, ping_interval: float, patience: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ping_interval = ping_interval
        self._patience = patience
        self._clock = clock
        self._heard = self._pinged = clock()

    def heard(self) -> None:
        """Anything came in: a message, a confirmation, a pong."""
        self._heard = self._clock()

    def _outstanding(self) -> bool:
        return self._pinged > self._heard

    def ping_due(self) -> bool:
        """True (and the ping counted as sent now) when the connection has been quiet for
        `ping_interval` and no ping is waiting for its answer."""
        now = self._clock()
        if self._outstanding() or now - self._heard < self._ping_interval:
            return False
        self._pinged = now
        return True

    def unanswered_for(self) -> float | None:
        """Seconds the outstanding ping has waited, once that is beyond `patience`; else None."""
        if not self._outstanding():
            return None
        waited = self._clock() - self._pinged
        return waited if waited > self._patience else None


class _Listener:
    __slots__ = ("deliver", "missed")

    def __init__(self, deliver: Deliver, missed: Missed) -> None:
        self.deliver = deliver
        self.missed = missed


_NAMED = (keys.PREFIX + "{").encode()  # how an announcement's live channel name begins


def decode_announcement(data: bytes, channel: str | None) -> Event | None:
    """The event of a live announcement: its channel's live channel name, ReplayId, uuid,
    created (µs), author, schema and payload, separated by \\x1f. `channel` is the live
    channel it came on when that is the channel's own (the name in front is then skipped; an
    announcement without it, as earlier versions published there, is read too), None on a
    tenant's announcement channel. None for anything but an announcement."""
    try:
        if data.startswith(_NAMED):
            live, _, data = data.partition(b"\x1f")
            channel = channel or live.decode()
        key = None if channel is None else keys.channel_from_live(channel)
        if key is None:
            return None
        replay, uuid, created, author, schema, payload = data.split(b"\x1f", 5)
        return Event(
            key=key,
            replay_id=int(replay),
            uuid=uuid.decode(),
            created_us=int(created),
            payload=payload,
            created_by=author.decode(),
            schema=schema.decode() or None,
        )
    except ValueError:  # too few fields, not a number, not UTF-8
        return None


def _unreadable(channel: str) -> None:
    # Not from the publish script: skipped, so the reader goes on for everyone else.
    log.warning("live feed skipped a message it cannot read on %s", channel)


class LiveFeed:
    def __init__(
        self,
        client: Any,
        *,
        sharded: bool,
        on_resume: Resume,
        top: Top,
        confirm_timeout: float = 10.0,
        ping_interval: float = 5.0,
        patience: float = 5.0,
    ) -> None:
        self._client = client
        self._ping_interval = ping_interval
        self._patience = patience
        self._confirm_timeout = confirm_timeout
        self._sharded = sharded
        self._resume = on_resume
        self._top = top
        self._baseline: dict[str, int] = {}
        self._pubsub: Any = None
        self._shards: Any = None  # sharded pub/sub for channels, on Redis Cluster
        self._channels: dict[str, list[_Listener]] = {}
        self._tenants: dict[str, list[_Listener]] = {}  # tenant announcement channels
        self._last: dict[str, int] = {}
        # Per followed channel: done once Redis has confirmed the subscription.
        self._active: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        # Redis Cluster: one reader per node holding sharded subscriptions, so a quiet node
        # never delays another node's messages.
        self._shard_readers: dict[str, asyncio.Task[None]] = {}
        self._lock = asyncio.Lock()
        self._signal_listeners: list[Callable[[str, str], None]] = []
        self.healthy = False
        self._generation = 0  # counts reconnects

    async def __aenter__(self) -> LiveFeed:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(_CONTROL)
        if self._sharded:
            self._shards = self._client.pubsub()
        self.healthy = True
        self._reader = asyncio.create_task(self._read_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for reader in (self._reader, *self._shard_readers.values()):
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        for pubsub in (self._pubsub, self._shards):
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    @asynccontextmanager
    async def listen(
        self, source: str, deliver: Deliver, missed: Missed, *, is_tenant: bool
    ) -> AsyncIterator[None]:
        """Follow a channel's live announcements, or (`is_tenant`) a tenant's announcement
        channel, which carries every event of the tenant; tenant channels use classic pub/sub
        even on a cluster, since publishes from every slot announce there."""
        registry = self._tenants if is_tenant else self._channels
        listener = _Listener(deliver, missed)
        async with self._lock:
            if source not in registry:
                self._active[source] = asyncio.get_running_loop().create_future()
                try:
                    if self._sharded and not is_tenant:
                        await self._shards.ssubscribe(source)
                        self._start_shard_readers()
                    else:
                        await self._pubsub.subscribe(source)
                except Exception as error:
                    # Driver, socket or state errors alike (a connection breaking under the
                    # reader's feet can leave redis-py's connection half torn down): the
                    # connection is not to be trusted, so the reader replaces it.
                    del self._active[source]
                    self.healthy = False
                    raise unavailable(
                        error, "to subscribe", "the live feed is unavailable"
                    ) from None
                except BaseException:
                    del self._active[source]
                    raise
                registry[source] = []
            registry[source].append(listener)
            active = self._active[source]
        try:
            try:
                await asyncio.wait_for(asyncio.shield(active), self._confirm_timeout)
            except TimeoutError:
                raise EngineUnavailable(
                    "the live feed is unavailable: Redis did not confirm a subscription"
                ) from None
            yield
        finally:
            await asyncio.shield(self._release(registry, source, listener, is_tenant))

    async def _release(
        self,
        registry: dict[str, list[_Listener]],
        source: str,
        listener: _Listener,
        is_tenant: bool,
    ) -> None:
        async with self._lock:
            listeners = registry.get(source, [])
            if listener in listeners:
                listeners.remove(listener)
            if listeners or source not in registry:
                return
            del registry[source]
            self._active.pop(source, None)
            self._last.pop(source, None)
            self._baseline.pop(source, None)
            try:
                if self._sharded and not is_tenant:
                    await self._shards.sunsubscribe(source)
                else:
                    await self._pubsub.unsubscribe(source)
            except Exception as error:  # as in `listen`: replace the connection
                self.healthy = False
                log.warning("live feed could not unsubscribe: %s", describe(error))

    def _dispatch(self, channel: str, event: Event, listeners: list[_Listener]) -> None:
        last = self._last.get(channel, 0)
        if event.replay_id <= last:
            return  # already delivered (a re-read after a reconnect overlapped live)
        self._last[channel] = event.replay_id
        for listener in list(listeners):
            listener.deliver(event)

    @staticmethod
    def _lost(listeners: list[_Listener]) -> None:
        for listener in list(listeners):
            listener.missed()

    async def signal(self, client_id: str, signal: str) -> None:
        """Broadcast a session signal to every node (over the control channel)."""
        await self._client.publish(_CONTROL, client_id.encode() + b"\x1f" + signal.encode())

    @contextlib.contextmanager
    def on_signal(self, deliver: Callable[[str, str], None]) -> Iterator[None]:
        self._signal_listeners.append(deliver)
        try:
            yield
        finally:
            self._signal_listeners.remove(deliver)

    def _on_message(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if channel == _CONTROL:
            client_id, _, signal = message["data"].decode().partition("\x1f")
            for notify in list(self._signal_listeners):
                notify(client_id, signal)
            return
        tenant_listeners = self._tenants.get(channel)
        if tenant_listeners is not None:
            event = decode_announcement(message["data"], None)
            if event is None:
                _unreadable(channel)
                return
            for listener in list(tenant_listeners):
                listener.deliver(event)
            return
        listeners = self._channels.get(channel)
        if listeners is None:
            return  # released meanwhile
        event = decode_announcement(message["data"], channel)
        if event is None:
            _unreadable(channel)
        else:
            self._dispatch(channel, event, listeners)

    async def _read_forever(self) -> None:
        """Read announcements; on any failure, reconnect (with backoff) until it works. The
        loop itself never dies: a dead reader would leave the node silently deaf."""
        backoff = 0.1
        liveness = self._liveness()
        while True:
            if not self.healthy:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._reconnect()
                except Exception as error:  # any failure means: try again
                    log.warning("live feed could not reconnect yet: %s", describe(error))
                    continue
                backoff = 0.1
                liveness = self._liveness()
            message = await self._read_one(functools.partial(self._listen, self._pubsub, liveness))
            if message is not None:
                liveness.heard()
                await self._handle(message)
            else:
                self._check(liveness, "its pub/sub connection")

    def _liveness(self) -> _Liveness:
        return _Liveness(self._ping_interval, self._patience)

    @staticmethod
    async def _listen(pubsub: Any, liveness: _Liveness) -> Any:
        if liveness.ping_due():
            await pubsub.ping(_PING)  # the pong comes back as a message, like any other
        return await pubsub.get_message(ignore_subscribe_messages=False, timeout=_READ_S)

    def _check(self, liveness: _Liveness, connection: str) -> None:
        waited = liveness.unanswered_for()
        if waited is not None and self.healthy:
            self.healthy = False
            log.warning(
                "live feed's ping on %s went unanswered for %.1f s: reconnecting",
                connection,
                waited,
            )

    def _start_shard_readers(self) -> None:
        for node_name in self._shards.node_pubsub_mapping:
            if node_name not in self._shard_readers:
                self._shard_readers[node_name] = asyncio.create_task(
                    self._read_shard_forever(node_name)
                )

    async def _read_shard_forever(self, node_name: str) -> None:
        """The reader of one cluster node's sharded subscriptions; it ends when the node holds
        none any more. Failures trigger the same reconnect as the main reader's."""
        liveness = self._liveness()
        generation = self._generation
        while True:
            if not self.healthy:
                await asyncio.sleep(0.1)  # the main reader reconnects everything
                continue
            if generation != self._generation:  # reconnected: a new connection to watch
                liveness, generation = self._liveness(), self._generation
            node = self._client.get_node(node_name=node_name)
            if node is None or node_name not in self._shards.node_pubsub_mapping:
                del self._shard_readers[node_name]
                return
            message = await self._read_one(functools.partial(self._listen_shard, node, liveness))
            if message is not None:
                liveness.heard()
                await self._handle(message)
            else:
                self._check(liveness, f"the sharded connection to {node_name}")
            self._start_shard_readers()  # a channel may have moved to another node

    async def _listen_shard(self, node: Any, liveness: _Liveness) -> Any:
        pubsub = self._shards.node_pubsub_mapping.get(node.name)
        if pubsub is not None and liveness.ping_due():
            await pubsub.ping(_PING)
        return await self._shards.get_sharded_message(
            ignore_subscribe_messages=False, timeout=_READ_S, target_node=node
        )

    async def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind in ("message", "smessage"):
            self._on_message(message)
        elif kind in _CONFIRMATIONS:
            try:
                await self._on_confirmed(message["channel"].decode())
            except asyncio.CancelledError:
                raise
            except Exception as error:  # the stream read failed: reconnect, confirm again
                self.healthy = False
                log.warning("live feed could not catch up from the stream: %s", describe(error))

    async def _on_confirmed(self, source: str) -> None:
        """Redis has confirmed a subscription. This runs on the reader, before any message
        that follows the confirmation is read, so a stream read here and the live messages
        after it leave no hole: a first subscription records the top (where a re-read would
        start if nothing arrives live before a lost connection) and hands the listener back; a
        renewed one (after a reconnect) delivers what was stored while it was gone, or tells
        its listeners they missed events when that is more than the re-read's bound (or, for a
        tenant channel, anything: there is no one stream to re-read)."""
        active = self._active.get(source)
        if active is None:
            return  # the control channel, or a subscription released meanwhile
        tenant_listeners = self._tenants.get(source)
        if tenant_listeners is not None:
            if active.done():
                self._lost(tenant_listeners)
            else:
                active.set_result(None)
            return
        if not active.done():
            self._baseline[source] = await self._top(source)
            if not active.done():
                active.set_result(None)
            return
        listeners = self._channels.get(source)
        if listeners is None:
            return
        after = max(self._last.get(source, 0), self._baseline.get(source, 0))
        caught = await self._resume(source, after)
        for event in caught.events:
            self._dispatch(source, event, listeners)
        if not caught.complete:
            # The listeners re-read from the store themselves, so the feed stands at the top
            # now: a later outage's re-read starts there, not again at what this one could
            # not carry (or at a hole retention made).
            self._last[source] = max(self._last.get(source, 0), caught.top)
            self._lost(listeners)

    async def _read_one(self, read: Callable[[], Awaitable[Any]]) -> Any:
        """One message, or None; any failure (driver, socket or state) marks the feed
        unhealthy, which makes the main reader reconnect everything, unless a reconnect has
        already replaced the connection the read was waiting on."""
        generation = self._generation
        try:
            return await read()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if generation != self._generation:
                return None
            self.healthy = False
            log.warning("live feed lost its Redis connection: %s", describe(error))
            return None

    async def _reconnect(self) -> None:
        """A fresh pub/sub connection and every subscription again; the gaps are filled as
        Redis confirms each one (`_on_confirmed`)."""
        async with self._lock:
            self._generation += 1
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = self._client.pubsub()
            classic = [*([] if self._sharded else self._channels), *self._tenants]
            await self._pubsub.subscribe(_CONTROL, *classic)
            if self._sharded:
                with contextlib.suppress(RedisError, OSError):
                    await self._shards.aclose()
                self._shards = self._client.pubsub()
                if self._channels:
                    await self._shards.ssubscribe(*self._channels)
                    self._start_shard_readers()
            self.healthy = True
        log.warning("live feed reconnected; each channel catches up once Redis confirms it")
