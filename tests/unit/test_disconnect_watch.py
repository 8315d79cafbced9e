"""Watching for the client's disconnect without a task: `on_gone` is called once the ASGI
`receive` says `http.disconnect`, never after `close`, and a `receive` that waits on something
other than a future is still watched (by a task), which reports a `receive` that fails as the
client gone."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Generator
from typing import Any

import pytest

from api.connection import DisconnectWatch

WAIT_S = 10.0


@types.coroutine
def bare_yield() -> Generator[None, None, None]:
    """Give the loop a turn without a future to wait on (as `asyncio.sleep(0)` does)."""
    yield


class Receive:
    """A server's `receive` for a GET: the request, then a wait until the client goes."""

    def __init__(self, *, yields_bare: bool = False) -> None:
        self.gone = asyncio.Event()
        self._request_sent = False
        self._yields_bare = yields_bare

    async def __call__(self) -> dict[str, Any]:
        if not self._request_sent:
            self._request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if self._yields_bare:
            while not self.gone.is_set():
                await bare_yield()
        else:
            await self.gone.wait()
        return {"type": "http.disconnect"}


async def test_the_client_going_away_is_reported_once() -> None:
    receive = Receive()
    calls: list[None] = []
    reported = asyncio.Event()

    def on_gone() -> None:
        calls.append(None)
        reported.set()

    watch = DisconnectWatch(receive, on_gone)
    await asyncio.sleep(0)
    assert calls == []

    receive.gone.set()
    async with asyncio.timeout(WAIT_S):
        await reported.wait()
    watch.close()
    assert calls == [None]


async def test_nothing_is_reported_after_close() -> None:
    receive = Receive()
    calls: list[None] = []
    watch = DisconnectWatch(receive, lambda: calls.append(None))

    watch.close()
    receive.gone.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)

    assert calls == []


class _FailingAfterWait(Receive):
    """A receive that raises where it would report the disconnect."""

    async def __call__(self) -> dict[str, Any]:
        message = await super().__call__()
        if message["type"] == "http.disconnect":  # after a wait without a future
            raise ConnectionResetError("the server's receive broke")
        return message


@pytest.mark.parametrize(
    "receive_class",
    [pytest.param(Receive, id="reports"), pytest.param(_FailingAfterWait, id="fails")],
)
async def test_a_receive_that_waits_without_a_future_is_watched_by_a_task(
    receive_class: type[Receive],
) -> None:
    """Watched by a task instead of a callback; a receive that fails counts as gone too."""
    receive = receive_class(yields_bare=True)
    reported = asyncio.Event()
    watch = DisconnectWatch(receive, reported.set)

    receive.gone.set()
    async with asyncio.timeout(WAIT_S):
        await reported.wait()
    watch.close()
