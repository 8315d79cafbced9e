"""Running the app under uvicorn, with an explicit drain on shutdown."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn

from api.services import Lifecycle

__all__ = ["ReplaybusServer", "bind_socket"]


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
