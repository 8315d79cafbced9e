"""The node's one timer for long-lived connections: every member is ticked each interval and at
once when the urgent event is set; a failing member costs the others nothing; writes asked for
during one round of the event loop are flushed once per member, after that round's work."""

from __future__ import annotations

import asyncio

from app.ticker import Ticker

WAIT_S = 10.0


class Member:
    def __init__(self, ticks_wanted: int = 1, fails: bool = False) -> None:
        self.ticks: list[float] = []
        self.flushes = 0
        self.ticked = asyncio.Event()
        self._wanted = ticks_wanted
        self._fails = fails

    def tick(self, now: float) -> None:
        self.ticks.append(now)
        if len(self.ticks) >= self._wanted:
            self.ticked.set()
        if self._fails:
            raise RuntimeError("this member's check failed")

    def flush(self) -> None:
        self.flushes += 1


async def test_every_member_is_ticked_every_interval_with_the_loop_time() -> None:
    first, second = Member(ticks_wanted=2), Member(ticks_wanted=2)
    async with Ticker(0.01) as ticker:
        ticker.add(first)
        ticker.add(second)
        async with asyncio.timeout(WAIT_S):
            await first.ticked.wait()
            await second.ticked.wait()
        ticker.discard(first)
        assert len(ticker) == 1
    assert first.ticks == sorted(first.ticks)
    assert first.ticks[-1] <= asyncio.get_running_loop().time()


async def test_the_urgent_event_ticks_every_member_at_once() -> None:
    draining = asyncio.Event()
    member = Member()
    async with Ticker(3600, draining) as ticker:  # no regular tick within the test
        ticker.add(member)
        await asyncio.sleep(0)
        assert member.ticks == []
        draining.set()
        async with asyncio.timeout(WAIT_S):
            await member.ticked.wait()


async def test_a_member_that_fails_is_kept_and_costs_the_others_nothing() -> None:
    failing, other = Member(ticks_wanted=2, fails=True), Member(ticks_wanted=2)
    async with Ticker(0.01) as ticker:
        ticker.add(failing)
        ticker.add(other)
        async with asyncio.timeout(WAIT_S):
            await other.ticked.wait()
            await failing.ticked.wait()


async def test_flushes_asked_for_in_one_round_run_once_each_after_that_round() -> None:
    first, second = Member(), Member()
    async with Ticker(3600) as ticker:
        ticker.soon(first)
        ticker.soon(second)
        assert (first.flushes, second.flushes) == (0, 0)  # not during the caller's own work
        await asyncio.sleep(0)
        assert (first.flushes, second.flushes) == (1, 1)
        ticker.soon(first)  # a later round: flushed again
        await asyncio.sleep(0)
        assert (first.flushes, second.flushes) == (2, 1)
