"""A mailbox wait woken without a delivery returns nothing to take (the SSE guard wakes idle
streams this way to send heartbeats); a loss of live events is reported in its place in line."""

from __future__ import annotations

import asyncio

import pytest

from app.delivery import Delivery
from app.hub import EventsLost, Mailbox
from app.model import ChannelKey, Event


def delivery(replay_id: int, size: int = 10) -> Delivery:
    return Delivery(Event(ChannelKey("t", "/event/X"), replay_id, "u", 0, b"x" * size, "t"))


async def test_a_wake_ends_a_wait_with_nothing_to_take() -> None:
    mailbox = Mailbox(10, 1024)
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)  # the task is now waiting on the mailbox
    assert not waiting.done()

    mailbox.wake()

    assert await waiting == []


async def test_a_loss_comes_after_what_was_buffered_before_it_and_before_what_came_after() -> None:
    mailbox = Mailbox(10, 1024)
    mailbox.offer(delivery(1))
    mailbox.offer(delivery(2))
    mailbox.lose()
    mailbox.offer(delivery(3))
    mailbox.lose()  # the consumer has not been told of the first yet: one report

    assert [d.replay_id for d in await mailbox.take(0)] == [1, 2]
    with pytest.raises(EventsLost):
        await mailbox.take(None)  # does not wait: the loss is waiting
    assert not mailbox.lost
    assert [d.replay_id for d in await mailbox.take(0)] == [3]
    assert await mailbox.take(0) == []


async def test_the_bytes_handed_over_before_a_loss_free_their_room() -> None:
    mailbox = Mailbox(10, 100)
    mailbox.offer(delivery(1, 60))
    mailbox.lose()
    assert [d.replay_id for d in await mailbox.take(0)] == [1]
    with pytest.raises(EventsLost):
        await mailbox.take(0)

    mailbox.offer(delivery(2, 60))
    mailbox.offer(delivery(3, 40))

    assert [d.replay_id for d in await mailbox.take(0)] == [2, 3]
    assert not mailbox.overflowed


async def test_a_reset_forgets_a_loss() -> None:
    mailbox = Mailbox(10, 1024)
    mailbox.lose()
    mailbox.reset()

    assert not mailbox.lost
    assert await mailbox.take(0) == []
