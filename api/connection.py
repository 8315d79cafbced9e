"""Watching an HTTP connection from inside a long-lived response, and driving ASGI awaitables
by hand so that thousands of held connections need no task each."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable, Generator
from typing import Any

from starlette.types import Receive

__all__ = ["DisconnectWatch", "Step", "resumed"]

#: An awaitable's iterator (`awaitable.__await__()`), driven by hand.
Step = Generator[Any, Any, Any]


@types.coroutine
def resumed(step: Step, waiting: Any) -> Generator[Any, Any, Any]:
    """Await the rest of an awaitable already driven by hand to its first wait (`waiting`,
    what its step yielded): the awaiting task waits on that, then drives the step on. Returns
    what the awaitable returns."""
    while True:
        try:
            sent = yield waiting
        except BaseException as error:
            try:
                waiting = step.throw(error)
            except StopIteration as done:
                return done.value
        else:
            try:
                waiting = step.send(sent)
            except StopIteration as done:
                return done.value


class DisconnectWatch:
    """Calls `on_gone` once the client has gone away (ASGI `http.disconnect`), or once
    `receive` fails, without a task of its own: `receive` is driven by hand and resumed from
    the done-callback of the future it waits on. (A server whose `receive` waits on anything
    but an asyncio future gets a task for it instead.) `close` stops watching."""

    __slots__ = ("_on_gone", "_receive", "_step", "_task")

    def __init__(self, receive: Receive, on_gone: Callable[[], None]) -> None:
        self._receive = receive
        self._on_gone = on_gone
        self._step: Step | None = None
        self._task: asyncio.Task[None] | None = None
        self._drive(None)

    def close(self) -> None:
        self._on_gone = _ignore
        step, self._step = self._step, None
        if step is not None:
            step.close()
        if self._task is not None:
            self._task.cancel()

    def _drive(self, step: Step | None) -> None:
        """Run `receive` (resuming `step`, else starting anew) until it has to wait."""
        while True:
            if step is None:
                step = self._receive().__await__()
            try:
                waiting = step.send(None)
            except StopIteration as done:
                step = None
                if done.value["type"] == "http.disconnect":
                    self._gone()
                    return
                continue
            except (Exception, asyncio.CancelledError):
                self._gone()
                return
            break
        self._step = step
        if isinstance(waiting, asyncio.Future):
            waiting.add_done_callback(self._resume)
        else:
            self._task = asyncio.ensure_future(self._finish(step, waiting))

    def _resume(self, _: asyncio.Future[Any]) -> None:
        if self._step is not None:
            self._drive(self._step)

    async def _finish(self, step: Step, waiting: Any) -> None:
        self._step = None
        try:
            message = await resumed(step, waiting)
            while message["type"] != "http.disconnect":
                message = await self._receive()
        except Exception:
            pass  # a `receive` that fails: the client is as good as gone, as in `_drive`
        finally:
            self._gone()  # reports nothing once `close` (which cancels this task) ran

    def _gone(self) -> None:
        self._step = None
        self._on_gone()


def _ignore() -> None:
    pass
