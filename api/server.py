"""Running the app under uvicorn, with an explicit drain on shutdown and read deadlines."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, MutableMapping
from types import FrameType
from typing import Any, cast

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from api.body import body_late, server_keeps_deadline
from api.services import Lifecycle

__all__ = ["ReplaybusServer", "bind_socket", "read_timeout_protocol"]


class ReplaybusServer(uvicorn.Server):
    """On SIGINT/SIGTERM, sets the lifecycle's draining event first (readiness fails, SSE streams
    end with a `retry:` hint), then lets uvicorn close listeners and wait for open requests."""

    def __init__(
        self,
        config: uvicorn.Config,
        lifecycle: Lifecycle,
        on_started: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self._lifecycle = lifecycle
        self._on_started = on_started
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)
        if self.started and self._on_started is not None:
            self._on_started()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._lifecycle.draining.set)
        super().handle_exit(sig, frame)


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0 picks a free one; the caller reads the real port back)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


class _ReadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on reading requests, which uvicorn lacks: a
    client that sends nothing, or its headers a byte at a time, would hold a connection forever.

    - Headers must be complete within `header_timeout` of the connection opening or of the
      first byte of a following request (between requests the keep-alive timeout applies), or
      the connection is closed: there is no request yet to answer.
    - A body must be complete within `body_timeout` of the headers. The app answers a body it is
      reading late with 408 (`api.body`: this protocol keeps that deadline for it, and wakes its
      read when it passes); here, a body still arriving once that time has passed and the
      response is complete (one that was answered without reading it) closes the connection,
      since every byte received would otherwise push the keep-alive timeout back.

    One timer per connection serves every deadline: each request only moves the deadline, and
    the timer, never set further than the shorter of the two timeouts ahead (so no deadline set
    later can fall before it), finds on waking whether the current deadline has passed, and
    otherwise sleeps again.
    """

    header_timeout = 10.0
    body_timeout = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._timer: asyncio.TimerHandle | None = None
        self._step = min(self.header_timeout, self.body_timeout)
        self._deadline = 0.0
        self._expire: Callable[[], None] | None = None
        self._body_overdue = False

    def _arm(self, delay: float, expire: Callable[[], None]) -> None:
        now = self.loop.time()
        self._deadline = now + delay
        self._expire = expire
        if self._timer is None:
            self._sleep(now)

    def _sleep(self, now: float) -> None:
        """Wake at the deadline, or sooner: a deadline set later may be `_step` from then."""
        self._timer = self.loop.call_at(min(self._deadline, now + self._step), self._check_deadline)

    def _disarm(self) -> None:
        self._expire = None

    def _check_deadline(self) -> None:
        self._timer = None
        expire = self._expire
        if expire is None:
            return
        now = self.loop.time()
        if now < self._deadline:  # moved on since
            self._sleep(now)
            return
        self._expire = None
        expire()

    def _close(self) -> None:
        if not self.transport.is_closing():
            self.transport.close()

    def _headers_overdue(self) -> None:
        self._close()

    def _body_late(self) -> None:
        self._body_overdue = True
        cycle: RequestResponseCycle | None = self.cycle  # None before the first request
        if cycle is None:
            return
        if cycle.response_complete:
            self._close()
        else:
            body_late(cast("MutableMapping[str, Any]", cycle.scope))
            cycle.message_event.set()  # the app's pending read sees it at once

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout, self._headers_overdue)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_overdue = False
        self._arm(self.header_timeout, self._headers_overdue)

    def on_headers_complete(self) -> None:
        self._arm(self.body_timeout, self._body_late)
        super().on_headers_complete()
        if self.cycle is not None and self.cycle.scope is self.scope:
            server_keeps_deadline(cast("MutableMapping[str, Any]", self.scope))

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._body_overdue:
            self._close()


def read_timeout_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """The HTTP protocol class for `uvicorn.Config(http=...)`, with these read deadlines."""
    return type(
        "ReadTimeoutProtocol",
        (_ReadTimeoutProtocol,),
        {"header_timeout": header_timeout, "body_timeout": body_timeout},
    )
