"""Handshake admission: a node processes at most `max_concurrent_handshakes` handshakes at
once. One more is answered at once with `503::…, retry` and a jittered `advice.interval`
(1 s plus up to `reconnect_jitter`), counted in `replaybus_admission_refused_total`, and the
place comes back when the admitted handshake ends, however it ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.bayeux import codec
from app.bayeux.server import BayeuxServer
from app.hub import Hub
from app.metrics import Metrics
from app.sessions import SessionRecord
from app.settings import Settings
from storage.memory import MemoryEngine
from tests.bayeux._support import Background, BayeuxClient, wait_until, within
from tests.bayeux.conftest import principal_of
from tests.fakes import FakeClock

JITTER_S = 2.0


class GatedEngine(MemoryEngine):
    """A memory engine whose `session_create` waits for `gate` while `gated` is true, counting
    the calls waiting there (so a test can see a handshake is in progress)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock, idempotency_ttl=60)
        self.gate = asyncio.Event()
        self.gated = False
        self.waiting = 0
        self.fail_next = False

    async def session_create(
        self,
        record: SessionRecord,
        ttl_us: int,
        max_per_tenant: int,
        max_subscribers: int | None = None,
    ) -> bool:
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("the session store failed")
        if self.gated:
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
        return await super().session_create(record, ttl_us, max_per_tenant, max_subscribers)


@pytest.fixture
async def gated_engine(clock: FakeClock) -> AsyncIterator[GatedEngine]:
    engine = GatedEngine(clock)
    async with engine:
        yield engine


@pytest.fixture
async def gated_hub(gated_engine: GatedEngine) -> AsyncIterator[Hub]:
    async with Hub(gated_engine) as entered:
        yield entered


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def admitting_server(
    gated_engine: GatedEngine,
    gated_hub: Hub,
    clock: FakeClock,
    draining: asyncio.Event,
    metrics: Metrics,
) -> BayeuxServer:
    """A server that admits one handshake at a time (REPLAYBUS_MAX_CONCURRENT_HANDSHAKES=1,
    REPLAYBUS_RECONNECT_JITTER=2s), recording into `metrics`."""
    settings = Settings().replace(max_concurrent_handshakes=1, reconnect_jitter=JITTER_S)
    return BayeuxServer(gated_engine, gated_hub, settings, clock, draining, metrics=metrics)


def _refused(metrics: Metrics, kind: str) -> float:
    value = metrics.registry.get_sample_value("replaybus_admission_refused_total", {"kind": kind})
    return 0.0 if value is None else value


async def _handshake_reply(server: BayeuxServer) -> dict[str, Any]:
    client = BayeuxClient(server, principal_of())
    [reply] = await within(client.send(client.handshake_message()))
    return reply


async def _one_handshake_in_progress(
    server: BayeuxServer, engine: GatedEngine, background: Background
) -> asyncio.Task[dict[str, Any]]:
    """A handshake held inside the engine, taking the one place."""
    engine.gated = True
    first = background.start(_handshake_reply(server))
    await wait_until(lambda: engine.waiting == 1, "the first handshake is in progress")
    return first


async def test_a_handshake_beyond_the_limit_is_told_to_retry_after_a_jittered_interval(
    admitting_server: BayeuxServer,
    gated_engine: GatedEngine,
    metrics: Metrics,
    background: Background,
) -> None:
    first = await _one_handshake_in_progress(admitting_server, gated_engine, background)

    busy = await _handshake_reply(admitting_server)

    assert busy["channel"] == "/meta/handshake"
    assert busy["successful"] is False
    assert busy["error"] == codec.BUSY
    assert "clientId" not in busy
    assert busy["advice"]["reconnect"] == "retry"
    interval = busy["advice"]["interval"]
    assert isinstance(interval, int)
    assert 1000 <= interval <= 1000 + JITTER_S * 1000
    assert _refused(metrics, "handshake") == 1
    assert not first.done()

    gated_engine.gated = False
    gated_engine.gate.set()
    admitted = await within(first)
    assert admitted["successful"] is True, admitted
    assert await gated_engine.session_get(admitted["clientId"]) is not None

    third = await _handshake_reply(admitting_server)
    assert third["successful"] is True, third
    assert third["clientId"] != admitted["clientId"]
    assert _refused(metrics, "handshake") == 1  # admitted handshakes are not refusals
    assert _refused(metrics, "replay") == 0


async def test_refused_handshakes_are_counted_one_each_and_intervals_are_spread(
    admitting_server: BayeuxServer,
    gated_engine: GatedEngine,
    metrics: Metrics,
    background: Background,
) -> None:
    first = await _one_handshake_in_progress(admitting_server, gated_engine, background)

    refused = [await _handshake_reply(admitting_server) for _ in range(40)]

    assert {reply["error"] for reply in refused} == {codec.BUSY}
    intervals = [reply["advice"]["interval"] for reply in refused]
    assert all(1000 <= interval <= 3000 for interval in intervals), intervals
    assert len(set(intervals)) > 1, intervals  # clients turned away together come back spread
    assert _refused(metrics, "handshake") == 40

    gated_engine.gate.set()
    assert (await within(first))["successful"] is True


async def test_a_failed_handshake_gives_its_place_back(
    admitting_server: BayeuxServer, gated_engine: GatedEngine, metrics: Metrics
) -> None:
    gated_engine.fail_next = True
    with pytest.raises(RuntimeError, match="the session store failed"):
        await _handshake_reply(admitting_server)

    after_failure = await _handshake_reply(admitting_server)

    assert after_failure["successful"] is True, after_failure
    assert _refused(metrics, "handshake") == 0


async def test_a_cancelled_handshake_gives_its_place_back(
    admitting_server: BayeuxServer,
    gated_engine: GatedEngine,
    metrics: Metrics,
    background: Background,
) -> None:
    abandoned = await _one_handshake_in_progress(admitting_server, gated_engine, background)

    abandoned.cancel()  # the HTTP client went away mid-handshake
    with pytest.raises(asyncio.CancelledError):
        await abandoned
    gated_engine.gated = False

    reply = await _handshake_reply(admitting_server)
    assert reply["successful"] is True, reply
    assert _refused(metrics, "handshake") == 0
