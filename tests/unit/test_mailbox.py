"""A mailbox wait woken without a delivery returns nothing to take (SSE streams are woken this
way to send heartbeats); a loss of live events is reported in its place in line; a consumer
waiting with nothing queued can take deliveries directly, in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import pytest

from app.delivery import Delivery
from app.hub import EventsLost, Hub, Mailbox, SubscriberOverflow
from app.model import ChannelKey, Event, Topic

WAIT_S = 10.0


def delivery(replay_id: int, size: int = 10) -> Delivery:
    return Delivery(Event(ChannelKey("t", "/event/X"), replay_id, "u", 0, b"x" * size, "t"))


def taking(handed: list[int]) -> Callable[[Delivery], bool]:
    """A direct consumer that takes every delivery, noting its ReplayId."""

    def take(delivered: Delivery) -> bool:
        handed.append(delivered.replay_id)
        return True

    return take


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


async def test_a_waiting_consumer_takes_a_delivery_directly_without_being_woken() -> None:
    mailbox = Mailbox(10, 1024)
    handed: list[int] = []
    mailbox.direct = taking(handed)
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)  # the consumer now waits

    mailbox.offer(delivery(1))
    mailbox.offer(delivery(2))
    await asyncio.sleep(0)

    assert handed == [1, 2]
    assert not waiting.done()  # nothing queued, nobody woken
    mailbox.wake()
    assert await waiting == []


async def test_a_delivery_the_direct_consumer_refuses_is_queued_and_the_rest_follow_it() -> None:
    mailbox = Mailbox(10, 1024)
    handed: list[int] = []

    def direct(d: Delivery) -> bool:
        if d.replay_id == 1:
            return False
        handed.append(d.replay_id)
        return True

    mailbox.direct = direct
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)

    mailbox.offer(delivery(1))  # refused: queued, and the consumer woken
    mailbox.offer(delivery(2))  # queued behind it, never handed over out of order

    assert [d.replay_id for d in await waiting] == [1, 2]
    assert handed == []


async def test_a_consumer_that_is_not_waiting_gets_its_deliveries_queued() -> None:
    mailbox = Mailbox(2, 1024)
    handed: list[int] = []
    mailbox.direct = taking(handed)

    for replay_id in (1, 2, 3):  # nobody waits: the mailbox's bound applies as before
        mailbox.offer(delivery(replay_id))

    assert handed == []
    assert [d.replay_id for d in await mailbox.take(0)] == [1, 2]
    with pytest.raises(SubscriberOverflow):
        await mailbox.take(0)


async def test_a_wake_while_nobody_waits_ends_the_next_wait_at_once_and_only_that_one() -> None:
    mailbox = Mailbox(10, 1024)
    mailbox.wake()  # the consumer is busy elsewhere: the wake must not be lost

    async with asyncio.timeout(WAIT_S):
        assert await mailbox.take(None) == []
    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)  # the task is now waiting on the mailbox
    assert not waiting.done()  # the wake was answered once
    mailbox.offer(delivery(1))
    assert [d.replay_id for d in await waiting] == [1]


async def test_deliveries_taken_leave_no_wake_behind() -> None:
    mailbox = Mailbox(10, 1024)
    mailbox.offer(delivery(1))  # nobody waits
    assert [d.replay_id for d in await mailbox.take(0)] == [1]

    waiting = asyncio.create_task(mailbox.take(None))
    await asyncio.sleep(0)
    assert not waiting.done()
    mailbox.wake()
    assert await waiting == []


async def test_a_wake_while_nobody_watches_is_seen_by_the_next_watch() -> None:
    mailbox = Mailbox(10, 1024)
    waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    mailbox.wake()

    assert not mailbox.watch(waiter)  # the wake is waiting: nothing watched
    assert mailbox.watch(waiter)  # answered once
    mailbox.unwatch(waiter)


async def test_a_failing_direct_consumer_keeps_the_event_from_no_other_mailbox() -> None:
    feeds: list[Callable[[Event], None]] = []

    class Source:
        @asynccontextmanager
        async def listen(
            self, topic: Topic, deliver: Callable[[Event], None], missed: Callable[[], None]
        ) -> AsyncIterator[None]:
            feeds.append(deliver)
            yield

    def failing(delivered: Delivery) -> bool:
        raise RuntimeError("cannot write")

    handed: list[list[int]] = [[], []]
    boxes = [Mailbox(10, 1024) for _ in range(3)]
    boxes[0].direct = taking(handed[0])
    boxes[1].direct = failing
    boxes[2].direct = taking(handed[1])
    topic = Topic("t", "/event/X")
    async with Hub(Source()) as hub, AsyncExitStack() as stack:
        for box in boxes:
            await stack.enter_async_context(hub.subscribe(topic, box))
        waiting = [asyncio.create_task(box.take(None)) for box in boxes]
        await asyncio.sleep(0)  # every consumer now waits

        feeds[0](delivery(1).event)  # in whichever order the feed visits them
        feeds[0](delivery(2).event)

        assert handed == [[1, 2], [1, 2]]
        assert [d.replay_id for d in await waiting[1]] == [1, 2]  # queued, and woken
        assert [box.direct is None for box in boxes] == [False, True, False]  # dropped
        for box, task in zip((boxes[0], boxes[2]), (waiting[0], waiting[2]), strict=True):
            assert not task.done()
            box.wake()
            assert await task == []
