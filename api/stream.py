"""`GET /v1/stream/{channel}`: Server-Sent Events with resume by ReplayId.

Three tasks per connection: the pump (events and heartbeats), a disconnect watcher, and a guard
(drain, token expiry, revocation, a client that stopped reading, lease renewal); the first to
finish cancels the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from contextlib import AsyncExitStack

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from api.auth import authenticate
from api.connection import until_disconnected
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
from app.race import first_completed
from app.recovery import NEW_ONLY, Gap, parse_position
from app.sse import comment_frame, event_frame, retry_frame
from app.streaming import ChannelStream, LiveGap, StreamItem, open_stream

__all__ = ["stream"]

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


def _encode(items: list[StreamItem]) -> bytes:
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
    falling behind, a failure) closes with a `retry:` hint so the client reconnects and resumes."""

    media_type = "text/event-stream"

    def __init__(
        self,
        stream: ChannelStream,
        resources: AsyncExitStack,
        services: Services,
        principal: Principal,
        lease: _Lease,
        opening: bytes,
        replay: Place | None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(_HEADERS)  # no body, so no Content-Length: the stream is open-ended
        self._stream = stream
        self._resources = resources
        self._services = services
        self._principal = principal
        self._lease = lease
        self._opening = opening
        self._replay = replay
        self._metrics = services.metrics
        #: When the write in progress began (loop time), None between writes: the guard
        #: ends a stream whose client stopped reading (a timer per write would cost more).
        self._writing_since: float | None = None
        self._written_at = 0.0  # loop time of the last write: the guard sends heartbeats after
        self._stalled = False
        settings = services.settings
        self._heartbeat = settings.sse_heartbeat
        # Two heartbeats a client could not take: it stopped reading (floor: slow links).
        self._send_timeout = max(10.0, 2 * settings.sse_heartbeat)
        # Each stream suggests its own delay, so clients cut off together come back spread out.
        retry = jittered(settings.sse_retry, settings.reconnect_jitter)
        self._retry = retry_frame(int(retry * 1000))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self._metrics.sse_streams.inc()
        try:
            await self._serve(receive, send)
        finally:
            self._metrics.sse_streams.dec()

    async def _serve(self, receive: Receive, send: Send) -> None:
        async with self._resources:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            if not await self._final_write(send, self._retry[:-1] + self._opening + b"\n", True):
                return
            winner, failure = await first_completed(
                self._pump(send),
                until_disconnected(receive),
                self._guard(),
            )
            if failure is not None:
                log.error("SSE stream failed", exc_info=failure)
            # The client is there and reading: tell it when to come back. (After a write that
            # never finished, another would wait out the send timeout again.)
            if winner != 1 and not self._stalled and self._writing_since is None:
                await self._final_write(send, self._retry, False)

    async def _final_write(self, send: Send, body: bytes, more: bool) -> bool:
        """A write outside the pump (the opening, the last retry hint), with its own bound."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError:
            self._stopped_reading()
            return False
        self._written_at = asyncio.get_running_loop().time()
        return True

    async def _write(self, send: Send, body: bytes) -> None:
        self._writing_since = asyncio.get_running_loop().time()
        await send({"type": "http.response.body", "body": body, "more_body": True})
        self._writing_since = None
        self._written_at = asyncio.get_running_loop().time()

    def _stopped_reading(self) -> None:
        self._stalled = True
        log.warning("SSE client stopped reading; closing its stream")
        self._metrics.slow_consumers.labels("sse", "not_reading").inc()

    async def _pump(self, send: Send) -> None:
        while True:
            try:
                # No timer per wait: the guard wakes an idle stream when a heartbeat is due.
                items = await self._stream.next_batch(None)
            except SubscriberOverflow:
                log.warning("SSE subscriber fell behind at replayId %s", self._stream.position)
                self._metrics.slow_consumers.labels("sse", "behind").inc()
                await self._write(send, comment_frame("too far behind: reconnect to catch up"))
                return
            if self._replay is not None and not self._stream.catching_up:
                self._replay.leave()  # caught up: the replay's place goes to the next one
                self._replay = None
            body = _encode(items) if items else comment_frame("heartbeat")
            await self._write(send, body)
            if items:
                self._record(items)

    def _record(self, items: list[StreamItem]) -> None:
        deliveries = [item for item in items if isinstance(item, Delivery)]
        if deliveries:
            # Lag is observed on live writes only: a replay's events are as old as asked for.
            live = not self._stream.catching_up
            newest = deliveries[-1].event.created_us if live else None
            self._metrics.record_delivery(self._principal.tenant, "sse", len(deliveries), newest)
        if len(deliveries) < len(items):
            self._metrics.gaps.labels("sse").inc(len(items) - len(deliveries))

    async def _guard(self) -> None:
        """Returns when the stream must end for a reason of the server's: the node drains, the
        token expires, its client is revoked or its tenant suspended or deleted (the client
        then reconnects and is told why), or the client stopped reading (a write pending for
        the send timeout). Meanwhile keeps the stream's lease alive. One task watches all of
        these, so an idle stream costs as few tasks as it can. It also wakes the pump when a
        heartbeat is due (a timer per wait would cost every delivery)."""
        services = self._services
        draining = services.lifecycle.draining
        loop = asyncio.get_running_loop()
        interval = min(self._heartbeat, services.settings.catalog_cache_ttl, self._send_timeout / 6)
        renewed = services.clock.now_us()
        while True:
            remaining = self._principal.expires_at - services.clock.now_us() / 1_000_000
            if remaining <= 0:
                return
            heartbeat_due = self._written_at + self._heartbeat - loop.time()
            try:
                async with asyncio.timeout(max(0.0, min(interval, remaining, heartbeat_due))):
                    await draining.wait()
                return
            except TimeoutError:
                pass
            if loop.time() - self._written_at >= self._heartbeat:
                self._stream.wake()
            since = self._writing_since
            if since is not None and loop.time() - since >= self._send_timeout:
                self._stopped_reading()
                return
            try:
                await services.directory.admit(self._principal)
            except (AuthenticationFailed, PermissionDenied):
                return
            except ServiceUnavailable:
                pass  # a catalog this node has never reached: keep serving
            now = services.clock.now_us()
            if now - renewed >= self._heartbeat * 1_000_000:
                renewed = now
                await self._lease.renew()


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
    resources = AsyncExitStack()
    resources.callback(services.streams.enter((tenant.tenant_id, principal.identity), per_client))
    try:
        # Resuming or replaying reads history: a reconnect storm is mostly that, so it is
        # what the node admits only so many of at once.
        replay = None if requested == NEW_ONLY else services.replays.enter()
    except BaseException:
        await resources.aclose()
        raise
    if replay is not None:
        resources.callback(replay.leave)
    lease = _Lease(services, tenant)
    try:
        await lease.acquire()
    except BaseException:
        await resources.aclose()
        raise
    resources.push_async_callback(lambda: asyncio.shield(lease.release()))
    try:
        channel_stream = await resources.enter_async_context(
            open_stream(
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
        )
    except BaseException:
        await resources.aclose()
        raise
    reconnecting = bool(request.headers.get("last-event-id"))
    opening = _opening(channel_stream, pattern.is_wildcard, reconnecting)
    return _EventStreamResponse(
        channel_stream, resources, services, principal, lease, opening, replay
    )
