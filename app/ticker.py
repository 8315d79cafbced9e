"""One timer for a node's many long-lived connections: their periodic chores (heartbeats,
expiry, re-checks) are looked at from one task, so an idle connection owns no timer or task;
and one callback for the writes they gather during a round of the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

__all__ = ["Flushed", "Ticked", "Ticker"]

log = logging.getLogger("replaybus.ticker")


class Ticked(Protocol):
    def tick(self, now: float) -> None:
        """Called every `Ticker.interval` seconds with the loop's time. Must not block: it only
        decides, and wakes whoever does the work."""


class Flushed(Protocol):
    def flush(self) -> None:
        """Called once soon after `Ticker.soon`: writes what was gathered. Must not block."""


class Ticker:
    """Calls `tick(now)` on every member every `interval` seconds, and at once when `urgent`
    (e.g. the node's draining event) is set. A member added during a round is ticked from the
    next one; a member that raises is logged and kept. Use as an async context manager.

    `soon(member)` calls `member.flush()` from one callback shared by every member asking
    during the same round of the event loop, once that round's other ready work has run: what
    a fan-out hands many connections at once is written once per connection, however many
    events it carried."""

    def __init__(self, interval: float, urgent: asyncio.Event | None = None) -> None:
        self.interval = interval
        self._urgent = urgent
        self._members: set[Ticked] = set()
        self._task: asyncio.Task[None] | None = None
        self._soon: list[Flushed] = []

    def __len__(self) -> int:
        return len(self._members)

    def add(self, member: Ticked) -> None:
        self._members.add(member)

    def discard(self, member: Ticked) -> None:
        self._members.discard(member)

    def soon(self, member: Flushed) -> None:
        """Have `member.flush()` called soon (once per call)."""
        if not self._soon:
            asyncio.get_running_loop().call_soon(self._flush)
        self._soon.append(member)

    def _flush(self) -> None:
        members, self._soon = self._soon, []
        for member in members:
            try:
                member.flush()
            except Exception:
                log.exception("a gathered write failed")

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        urgent = self._urgent
        while True:
            if urgent is not None and not urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval):
                        await urgent.wait()
            else:
                await asyncio.sleep(self.interval)
            now = loop.time()
            for member in list(self._members):
                try:
                    member.tick(now)
                except Exception:
                    log.exception("a periodic check failed")
