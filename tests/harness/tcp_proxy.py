"""A loopback TCP proxy whose connections a test can cut, silence and restore, to rehearse network
faults between replaybus and Redis or PostgreSQL. It runs its own event loop in a thread, so it
keeps forwarding while the test blocks (for instance while a server process starts)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["TcpProxy", "tcp_proxy"]


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self.accepted = 0  # connections accepted so far
        self._cut = False
        self._speaking: asyncio.Event | None = None  # made on the proxy's own loop
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._black_holed: set[asyncio.StreamWriter] = set()

        self.loop: asyncio.AbstractEventLoop | None = None

    def cut(self) -> None:
        """Close every open connection; refuse new ones until `restore()`."""
        self._call(self._cut_now)

    def silence(self) -> None:
        """Stop answering, as a paused server would: open connections
        stay open but carry nothing more either way, new ones are accepted and left waiting.
        Nothing is dropped: what was sent meanwhile goes on after `restore()`."""
        self._call(lambda: self._speaking_event().clear())

    def black_hole(self) -> None:
        """The connections open now carry nothing more, for good, and are never closed, as when
        a network path dies without a reset; new connections are forwarded as usual."""
        self._call(lambda: self._black_holed.update(self._writers))

    def retarget(self, target_port: int) -> None:
        """Close every open connection and forward new ones to `target_port`, as when another
        server takes over the address (a promoted replica behind a virtual IP)."""

        def switch() -> None:
            self._cut_now()
            self.target_port = target_port
            self._restore_now()

        self._call(switch)

    def restore(self) -> None:
        """Forward again, after `cut()` or `silence()`."""
        self._call(self._restore_now)

    def _call(self, action: Callable[[], None]) -> None:
        assert self.loop is not None
        done = threading.Event()

        def run() -> None:
            action()
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(10), "the proxy's loop did not answer"

    def _cut_now(self) -> None:
        self._cut = True
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _restore_now(self) -> None:
        self._cut = False
        self._speaking_event().set()

    def _speaking_event(self) -> asyncio.Event:
        """Set while the proxy forwards (not silenced)."""
        if self._speaking is None:
            self._speaking = asyncio.Event()
            self._speaking.set()
        return self._speaking

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        before_write: Callable[[bytes], Awaitable[None]] | None = None,
    ) -> None:
        """Copy one direction until it ends; `before_write` sees (and may hold) each chunk."""
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await reader.read(65536):
                await self._speaking_event().wait()
                if writer in self._black_holed:
                    continue
                if before_write is not None:
                    await before_write(chunk)
                writer.write(chunk)
                await writer.drain()
        if writer not in self._black_holed:  # a black hole never tells the other side either
            writer.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        self.accepted += 1
        self._writers.add(writer)  # so that a cut while it waits closes it
        await self._speaking_event().wait()
        if writer.transport.is_closing():
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port
            )
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        await self._forward(reader, writer, upstream_reader, upstream_writer)

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream_reader: asyncio.StreamReader,
        upstream_writer: asyncio.StreamWriter,
    ) -> None:
        """Carry one connection both ways (a subclass may forward differently)."""
        self._start_pipes(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    def _start_pipes(self, *pipes: Coroutine[Any, Any, None]) -> None:
        tasks = [asyncio.create_task(pipe) for pipe in pipes]
        self._tasks.update(tasks)
        for task in tasks:
            task.add_done_callback(self._tasks.discard)


P = TypeVar("P", bound="TcpProxy")


@contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    with running_proxy(TcpProxy(target_port)) as proxy:
        yield proxy


@contextmanager
def running_proxy(proxy: P) -> Iterator[P]:
    """Serve `proxy` (a TcpProxy, or one that changes how it forwards) on its own loop thread."""
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        proxy.loop = asyncio.get_running_loop()
        server = await asyncio.start_server(proxy._accept, "127.0.0.1", 0)
        proxy.port = server.sockets[0].getsockname()[1]
        ready.set()
        await stop.wait()
        server.close()
        proxy._cut_now()
        for task in list(proxy._tasks):
            task.cancel()
        await asyncio.gather(*proxy._tasks, return_exceptions=True)
        await server.wait_closed()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the proxy did not start"
    try:
        yield proxy
    finally:
        assert proxy.loop is not None
        assert stop is not None
        proxy.loop.call_soon_threadsafe(stop.set)
        thread.join(10)
