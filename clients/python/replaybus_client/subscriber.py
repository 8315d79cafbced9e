"""Subscribing over Server-Sent Events, Bayeux long-polling or history pulls, resuming after any
interruption from the last event the caller has processed.

An event counts as processed when the caller asks for the next one (`async for` moves on): only
then is its ReplayId saved as the position, so a crash while handling an event replays it rather
than skipping it. Nothing is read from the server before the caller asks for it (SSE), or more
than one long-poll reply (Bayeux) or history page, so memory stays bounded however slow the
caller is.

A gap (events that can no longer be delivered) reaches the caller the same way on every
transport: one `Gap`, passed to `on_gap` (or raised as GapError) before any event after it, and
the saved position only moves past it once an event after it has been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, NoReturn

import httpx

from replaybus_client.auth import TokenSource
from replaybus_client.checkpoints import CheckpointStore, MemoryCheckpoints
from replaybus_client.errors import Gap, GapError, RequestFailed
from replaybus_client.retry import backoff, retry_after
from replaybus_client.wire import Event, bayeux_event, channel_top, channel_window, envelope_event

__all__ = ["Event", "Subscriber", "channel_top"]

log = logging.getLogger("replaybus_client")

ALL_RETAINED = -2
NEW_ONLY = -1
_RETRIED_STATUSES = frozenset({429, 502, 503, 504})
_BAYEUX_VERSION = "58.0"
_HISTORY_PAGE = 100  # events per history request
#: How a Salesforce-compatible server refuses a replay from a position out of its window (on a
#: subscribe, or on a connect that ends the session for it).
_REPLAY_REFUSED = "400::The replayId"
Transport = Literal["sse", "bayeux", "history"]
GapHandler = Callable[[Gap], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class _Cursor:
    """Where the stream stands without a new event (an SSE `id:` alone, an empty history page)."""

    value: int | str


class _Retry(Exception):
    """The connection ended or was refused for now: reconnect after `wait` seconds."""

    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class Subscriber:
    """`async for event in Subscriber(url, "/event/Order_Placed__e", tokens):`

    `transport`: "sse" (a stream), "bayeux" (CometD long-polling) or "history" (pulls of
    `GET /v1/events`, every `poll_interval` seconds once caught up; one channel, no wildcard).
    `start`: -1 (new events only), -2 (everything retained) or a ReplayId to resume after; a
    position in `checkpoints` wins over it. `on_gap`: called with a `Gap` when events were
    lost (they aged out of retention while the subscriber was away), before the events after
    it; without it, GapError is raised and the saved position stays before the gap.
    """

    def __init__(
        self,
        base_url: str,
        channel: str,
        tokens: TokenSource,
        *,
        transport: Transport = "sse",
        start: int = NEW_ONLY,
        checkpoints: CheckpointStore | None = None,
        on_gap: GapHandler | None = None,
        reconnect_cap: float = 30.0,
        poll_interval: float = 1.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        if not channel.startswith("/"):
            raise ValueError(f"channel {channel!r} must start with '/'")
        if transport not in ("sse", "bayeux", "history"):
            raise ValueError("transport is 'sse', 'bayeux' or 'history'")
        self._wildcard = "*" in channel
        if transport != "sse" and self._wildcard:
            raise ValueError(
                f"the {transport} transport follows one channel: subscribe to a wildcard over SSE"
            )
        self.channel = channel
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._transport = transport
        self._start = start
        self._checkpoints = checkpoints or MemoryCheckpoints()
        self._on_gap = on_gap
        self._reconnect_cap = reconnect_cap
        self._poll_interval = poll_interval
        self._own_http = http is None
        # No read timeout: a stream is quiet between heartbeats and a long poll is held.
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(30.0, read=None))
        self._position: int | None = None
        self._token_refused = False  # a 401 since the last accepted connection
        self._iterator: AsyncGenerator[Event, None] | None = None
        self.reconnects = 0

    @property
    def position(self) -> int | None:
        """The ReplayId of the last event processed (None before the first)."""
        return self._position

    async def aclose(self) -> None:
        """Stop: the open stream or long poll is closed, then the HTTP client (if owned)."""
        if self._iterator is not None:
            await self._iterator.aclose()
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> Subscriber:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[Event]:
        self._iterator = self._events()
        return self._iterator

    async def _events(self) -> AsyncGenerator[Event, None]:
        saved = await self._checkpoints.load(self.channel)
        cursor: int | str = saved if saved is not None else self._start
        if saved is not None:
            self._position = saved
        elif cursor == NEW_ONLY and self._transport == "bayeux" and not self._wildcard:
            # Bayeux has no position for "new events" until the first one arrives: take the
            # channel's top now, so a reconnect before then resumes without a hole (SSE sends
            # its opening position itself).
            cursor = await channel_top(self._http, self._base_url, self.channel, self._tokens)
        failures = 0
        read = {"sse": self._sse, "bayeux": self._bayeux, "history": self._history}[self._transport]
        while True:
            try:
                async with contextlib.aclosing(read(cursor)) as items:
                    async for item in items:
                        failures = 0
                        if isinstance(item, Gap):
                            await self._gap(item)
                            continue
                        if isinstance(item, _Cursor):
                            cursor = item.value
                            continue
                        yield item
                        # The caller asked for the next event: this one is processed.
                        self._position = item.replay_id
                        cursor = item.replay_id
                        await self._checkpoints.save(self.channel, item.replay_id)
            except (_Retry, httpx.TransportError) as reason:
                failures += 1
                self.reconnects += 1
                wait = max(
                    backoff(failures, cap=self._reconnect_cap), getattr(reason, "wait", 0) or 0
                )
                log.info("subscriber of %s reconnects in %.2fs: %s", self.channel, wait, reason)
                await asyncio.sleep(wait)

    async def _gap(self, gap: Gap) -> None:
        if self._on_gap is None:
            raise GapError(gap)
        outcome = self._on_gap(gap)
        if inspect.isawaitable(outcome):
            await outcome

    # -- Server-Sent Events ----------------------------------------------------------------

    async def _sse(self, cursor: int | str) -> AsyncGenerator[Event | Gap | _Cursor, None]:
        token = await self._tokens.token(self._http)
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        params = {}
        if isinstance(cursor, int) and cursor >= 0:
            headers["Last-Event-ID"] = str(cursor)
        elif isinstance(cursor, int):
            params["replayId"] = str(cursor)
        else:
            headers["Last-Event-ID"] = cursor  # a wildcard stream's own cursor
        url = f"{self._base_url}/v1/stream{self.channel}"
        async with self._http.stream("GET", url, headers=headers, params=params) as response:
            if response.status_code != 200:
                await response.aread()
                self._refused(response)
            self._token_refused = False
            fields: dict[str, str] = {}
            data: list[str] = []
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if name == "data":
                        data.append(value)
                    elif name in ("id", "event"):
                        fields[name] = value
                    continue
                item = self._sse_item(fields, data)
                fields, data = {}, []
                if item is not None:
                    yield item
        raise _Retry("the stream ended")

    def _sse_item(self, fields: dict[str, str], data: list[str]) -> Event | Gap | _Cursor | None:
        if not data:  # a cursor without an event (or nothing at all)
            cursor = fields.get("id")
            if cursor is None:
                return None
            return _Cursor(int(cursor) if cursor.lstrip("-").isdigit() else cursor)
        document = json.loads("\n".join(data))
        if fields.get("event") == "gap":
            return self._gap_of(document)
        return envelope_event(document)

    def _gap_of(self, document: dict[str, Any]) -> Gap:
        """A gap as the server reports it (SSE `event: gap`, the history `gap` object, a Bayeux
        `ext.replaybus.gaps` entry), with the channel it concerns filled in."""
        channel = document.get("channel")
        channels = document.get("channels")
        if channel is None and not self._wildcard:
            channel = self.channel
        if channels is None and channel is None:
            channels = self.channel  # a wildcard stream's gap without a narrower pattern
        return Gap(
            requested=document.get("requested"),
            earliest=document.get("earliest"),
            latest=document.get("latest"),
            channel=channel,
            channels=channels,
            reason=document.get("reason"),
        )

    def _token_refused_once(self, reason: str, details: dict[str, Any]) -> NoReturn:
        """A refused token is renewed once; refused again, it is for good."""
        if self._token_refused:
            raise RequestFailed(401, "unauthenticated", reason, details)
        self._token_refused = True
        self._tokens.invalidate()
        raise _Retry(f"{reason}; getting a new token", 0.0)

    def _refused(self, response: httpx.Response) -> NoReturn:
        if response.status_code == 401:
            self._token_refused_once("the token was refused", {})
        if response.status_code in _RETRIED_STATUSES:
            raise _Retry(
                f"HTTP {response.status_code}", retry_after(response.headers.get("retry-after"))
            )
        raise RequestFailed.of(response)

    # -- Bayeux ----------------------------------------------------------------------------

    async def _bayeux_post(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        token = await self._tokens.token(self._http)
        response = await self._http.post(
            f"{self._base_url}/cometd/{_BAYEUX_VERSION}",
            json=messages,
            headers={"Authorization": f"Bearer {token}"},
        )
        if response.status_code != 200:
            self._refused(response)
        replies = response.json()
        if not isinstance(replies, list):
            raise _Retry("the server answered something other than a Bayeux array")
        return replies

    async def _bayeux(self, cursor: int | str) -> AsyncGenerator[Event | Gap | _Cursor, None]:
        position = cursor if isinstance(cursor, int) else NEW_ONLY
        [handshake] = await self._bayeux_post(
            [
                {
                    "channel": "/meta/handshake",
                    "version": "1.0",
                    "supportedConnectionTypes": ["long-polling"],
                    "ext": {"replay": True},
                }
            ]
        )
        if not handshake.get("successful"):
            self._bayeux_refused(handshake)
        self._token_refused = False
        client_id = handshake["clientId"]
        while True:
            subscribe = {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": self.channel,
                "ext": {"replay": {self.channel: position}},
            }
            [reply] = await self._bayeux_post([subscribe])
            if reply.get("successful"):
                break
            error = str(reply.get("error", ""))
            if error.startswith(_REPLAY_REFUSED) and position >= 0:
                # The position fell out of the window (a server may also end a live session for
                # that, so the resubscribe lands here): report it, then go on from the oldest
                # retained event. A window that moved on meanwhile is refused again, and so
                # reported again, rather than skipped.
                window = await self._window()
                yield Gap(
                    requested=position,
                    earliest=window["earliest"],
                    latest=window["latest"],
                    channel=self.channel,
                    reason=error,
                )
                position = int(window["lowWaterMark"])
                continue
            self._bayeux_refused(reply)
        connect = {
            "channel": "/meta/connect",
            "clientId": client_id,
            "connectionType": "long-polling",
        }
        while True:
            replies = await self._bayeux_post([connect])
            pause = 0.0
            for message in replies:
                if message.get("channel") != "/meta/connect":
                    continue
                if not message.get("successful"):
                    if str(message.get("error", "")).startswith(_REPLAY_REFUSED):
                        # The server ended the session: its position fell out of the window.
                        # Subscribing again from the last event processed reports the gap.
                        raise _Retry("the session's position fell out of the window", 0.0)
                    self._bayeux_refused(message)
                # A server sending clients away together (a drain) spreads their returns.
                pause = float((message.get("advice") or {}).get("interval", 0)) / 1000
                # The reply's gaps come before its events: they say where those start.
                for gap in ((message.get("ext") or {}).get("replaybus") or {}).get("gaps", []):
                    yield self._gap_of(gap)
            for message in replies:
                channel = message.get("channel")
                if channel == self.channel and isinstance(message.get("data"), dict):
                    yield bayeux_event(self.channel, message["data"])
            if pause > 0:
                await asyncio.sleep(pause)

    async def _window(self) -> dict[str, Any]:
        try:
            return await channel_window(self._http, self._base_url, self.channel, self._tokens)
        except RequestFailed as failure:
            if failure.status in _RETRIED_STATUSES:
                raise _Retry(f"HTTP {failure.status} reading the window") from failure
            raise

    # -- history pulls -----------------------------------------------------------------------

    async def _history(self, cursor: int | str) -> AsyncGenerator[Event | Gap | _Cursor, None]:
        position = cursor if isinstance(cursor, int) else NEW_ONLY
        url = f"{self._base_url}/v1/events{self.channel}"
        while True:
            token = await self._tokens.token(self._http)
            response = await self._http.get(
                url,
                params={"after": position, "limit": _HISTORY_PAGE},
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code != 200:
                self._refused(response)
            self._token_refused = False
            page = response.json()
            if page.get("gap") is not None:
                yield self._gap_of(page["gap"])
            for document in page["events"]:
                yield envelope_event(document)
            position = int(page["next"])
            if not page["events"]:
                yield _Cursor(position)
                await asyncio.sleep(self._poll_interval)

    def _bayeux_refused(self, reply: dict[str, Any]) -> NoReturn:
        error = str(reply.get("error", ""))
        advice = reply.get("advice") or {}
        failure = ((reply.get("ext") or {}).get("sfdc") or {}).get("failureReason", "")
        if error.startswith("401::") or str(failure).startswith("401::"):
            self._token_refused_once(f"authentication refused ({error or failure})", reply)
        if advice.get("reconnect") in ("handshake", "retry") or error.startswith(
            "403::Unknown client"
        ):
            raise _Retry(
                f"the server asks to reconnect ({error})", advice.get("interval", 0) / 1000
            )
        status = int(error.split("::", 1)[0]) if error[:3].isdigit() else 400
        raise RequestFailed(status, "bayeux_error", error or str(failure), reply)
