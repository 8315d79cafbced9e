"""What only the embedded engine does: its idle-channel sweep."""

from __future__ import annotations

import uuid

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
        engine.sweep()
        retained_after = engine.retained_count()
        window = await engine.window(idle)
    assert retained_before == 2
    assert retained_after == 1
    assert window.low_water == old.replay_id
