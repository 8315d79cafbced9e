"""`first_completed`: the first task wins, the rest are cancelled and awaited."""

from __future__ import annotations

import asyncio

import pytest

from app.race import first_completed


async def test_the_first_to_finish_wins_and_the_others_are_cancelled() -> None:
    never = asyncio.Event()
    cancelled: list[str] = []

    async def wait_forever(name: str) -> None:
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    async def finish() -> str:
        return "done"

    winner, failure = await first_completed(wait_forever("a"), finish(), wait_forever("b"))
    assert (winner, failure) == (1, None)
    assert sorted(cancelled) == ["a", "b"]


async def test_the_winners_exception_is_returned_not_raised() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    winner, failure = await first_completed(asyncio.Event().wait(), fail())
    assert winner == 1
    assert isinstance(failure, RuntimeError)


async def test_cancelling_the_caller_cancels_every_task() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def wait_forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    racing = asyncio.create_task(first_completed(wait_forever()))
    await started.wait()
    racing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await racing
    assert cancelled.is_set()
