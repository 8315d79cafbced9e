"""Group commit: the first caller goes at once; callers arriving meanwhile share the next
round; each gets its own results or its round's error."""

from __future__ import annotations

import asyncio

import pytest

from storage.redis.group_commit import GroupCommit


class _Store:
    """A `send` that records each round and, when `gate` is set, waits on it."""

    def __init__(self) -> None:
        self.rounds: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.fail_when: str | None = None

    async def send(self, key: str, items: list[str]) -> list[str]:
        self.rounds.append(items)
        self.entered.set()
        if self.gate is not None:
            gate, self.gate = self.gate, None
            await gate.wait()
        if self.fail_when in items:
            raise ConnectionError("lost")
        return [f"{key}:{item}" for item in items]


def _group(
    store: _Store, max_items: int = 100, max_bytes: int = 1000
) -> GroupCommit[str, str, str]:
    return GroupCommit(store.send, len, max_items, max_bytes, lambda: ConnectionError("closed"))


async def _held_first_round(
    store: _Store, group: GroupCommit[str, str, str]
) -> tuple[asyncio.Event, asyncio.Task[list[str]]]:
    """Start a first caller whose round stays in flight until the returned gate is set."""
    gate = store.gate = asyncio.Event()
    first = asyncio.create_task(group.submit("ch", ["a"]))
    await store.entered.wait()
    return gate, first


async def _queued(group: GroupCommit[str, str, str], items: list[str]) -> asyncio.Task[list[str]]:
    task = asyncio.create_task(group.submit("ch", items))
    await asyncio.sleep(0)  # lets the task run up to its queueing point
    return task


async def test_an_idle_channel_sends_at_once() -> None:
    store = _Store()

    assert await _group(store).submit("ch", ["a", "b"]) == ["ch:a", "ch:b"]
    assert store.rounds == [["a", "b"]]


async def test_callers_arriving_during_a_round_go_together_and_get_their_own_results() -> None:
    store = _Store()
    group = _group(store)
    gate, first = await _held_first_round(store, group)
    second = await _queued(group, ["b", "c"])
    third = await _queued(group, ["d"])

    gate.set()

    assert await first == ["ch:a"]
    assert await second == ["ch:b", "ch:c"]
    assert await third == ["ch:d"]
    assert store.rounds == [["a"], ["b", "c", "d"]]


async def test_channels_do_not_wait_for_each_other() -> None:
    store = _Store()
    group = _group(store)
    gate, first = await _held_first_round(store, group)

    assert await group.submit("other", ["x"]) == ["other:x"]
    gate.set()
    assert await first == ["ch:a"]


async def test_a_failed_round_fails_its_callers_only() -> None:
    store = _Store()
    group = _group(store, max_items=2)
    gate, first = await _held_first_round(store, group)
    in_failing_round = await _queued(group, ["b", "c"])
    in_next_round = await _queued(group, ["d"])
    store.fail_when = "c"

    gate.set()

    assert await first == ["ch:a"]
    with pytest.raises(ConnectionError):
        await in_failing_round
    assert await in_next_round == ["ch:d"]
    assert store.rounds == [["a"], ["b", "c"], ["d"]]


async def test_rounds_are_bounded_by_items_and_bytes_but_a_large_caller_still_goes() -> None:
    store = _Store()
    group = _group(store, max_items=3, max_bytes=10)
    gate, first = await _held_first_round(store, group)
    callers = [
        await _queued(group, ["b", "c"]),
        await _queued(group, ["d", "e"]),  # would make 4 items: next round
        await _queued(group, ["f" * 9]),  # 2 + 9 bytes > 10: next round
        await _queued(group, ["g" * 50]),  # over the byte bound alone: goes alone
    ]

    gate.set()
    await first
    await asyncio.gather(*callers)

    assert store.rounds == [["a"], ["b", "c"], ["d", "e"], ["f" * 9], ["g" * 50]]


async def test_a_caller_cancelled_while_queued_is_not_sent() -> None:
    store = _Store()
    group = _group(store)
    gate, first = await _held_first_round(store, group)
    gone = await _queued(group, ["b"])
    kept = await _queued(group, ["c"])
    gone.cancel()

    gate.set()

    assert await first == ["ch:a"]
    assert await kept == ["ch:c"]
    assert store.rounds == [["a"], ["c"]]


async def test_closing_lets_the_round_in_flight_finish_and_fails_whoever_still_waits() -> None:
    store = _Store()
    group = _group(store)
    gate, first = await _held_first_round(store, group)
    queued = await _queued(group, ["b"])

    closing = asyncio.create_task(group.aclose())
    await asyncio.sleep(0)  # aclose is now waiting for nothing in flight but the first caller
    gate.set()
    await closing

    assert await first == ["ch:a"]
    with pytest.raises(ConnectionError, match="closed"):
        await queued
    with pytest.raises(ConnectionError, match="closed"):
        await group.submit("ch", ["c"])
    assert store.rounds == [["a"]]


async def test_a_cancelled_round_fails_its_callers_with_the_closed_error() -> None:
    store = _Store()
    group = _group(store)
    gate, first = await _held_first_round(store, group)
    queued = await _queued(group, ["b"])
    store.gate = asyncio.Event()  # the next round will hang until cancelled
    store.entered = asyncio.Event()
    gate.set()
    assert await first == ["ch:a"]
    await store.entered.wait()  # the second round is inside its send

    for task in list(group._rounds):
        task.cancel()

    with pytest.raises(ConnectionError, match="closed"):
        await queued
