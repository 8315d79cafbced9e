"""`GET /v1/stream/{channel}`: Server-Sent Events with resume by ReplayId."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.auth import authenticate
from api.connection import DisconnectWatch, Step, resumed
from api.services import Services
from app.access import Principal
from app.admission import Place, jittered
from app.catalog import Tenant
from app.channels import subscribable_pattern
from app.delivery import Delivery
from app.errors import (
    AuthenticationFailed,
    Draining,
    EngineUnavailable,
    InvalidReplayId,
    PermissionDenied,
    ServiceUnavailable,
    TooManySubscribers,
)
from app.hub import SubscriberOverflow
from app.model import Topic
from app.recovery import NEW_ONLY, Gap, parse_position
from app.settings import Settings
from app.sse import comment_frame, event_frame, retry_frame
from app.streaming import ChannelStream, LiveGap, StreamItem, open_stream

__all__ = ["stream", "tick_interval"]

log = logging.getLogger("replaybus.sse")

_HEADERS = {
    "Cache-Control": "no-store",
    "X-Accel-Buffering": "no",
    "Connection": "keep-alive",
}


def gap_frame(gap: Gap) -> bytes:
    data = {"requested": gap.requested, "earliest": gap.earliest, "latest": gap.latest}
    return event_frame(orjson.dumps(data), event="gap")


#: The `id:` a wildcard stream gives its client, so a reconnect is recognisable as one.
LIVE_CURSOR = "live"
_LIVE_ONLY_GAP = event_frame(
    orjson.dumps(
        {
            "requested": None,
            "earliest": None,
            "latest": None,
            "reason": "wildcard streams are live-only: events published while this client was "
            "disconnected are not replayed; subscribe to each channel to resume by ReplayId",
        }
    ),
    event="gap",
)


def live_gap_frame(gap: LiveGap) -> bytes:
    data = {
        "requested": None,
        "earliest": None,
        "latest": None,
        "channels": gap.pattern,
        "reason": "live events on these channels may have been lost on their way to this "
        "server and are not replayed on a wildcard stream; subscribe to each channel to resume "
        "by ReplayId",
    }
    return event_frame(orjson.dumps(data), event="gap")


def _frame(item: StreamItem) -> bytes:
    if isinstance(item, Gap):
        return gap_frame(item)
    if isinstance(item, LiveGap):
        return live_gap_frame(item)
    return item.sse_frame()


def _encode(items: Sequence[StreamItem]) -> bytes:
    return b"".join(_frame(item) for item in items)


def _requested_position(request: Request, wildcard: bool) -> int:
    """`Last-Event-ID` (sent by EventSource on reconnect) wins over `?replayId=`; default -1."""
    last_event_id = request.headers.get("last-event-id")
    query = request.query_params.get("replayId")
    if wildcard:
        if query is not None and parse_position(query) != NEW_ONLY:
            raise InvalidReplayId(
                "wildcard streams deliver live events only: omit replayId or use -1"
            )
        return NEW_ONLY
    if last_event_id:
        return parse_position(last_event_id)
    return parse_position(query) if query is not None else NEW_ONLY


class _EventStreamResponse(Response):
    """Writes one subscriber's stream. Every end the server chooses (drain, token expiry,
    falling behind, a failure) closes with a `retry:` hint so the client reconnects and resumes.

    No task per stream besides the response's own, which sleeps while the stream is live and
    idle; the client's disconnect is watched from a callback (`DisconnectWatch`). Live events
    the fan-out hands over while the stream waits with nothing queued (`_direct`) are gathered
    and written from the node's one `Ticker.soon` callback (`flush`), one write per stream for
    everything that arrived in that round of the event loop, without waking the stream's task:
    the write is driven at once, and only one that must wait for the socket (flow control) is
    left to the stream's task to finish, within the send timeout. Whenever the task runs, it
    writes what was gathered first, so order is kept. Heartbeats, token expiry, draining and
    the periodic re-checks come from the node's `Ticker` too."""

    media_type = "text/event-stream"

    __slots__ = (
        "_check_interval",
        "_ending",
        "_failure",
        "_heartbeat",
        "_held",
        "_loop",
        "_metrics",
        "_next_check",
        "_opening",
        "_outbox",
        "_pending",
        "_principal",
        "_renewed",
        "_retry",
        "_send",
        "_send_timeout",
        "_services",
        "_stalled",
        "_stream",
        "_written_at",
        "background",
        "raw_headers",
        "status_code",
    )

    def __init__(
        self,
        stream: ChannelStream,
        held: _Held,
        services: Services,
        principal: Principal,
        opening: bytes,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.raw_headers = list(_RAW_HEADERS)  # a copy: middleware may add to it
        self._stream = stream
        self._held = held
        self._services = services
        self._principal = principal
        self._opening = opening
        self._metrics = services.metrics
        self._loop = asyncio.get_running_loop()
        self._send: Send | None = None
        #: A write the fan-out began that waits for the socket: the stream's task finishes it.
        self._pending: tuple[Step, Any] | None = None
        self._failure: Exception | None = None  # raised by a write the fan-out began
        self._outbox: list[Delivery] | None = None  # gathered for `flush`; None once closed
        self._ending: int | None = None  # _GONE or _ENDED once the stream must end
        self._stalled = False
        self._written_at = self._loop.time()  # of the last write: heartbeats follow silence
        settings = services.settings
        self._heartbeat = settings.sse_heartbeat
        self._check_interval = min(settings.sse_heartbeat, settings.catalog_cache_ttl)
        self._next_check = self._written_at + self._check_interval
        self._renewed = services.clock.now_us()
        # Two heartbeats a client could not take: it stopped reading (floor: slow links).
        self._send_timeout = max(10.0, 2 * settings.sse_heartbeat)
        # Each stream suggests its own delay, so clients cut off together come back spread out.
        retry = jittered(settings.sse_retry, settings.reconnect_jitter)
        self._retry = retry_frame(int(retry * 1000))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.sse_streams.inc()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            self._send = send
            opened = await self._write(self._retry[:-1] + self._opening + b"\n")
            if opened and await self._serve(receive):
                # The client is there and reading: tell it when to come back.
                await self._write(self._retry, more=False)
        finally:
            try:
                await self._held.release()
            finally:
                self._metrics.sse_streams.dec()

    async def _serve(self, receive: Receive) -> bool:
        """Runs the stream until it must end; returns whether the client should still be told
        when to come back (it is there and reading)."""
        ticker = self._services.ticker
        watch = DisconnectWatch(receive, self._gone)
        ticker.add(self)
        self._outbox = []
        self._stream.write_through(self._direct)
        try:
            return await self._pump()
        except Exception:
            log.error("SSE stream failed", exc_info=True)
            return self._ending != _GONE and not self._stalled and self._pending is None
        finally:
            self._stream.write_through(None)
            self._outbox = None
            ticker.discard(self)
            watch.close()
            if self._pending is not None:  # never finished: the stream was cancelled
                self._pending[0].close()
                self._pending = None

    def tick(self, now: float) -> None:
        """The node's Ticker: ends the stream when the node drains or the token expires, and
        wakes it when a heartbeat or a re-check is due."""
        if self._ending is not None:
            return
        services = self._services
        expired = self._principal.expires_at <= services.clock.now_us() / 1_000_000
        if expired or services.lifecycle.draining.is_set():
            self._end(_ENDED)
        elif now - self._written_at >= self._heartbeat or now >= self._next_check:
            self._stream.wake()

    def _end(self, reason: int) -> None:
        if self._ending is None:
            self._ending = reason
            self._stream.wake()

    def _gone(self) -> None:
        self._end(_GONE)

    def _direct(self, delivery: Delivery) -> bool:
        """A live delivery from the fan-out, while the stream waits with nothing queued."""
        outbox = self._outbox
        if outbox is None or self._pending is not None or self._ending is not None:
            return False
        if self._failure is not None:
            return False
        if not outbox:
            self._services.ticker.soon(self)
        outbox.append(delivery)
        return True

    def flush(self) -> None:
        """Write what `_direct` gathered, as one write."""
        outbox = self._outbox
        if not outbox:
            return
        self._outbox = []
        try:
            written = self._begin(_encode(outbox), True)
        except Exception as error:  # the stream's task raises it
            self._failure = error
            self._stream.wake()
            return
        if not written:
            self._stream.wake()
        self._record(outbox)

    def _begin(self, body: bytes, more: bool) -> bool:
        """Start writing `body`; True once written. The ASGI send is driven at once: it
        completes unless the socket is full, and a send that must wait is kept in `_pending`
        for the stream's task to finish."""
        assert self._send is not None
        message = {"type": "http.response.body", "body": body, "more_body": more}
        write = self._send(message).__await__()
        try:
            waiting = write.send(None)
        except StopIteration:
            self._written_at = self._loop.time()
            return True
        self._pending = (write, waiting)
        return False

    async def _settle(self) -> bool:
        """Finish a write that waits for the socket, within the send timeout: False if the
        client stopped reading. Raises what a write the fan-out began raised."""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        if self._pending is None:
            return True
        write, waiting = self._pending
        try:
            async with asyncio.timeout(self._send_timeout):
                await resumed(write, waiting)
        except TimeoutError:
            self._stopped_reading()
            return False
        finally:
            self._pending = None
        self._written_at = self._loop.time()
        return True

    async def _write(self, body: bytes, *, more: bool = True) -> bool:
        self._begin(body, more)
        return await self._settle()

    def _stopped_reading(self) -> None:
        self._stalled = True
        log.warning("SSE client stopped reading; closing its stream")
        self._metrics.slow_consumers.labels("sse", "not_reading").inc()

    async def _pump(self) -> bool:
        stream = self._stream
        while True:
            try:
                items = await stream.next_batch(None)
            except SubscriberOverflow:
                self.flush()
                if not await self._settle():
                    return False
                log.warning("SSE subscriber fell behind at replayId %s", stream.position)
                self._metrics.slow_consumers.labels("sse", "behind").inc()
                return await self._write(comment_frame("too far behind: reconnect to catch up"))
            self.flush()  # gathered before anything queued since
            if not await self._settle():
                return False
            if self._ending is not None:
                return self._ending != _GONE
            held = self._held
            if held.replay is not None and not stream.catching_up:
                held.replay.leave()  # caught up: the replay's place goes to the next one
                held.replay = None
            if items:
                if not await self._write(_encode(items)):
                    return False
                self._record(items)
                continue
            now = self._loop.time()
            if now - self._written_at >= self._heartbeat and not await self._write(_HEARTBEAT):
                return False
            if now >= self._next_check:
                self._next_check = now + self._check_interval
                if not await self._recheck():
                    return True

    def _record(self, items: Sequence[StreamItem]) -> None:
        deliveries = [item for item in items if isinstance(item, Delivery)]
        if deliveries:
            # Lag is observed on live writes only: a replay's events are as old as asked for.
            live = not self._stream.catching_up
            newest = deliveries[-1].event.created_us if live else None
            self._metrics.record_delivery(self._principal.tenant, "sse", len(deliveries), newest)
        if len(deliveries) < len(items):
            self._metrics.gaps.labels("sse").inc(len(items) - len(deliveries))

    async def _recheck(self) -> bool:
        """False when the stream must end: its client was revoked or its tenant suspended or
        deleted (the client then reconnects and is told why). Meanwhile keeps the lease alive."""
        services = self._services
        try:
            await services.directory.admit(self._principal)
        except (AuthenticationFailed, PermissionDenied):
            return False
        except ServiceUnavailable:
            pass  # a catalog this node has never reached: keep serving
        now = services.clock.now_us()
        lease = self._held.lease
        if lease is not None and now - self._renewed >= self._heartbeat * 1_000_000:
            self._renewed = now
            await lease.renew()
        return True


_GONE = 1  # the client disconnected
_ENDED = 2  # the server ends the stream (drain, token expiry)
_HEARTBEAT = comment_frame("heartbeat")
# No Content-Length: the stream is open-ended.
_RAW_HEADERS = [
    *((name.lower().encode(), value.encode()) for name, value in _HEADERS.items()),
    (b"content-type", b"text/event-stream; charset=utf-8"),
]


def tick_interval(settings: Settings) -> float:
    """How often the node's Ticker looks at its SSE streams: often enough for heartbeats and
    re-checks to be at most this late."""
    return min(1.0, settings.sse_heartbeat / 2, settings.catalog_cache_ttl)


def _opening(stream: ChannelStream, wildcard: bool, reconnecting: bool) -> bytes:
    """Fields sent right after the headers. An `id:` with no data sets the browser's last event
    ID without dispatching anything, so even a client that drops before its first event
    reconnects from the right position instead of from "new events only"."""
    if wildcard:
        cursor = b"id: " + LIVE_CURSOR.encode() + b"\n"
        return cursor + (b"\n" + _LIVE_ONLY_GAP[:-1] if reconnecting else b"")
    if stream.cursor is None:
        return b""
    return b"id: " + str(stream.cursor).encode() + b"\n"


class _Held:
    """What one stream holds until it ends, released in reverse order by `release`: its live
    subscription, its lease, its place among the replays and its place in the stream caps.
    (Plain fields rather than an AsyncExitStack, whose deque and closures every held stream
    would carry.)"""

    __slots__ = ("cap", "lease", "replay", "subscription")

    def __init__(self, cap: Callable[[], None]) -> None:
        self.cap = cap  # releases the stream's place in the caps
        self.replay: Place | None = None
        self.lease: _Lease | None = None
        self.subscription: AbstractAsyncContextManager[ChannelStream] | None = None

    async def release(self) -> None:
        try:
            if self.subscription is not None:
                await self.subscription.__aexit__(None, None, None)
        finally:
            try:
                if self.lease is not None:
                    await asyncio.shield(self.lease.release())
            finally:
                if self.replay is not None:
                    self.replay.leave()
                self.cap()


class _Lease:
    """This stream's place in its tenant's count of concurrent subscribers (shared by every
    node through the engine); it lapses by itself if the node dies."""

    def __init__(self, services: Services, tenant: Tenant) -> None:
        self._engine = services.engine
        self._releases = services.lease_releases
        self._tenant = tenant
        self._id = uuid.uuid4().hex
        self._ttl_us = int(max(30.0, 3 * services.settings.sse_heartbeat) * 1_000_000)

    async def acquire(self) -> None:
        cap = self._tenant.settings.max_subscribers
        tenant_id = self._tenant.tenant_id
        if not await self._engine.stream_admit(tenant_id, self._id, self._ttl_us, cap):
            raise TooManySubscribers(
                f"tenant {tenant_id} already has its maximum of {cap} concurrent subscribers "
                "(SSE streams and Bayeux clients together)",
                retry_after=5,
            )

    async def renew(self) -> None:
        try:
            await self._engine.stream_renew(self._tenant.tenant_id, self._id, self._ttl_us)
        except EngineUnavailable as error:
            log.warning("could not renew an SSE stream's lease: %s", error)

    async def release(self) -> None:
        async with self._releases:
            with contextlib.suppress(EngineUnavailable):
                await self._engine.stream_release(self._tenant.tenant_id, self._id)


async def stream(request: Request) -> Response:
    services: Services = request.app.state.services
    principal, tenant = await authenticate(request, services, allow_query=True)
    pattern = subscribable_pattern("/" + str(request.path_params["channel"]))
    principal.require("subscribe", pattern.text)
    if not pattern.is_wildcard:
        await services.publisher.definition(tenant, pattern.text)  # refuses undefined if required
    requested = _requested_position(request, pattern.is_wildcard)
    if services.lifecycle.draining.is_set():
        raise Draining("this node is shutting down: reconnect to another")
    settings = services.settings
    per_client = tenant.settings.max_streams_per_client or settings.sse_max_streams_per_client
    held = _Held(services.streams.enter((tenant.tenant_id, principal.identity), per_client))
    try:
        # Resuming or replaying reads history: a reconnect storm is mostly that, so it is
        # what the node admits only so many of at once.
        held.replay = None if requested == NEW_ONLY else services.replays.enter()
        lease = _Lease(services, tenant)
        await lease.acquire()
        held.lease = lease
        subscription = open_stream(
            services.engine,
            services.hub,
            Topic(principal.tenant, pattern.text),
            requested,
            is_wildcard=pattern.is_wildcard,
            capacity=settings.subscriber_queue_size,
            queue_bytes=settings.subscriber_queue_bytes,
            page_size=settings.history_max_limit,
            page_bytes=settings.history_max_bytes,
            on_history_read=services.metrics.replay_reads.labels("sse").inc,
        )
        channel_stream = await subscription.__aenter__()
        held.subscription = subscription
    except BaseException:
        await held.release()
        raise
    reconnecting = bool(request.headers.get("last-event-id"))
    opening = _opening(channel_stream, pattern.is_wildcard, reconnecting)
    return _EventStreamResponse(channel_stream, held, services, principal, opening)
