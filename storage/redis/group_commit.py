"""Group commit: concurrent publishes to one channel share a round trip.

A publish finding its channel idle goes to Redis at once. Publishes arriving while one is in
flight queue up and go together, as one batch, as soon as it returns: no added latency when
idle, one script call for many events under load. Order is arrival order, and each caller
gets back exactly its own acknowledgements (or the error of the round its events were in).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Waiting(Generic[T, R]):
    items: Sequence[T]
    size: int
    answer: asyncio.Future[list[R]]


@dataclass
class _Lane(Generic[T, R]):
    waiting: list[_Waiting[T, R]] = field(default_factory=list)


class GroupCommit(Generic[K, T, R]):
    """`send(key, items)` must return one result per item, in order. A round takes queued
    callers whole until it holds `max_items` items or `max_bytes` (as `size` measures them);
    a single caller larger than that still goes, alone."""

    def __init__(
        self,
        send: Callable[[K, list[T]], Awaitable[list[R]]],
        size: Callable[[T], int],
        max_items: int,
        max_bytes: int,
        closed: Callable[[], Exception],
    ) -> None:
        """`closed()` makes the error for callers whose events were not sent because the
        group commit was closed (or its round cancelled) first."""
        self._send = send
        self._closed = closed
        self._closing = False
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._lanes: dict[K, _Lane[T, R]] = {}
        self._rounds: set[asyncio.Task[None]] = set()

    async def submit(self, key: K, items: Sequence[T]) -> list[R]:
        if self._closing:
            raise self._closed()
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = lane = _Lane()
            try:
                return await self._send(key, list(items))
            finally:
                self._next_round(key, lane)
        answer: asyncio.Future[list[R]] = asyncio.get_running_loop().create_future()
        lane.waiting.append(_Waiting(items, sum(map(self._size, items)), answer))
        return await answer

    async def aclose(self) -> None:
        """Take no more work, let the rounds in flight finish, and fail whoever still waits."""
        self._closing = True
        while self._rounds:
            await asyncio.gather(*self._rounds, return_exceptions=True)
        for lane in self._lanes.values():
            for caller in lane.waiting:
                if not caller.answer.done():
                    caller.answer.set_exception(self._closed())
        self._lanes.clear()

    def _next_round(self, key: K, lane: _Lane[T, R]) -> None:
        lane.waiting = [caller for caller in lane.waiting if not caller.answer.done()]
        if self._closing:
            for caller in lane.waiting:
                caller.answer.set_exception(self._closed())
            lane.waiting = []
        if not lane.waiting:
            if self._lanes.get(key) is lane:
                del self._lanes[key]
            return
        taken: list[_Waiting[T, R]] = []
        items = size = 0
        while lane.waiting:
            caller = lane.waiting[0]
            fits = items + len(caller.items) <= self._max_items
            if taken and not (fits and size + caller.size <= self._max_bytes):
                break
            taken.append(lane.waiting.pop(0))
            items += len(caller.items)
            size += caller.size
        task = asyncio.create_task(self._round(key, lane, taken))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _round(self, key: K, lane: _Lane[T, R], taken: list[_Waiting[T, R]]) -> None:
        try:
            results = await self._send(key, [item for caller in taken for item in caller.items])
        except asyncio.CancelledError:
            # The callers themselves were not cancelled: they get an error they can answer.
            for caller in taken:
                if not caller.answer.done():
                    caller.answer.set_exception(self._closed())
            raise
        except Exception as error:
            for caller in taken:
                if not caller.answer.done():
                    caller.answer.set_exception(error)
        else:
            start = 0
            for caller in taken:
                end = start + len(caller.items)
                if not caller.answer.done():
                    caller.answer.set_result(results[start:end])
                start = end
        finally:
            self._next_round(key, lane)
