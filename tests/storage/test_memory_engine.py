"""What only the embedded engine does: its idle-channel sweep, which survives its own failures
and leaves the event loop free between channels."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest

from app.engine import TRIM_STEP
from app.model import ChannelKey, EventDraft, Retention
from storage.memory import MemoryEngine
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
