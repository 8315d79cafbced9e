"""The Engine's shared quota state: live streams and sessions counted together against a
tenant's subscriber cap, and the tenant's publish allowance (a token bucket on the engine)."""

from __future__ import annotations

import uuid

from app.engine import Engine
from app.sessions import SessionRecord
from tests.fakes import FakeClock

MINUTE_US = 60_000_000
SLOW = 0.001  # allowance per second: nothing measurable refills while a test runs


def _session(tenant: str) -> SessionRecord:
    return SessionRecord(client_id=uuid.uuid4().hex, tenant=tenant, owner="client-1")


async def test_streams_are_admitted_up_to_the_cap_and_a_release_frees_a_place(
    engine: Engine, tenant: str
) -> None:
    admitted = [await engine.stream_admit(tenant, f"s{n}", MINUTE_US, 3) for n in range(4)]

    assert admitted == [True, True, True, False]
    await engine.stream_release(tenant, "s0")
    assert await engine.stream_admit(tenant, "s4", MINUTE_US, 3)
    assert not await engine.stream_admit(tenant, "s5", MINUTE_US, 3)


async def test_no_cap_admits_any_number_of_streams(engine: Engine, tenant: str) -> None:
    assert all([await engine.stream_admit(tenant, f"s{n}", MINUTE_US, None) for n in range(50)])


async def test_streams_and_bayeux_sessions_share_the_subscriber_cap(
    engine: Engine, tenant: str
) -> None:
    assert await engine.stream_admit(tenant, "s1", MINUTE_US, 2)
    assert await engine.session_create(_session(tenant), MINUTE_US, 100, max_subscribers=2)

    assert not await engine.session_create(_session(tenant), MINUTE_US, 100, max_subscribers=2)
    assert not await engine.stream_admit(tenant, "s2", MINUTE_US, 2)
    # The Bayeux-only limit still applies without a subscriber cap.
    assert await engine.session_create(_session(tenant), MINUTE_US, 100)


async def test_the_cap_is_per_tenant(engine: Engine, tenant: str, other_tenant: str) -> None:
    assert await engine.stream_admit(tenant, "s1", MINUTE_US, 1)

    assert await engine.stream_admit(other_tenant, "s1", MINUTE_US, 1)
    assert not await engine.stream_admit(tenant, "s2", MINUTE_US, 1)


async def test_an_expired_stream_stops_counting_unless_renewed(
    engine: Engine, tenant: str, clock: FakeClock
) -> None:
    assert await engine.stream_admit(tenant, "kept", MINUTE_US, 2)
    assert await engine.stream_admit(tenant, "lapsed", MINUTE_US, 2)
    clock.advance(30)
    await engine.stream_renew(tenant, "kept", MINUTE_US)
    clock.advance(30.001)

    assert await engine.stream_admit(tenant, "new", MINUTE_US, 2)
    assert not await engine.stream_admit(tenant, "another", MINUTE_US, 2)


async def test_renewing_a_released_stream_does_not_count_it_again(
    engine: Engine, tenant: str
) -> None:
    assert await engine.stream_admit(tenant, "s1", MINUTE_US, 1)
    await engine.stream_release(tenant, "s1")
    await engine.stream_renew(tenant, "s1", MINUTE_US)

    assert await engine.stream_admit(tenant, "s2", MINUTE_US, 1)


async def test_the_publish_allowance_grants_the_burst_then_says_how_long_to_wait(
    engine: Engine, tenant: str
) -> None:
    granted = [await engine.rate_take(tenant, 1, SLOW, 3) for _ in range(3)]
    wait = await engine.rate_take(tenant, 1, SLOW, 3)

    assert granted == [0.0, 0.0, 0.0]
    assert 990 < wait <= 1000  # one event at 0.001/s
    # A refusal takes nothing: the wait is the same when asked again.
    assert 990 < await engine.rate_take(tenant, 1, SLOW, 3) <= 1000


async def test_a_batch_takes_its_size_from_the_allowance(engine: Engine, tenant: str) -> None:
    assert await engine.rate_take(tenant, 4, SLOW, 5) == 0.0
    wait = await engine.rate_take(tenant, 2, SLOW, 5)

    assert 990 < wait <= 1000  # one of the two is missing
    assert await engine.rate_take(tenant, 1, SLOW, 5) == 0.0


async def test_allowances_are_per_tenant(engine: Engine, tenant: str, other_tenant: str) -> None:
    assert await engine.rate_take(tenant, 2, SLOW, 2) == 0.0

    assert await engine.rate_take(other_tenant, 2, SLOW, 2) == 0.0
    assert await engine.rate_take(tenant, 1, SLOW, 2) > 0


async def test_dropping_a_tenant_forgets_its_streams_and_allowance(
    engine: Engine, tenant: str
) -> None:
    assert await engine.stream_admit(tenant, "s1", MINUTE_US, 1)
    assert await engine.rate_take(tenant, 1, SLOW, 1) == 0.0

    await engine.drop_tenant(tenant)

    assert await engine.stream_admit(tenant, "s2", MINUTE_US, 1)
    assert await engine.rate_take(tenant, 1, SLOW, 1) == 0.0
