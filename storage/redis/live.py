"""One pub/sub connection per node, shared by every live listener of the node.

If the connection drops, the feed reconnects with backoff, subscribes again and, for every
channel it follows, reads from the stream what was published after the last event it delivered,
so listeners miss nothing (the ReplayId order per channel is kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from redis.exceptions import RedisError

from app.model import ChannelKey, Event
from storage.redis import keys

__all__ = ["LiveFeed"]

log = logging.getLogger("replaybus.redis.live")
_CONTROL = keys.PREFIX + "control"
Deliver = Callable[[Event], None]
Resume = Callable[[str, int], Awaitable[list[Event]]]
Top = Callable[[str], Awaitable[int]]


def decode_announcement(channel: str, data: bytes) -> Event | None:
    key = keys.channel_from_live(channel)
    if key is None:
        return None
    replay, uuid, created, author, schema, payload = data.split(b"\x1f", 5)
    return Event(
        key=ChannelKey(key.tenant, key.name),
        replay_id=int(replay),
        uuid=uuid.decode(),
        created_us=int(created),
        payload=payload,
        created_by=author.decode(),
        schema=schema.decode() or None,
    )


class LiveFeed:
    def __init__(self, client: Any, *, sharded: bool, on_resume: Resume, top: Top) -> None:
        self._client = client
        self._sharded = sharded
        self._resume = on_resume
        self._top = top
        self._baseline: dict[str, int] = {}
        self._pubsub: Any = None
        self._shards: Any = None  # sharded pub/sub for channels, on Redis Cluster
        self._channels: dict[str, list[Deliver]] = {}
        self._patterns: dict[str, list[Deliver]] = {}
        self._last: dict[str, int] = {}
        self._reader: asyncio.Task[None] | None = None
        self._shard_reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._signal_listeners: list[Callable[[str, str], None]] = []
        self.healthy = False

    async def __aenter__(self) -> LiveFeed:
        self._pubsub = self._client.pubsub()
        await self._pubsub.subscribe(_CONTROL)
        if self._sharded:
            self._shards = self._client.pubsub()
        self.healthy = True
        self._reader = asyncio.create_task(self._read_forever())
        if self._sharded:
            self._shard_reader = asyncio.create_task(self._read_shards_forever())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for reader in (self._reader, self._shard_reader):
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
        self, source: str, deliver: Deliver, *, is_pattern: bool
    ) -> AsyncIterator[None]:
        registry = self._patterns if is_pattern else self._channels
        async with self._lock:
            if source not in registry:
                if is_pattern:
                    await self._pubsub.psubscribe(source)
                elif self._sharded:
                    await self._shards.ssubscribe(source)
                else:
                    await self._pubsub.subscribe(source)
                    # Where a re-read after a lost connection starts if nothing was delivered
                    # yet: the top once the subscription is in place.
                    self._baseline[source] = await self._top(source)
                registry[source] = []
            registry[source].append(deliver)
        try:
            yield
        finally:
            await asyncio.shield(self._release(registry, source, deliver, is_pattern))

    async def _release(
        self, registry: dict[str, list[Deliver]], source: str, deliver: Deliver, is_pattern: bool
    ) -> None:
        async with self._lock:
            callbacks = registry.get(source, [])
            if deliver in callbacks:
                callbacks.remove(deliver)
            if callbacks or source not in registry:
                return
            del registry[source]
            self._last.pop(source, None)
            self._baseline.pop(source, None)
            with contextlib.suppress(RedisError, OSError):
                if is_pattern:
                    await self._pubsub.punsubscribe(source)
                elif self._sharded:
                    await self._shards.sunsubscribe(source)
                else:
                    await self._pubsub.unsubscribe(source)

    def _dispatch(self, channel: str, event: Event, callbacks: list[Deliver]) -> None:
        last = self._last.get(channel, 0)
        if event.replay_id <= last:
            return  # already delivered (a re-read after a reconnect overlapped live)
        self._last[channel] = event.replay_id
        for deliver in list(callbacks):
            deliver(event)

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
        event = decode_announcement(channel, message["data"])
        if event is None:
            return
        if message["type"] == "pmessage":
            callbacks = self._patterns.get(message["pattern"].decode(), [])
            for deliver in list(callbacks):
                deliver(event)
        else:
            self._dispatch(channel, event, self._channels.get(channel, []))

    async def _read_forever(self) -> None:
        """Read announcements; on any failure, reconnect (with backoff) until it works. The
        loop itself never dies: a dead reader would leave the node silently deaf."""
        backoff = 0.1
        while True:
            if not self.healthy:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                try:
                    await self._reconnect()
                except Exception as error:  # any failure means: try again
                    log.warning("live feed could not reconnect yet: %s", error)
                    continue
                backoff = 0.1
            message = await self._read_one(
                lambda: self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            )
            if message is not None and message["type"] in ("message", "pmessage"):
                self._on_message(message)

    async def _read_shards_forever(self) -> None:
        """The sharded subscriptions' reader (Redis Cluster); failures trigger the same
        reconnect as the main reader's."""
        while True:
            if not self.healthy or not self._shard_channels():
                await asyncio.sleep(0.1)  # nothing to read yet, or the main reader reconnects
                continue
            message = await self._read_one(
                lambda: self._shards.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=1.0
                )
            )
            if message is not None and message["type"] == "smessage":
                self._on_message(message)

    async def _read_one(self, read: Callable[[], Awaitable[Any]]) -> Any:
        """One message, or None; any failure (driver, socket or state) marks the feed
        unhealthy, which makes the main reader reconnect everything."""
        try:
            return await read()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self.healthy = False
            log.warning("live feed lost its Redis connection: %s", error)
            return None

    def _shard_channels(self) -> list[str]:
        return list(self._channels) if self._sharded else []

    async def _reconnect(self) -> None:
        """A fresh pub/sub connection, every subscription again, then the gaps filled."""
        async with self._lock:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()
            self._pubsub = self._client.pubsub()
            await self._pubsub.subscribe(_CONTROL, *([] if self._sharded else self._channels))
            if self._sharded:
                with contextlib.suppress(RedisError, OSError):
                    await self._shards.aclose()
                self._shards = self._client.pubsub()
                if self._channels:
                    await self._shards.ssubscribe(*self._channels)
            if self._patterns:
                await self._pubsub.psubscribe(*self._patterns)
            for channel, callbacks in self._channels.items():
                after = max(self._last.get(channel, 0), self._baseline.get(channel, 0))
                for event in await self._resume(channel, after):
                    self._dispatch(channel, event, callbacks)
            self.healthy = True
        log.warning("live feed reconnected and caught up from the streams")
