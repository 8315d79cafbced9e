"""Mailbox waits: woken without a delivery it returns nothing; a delivery wins over a wake."""

from __future__ import annotations

import asyncio

from app.hub import Mailbox


async def test_a_wake_ends_a_wait_with_nothing_to_take() -> None:
    mailbox = Mailbox(10)
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)  # the task is now waiting on the mailbox
    assert not waiting.done()

    mailbox.wake()

    assert await waiting == []


async def test_a_wake_with_nobody_waiting_changes_nothing() -> None:
    mailbox = Mailbox(10)

    mailbox.wake()

    assert await mailbox.take(0) == []
