"""What only the embedded engine does: its idle-channel sweep, which survives its own failures
and leaves the event loop free between channels, and reads whose cost does not grow with how far
into the window they start."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import SupportsIndex, overload

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.engine import TRIM_STEP
from app.model import ChannelKey, Event, EventDraft, Retention
from storage.memory import MemoryEngine
from storage.memory.engine import _Channel
from tests.fakes import FakeClock


def _draft() -> EventDraft:
    return EventDraft(uuid=str(uuid.uuid4()), payload=b"{}", created_by="test")


async def test_sweep_evicts_expired_events_of_channels_nobody_touches() -> None:
    clock = FakeClock()
    retention = Retention(max_age_us=10_000_000, max_count=100)
    idle, busy = ChannelKey("t", "/event/Idle"), ChannelKey("t", "/event/Busy")
    async with MemoryEngine(clock, idempotency_ttl=60) as engine:
        [old] = await engine.publish(idle, [_draft()], retention)
        clock.advance(11)
        await engine.publish(busy, [_draft()], retention)
        retained_before = engine.retained_count()
        await engine.sweep()
        retained_after = engine.retained_count()
        window = await engine.window(idle)
    assert retained_before == 2
    assert retained_after == 1
    assert window.low_water == old.replay_id


async def test_a_failing_sweep_is_logged_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweeps: list[int] = []
    second_sweep = asyncio.Event()

    async def sweep() -> None:
        sweeps.append(len(sweeps))
        if len(sweeps) == 1:
            raise RuntimeError("a sweep step broke")
        second_sweep.set()

    engine = MemoryEngine(FakeClock(), idempotency_ttl=60, sweep_interval=0.001)
    monkeypatch.setattr(engine, "sweep", sweep)
    with caplog.at_level(logging.ERROR, logger="replaybus.memory"):
        async with engine:
            async with asyncio.timeout(10):
                await second_sweep.wait()

    assert len(sweeps) >= 2
    [record] = [r for r in caplog.records if r.name == "replaybus.memory"]
    assert "sweep failed" in record.getMessage()
    assert record.exc_info is not None
    assert "a sweep step broke" in str(record.exc_info[1])


class _Visits(list[Event]):
    """A list that counts the elements read from it, by index, slice or iteration."""

    def __init__(self, events: Iterable[Event]) -> None:
        super().__init__(events)
        self.visited = 0

    @overload
    def __getitem__(self, index: SupportsIndex) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> list[Event]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> Event | list[Event]:
        if isinstance(index, slice):
            items = super().__getitem__(index)
            self.visited += len(items)
            return items
        self.visited += 1
        return super().__getitem__(index)

    def __iter__(self) -> Iterator[Event]:
        for event in super().__iter__():
            self.visited += 1
            yield event


def _channel(sizes: list[int], evicted: int = 0) -> _Channel:
    """A channel holding one event per size (ReplayIds 1, 2, ...), the first `evicted` gone."""
    key = ChannelKey("t", "/event/X")
    channel = _Channel(
        events=[Event(key, n + 1, str(n), n, b"x" * size, "test") for n, size in enumerate(sizes)]
    )
    channel.top = len(sizes)
    for _ in range(evicted):
        channel.evict_oldest()
    return channel


@pytest.mark.parametrize("max_bytes", [None, 1 << 20])
def test_a_read_at_the_tail_of_a_long_window_visits_only_its_page(max_bytes: int | None) -> None:
    channel = _channel([10] * 100_000)
    channel.events = visits = _Visits(channel.events)

    page = channel.after(99_990, 1000, max_bytes)

    assert [event.replay_id for event in page] == list(range(99_991, 100_001))
    # A binary search (17 probes for 100 000 events) and the page's 10 events; reading from
    # the start of the list up to the page would visit 100 000.
    assert visits.visited <= 17 + 10


@given(
    sizes=st.lists(st.integers(0, 50), max_size=40),
    evicted=st.integers(0, 40),
    after=st.integers(0, 45),
    limit=st.integers(0, 45),
    max_bytes=st.none() | st.integers(0, 200),
)
def test_a_page_is_the_longest_run_after_the_position_within_its_bounds(
    sizes: list[int], evicted: int, after: int, limit: int, max_bytes: int | None
) -> None:
    channel = _channel(sizes, min(evicted, len(sizes)))
    retained = [event for event in channel.events[channel.head :] if event.replay_id > after]
    expected: list[Event] = []
    for event in retained[:limit]:
        used = sum(e.size for e in expected)
        if max_bytes is not None and expected and used + event.size > max_bytes:
            break
        expected.append(event)

    assert list(channel.after(after, limit, max_bytes)) == expected


async def test_a_sweep_lets_the_event_loop_run_between_channels() -> None:
    clock = FakeClock()
    retention = Retention(max_age_us=10_000_000, max_count=TRIM_STEP)
    keys = [ChannelKey("t", f"/event/C{n}") for n in range(3)]
    async with MemoryEngine(clock, idempotency_ttl=60) as engine:
        for key in keys:
            await engine.publish(key, [_draft() for _ in range(TRIM_STEP)], retention)
        clock.advance(11)  # every event has expired: each channel has a full step to evict
        during: list[int] = []
        asyncio.get_running_loop().call_soon(lambda: during.append(engine.retained_count()))

        await engine.sweep()

        assert engine.retained_count() == 0
    # The callback ran while the sweep was under way: some channels swept, others not yet.
    assert during
    assert 0 < during[0] < len(keys) * TRIM_STEP
