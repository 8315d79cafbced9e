"""Structured "first one wins" concurrency for one connection's tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

__all__ = ["first_completed"]


async def first_completed(
    *coroutines: Coroutine[Any, Any, Any],
) -> tuple[int, BaseException | None]:
    """Run the coroutines as tasks until the first finishes; cancel and await the rest.

    Returns the index of the first to finish and the exception it raised (None if it returned).
    Cancelling the caller cancels every task, which are awaited before the cancellation goes on.
    """
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    winner = next(index for index, task in enumerate(tasks) if task in done)
    task = tasks[winner]
    return winner, None if task.cancelled() else task.exception()
