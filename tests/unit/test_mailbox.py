"""A mailbox wait woken without a delivery returns nothing to take (the SSE guard wakes idle
streams this way to send heartbeats)."""

from __future__ import annotations

import asyncio

from app.hub import Mailbox


async def test_a_wake_ends_a_wait_with_nothing_to_take() -> None:
    mailbox = Mailbox(10, 1024)
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)  # the task is now waiting on the mailbox
    assert not waiting.done()

    mailbox.wake()

    assert await waiting == []
