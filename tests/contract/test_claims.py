"""Single-use credentials, shared by every node: `Engine.claim_once` (a tenant's JWT-bearer
assertions, each remembered until it expires, at most `limit` per tenant) and
`Engine.advance_family` (a refresh-token family's current generation, compare-and-set)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from app.engine import Engine
from app.errors import QuotaExceeded
from tests.fakes import FakeClock

MINUTE_US = 60_000_000
DAY_US = 86_400_000_000
LIMIT = 100


def _name() -> str:
    return uuid.uuid4().hex


# -- claim_once --------------------------------------------------------------------------------


async def test_the_first_claim_wins_and_later_ones_are_refused(engine: Engine, tenant: str) -> None:
    name = _name()

    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is True
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is False
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is False


async def test_owners_and_names_are_claimed_separately(
    engine: Engine, tenant: str, other_tenant: str
) -> None:
    name = _name()

    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT)
    assert await engine.claim_once(other_tenant, name, MINUTE_US, LIMIT)
    assert await engine.claim_once(tenant, _name(), MINUTE_US, LIMIT)


async def test_a_claim_holds_until_its_expiry_and_not_after(
    engine: Engine, clock: FakeClock, tenant: str
) -> None:
    name = _name()
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT)

    clock.advance(59)
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is False
    clock.advance(2)
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is True
    # Claimed anew: held again for its own lifetime.
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is False


async def test_a_refused_claim_does_not_extend_the_first(
    engine: Engine, clock: FakeClock, tenant: str
) -> None:
    name = _name()
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT)
    clock.advance(30)
    assert await engine.claim_once(tenant, name, 10 * MINUTE_US, LIMIT) is False

    clock.advance(31)
    assert await engine.claim_once(tenant, name, MINUTE_US, LIMIT) is True


async def test_concurrent_claims_of_one_name_have_exactly_one_winner(
    engine: Engine, tenant: str
) -> None:
    name = _name()

    results = await asyncio.gather(
        *(engine.claim_once(tenant, name, MINUTE_US, LIMIT) for _ in range(20))
    )

    assert sorted(results) == [False] * 19 + [True]


async def test_an_owner_at_its_limit_is_refused_until_its_oldest_claim_expires(
    engine: Engine, clock: FakeClock, tenant: str, other_tenant: str
) -> None:
    held = [_name() for _ in range(3)]
    for n, name in enumerate(held):
        assert await engine.claim_once(tenant, name, (n + 1) * MINUTE_US, 3)
        clock.advance(1)

    with pytest.raises(QuotaExceeded) as full:
        await engine.claim_once(tenant, _name(), MINUTE_US, 3)
    # A claim held already is still told apart from a new one.
    assert await engine.claim_once(tenant, held[1], MINUTE_US, 3) is False
    # Another owner is not affected.
    assert await engine.claim_once(other_tenant, _name(), MINUTE_US, 3) is True

    # The oldest was claimed 3 s ago for a minute: 57 s to go.
    assert full.value.retry_after == pytest.approx(57, abs=0.01)
    clock.advance(57)
    assert await engine.claim_once(tenant, _name(), MINUTE_US, 3) is True
    with pytest.raises(QuotaExceeded):
        await engine.claim_once(tenant, _name(), MINUTE_US, 3)


async def test_expired_claims_make_room_however_many_there_were(
    engine: Engine, clock: FakeClock, tenant: str
) -> None:
    for _ in range(5):
        assert await engine.claim_once(tenant, _name(), MINUTE_US, 5)
    clock.advance(61)

    fresh = [await engine.claim_once(tenant, _name(), MINUTE_US, 5) for _ in range(5)]

    assert fresh == [True] * 5


# -- advance_family ----------------------------------------------------------------------------


async def test_a_family_moves_on_one_generation_at_a_time(engine: Engine) -> None:
    family = _name()

    assert await engine.advance_family(family, 0, 1, DAY_US) is True  # never advanced: at 0
    assert await engine.advance_family(family, 0, 1, DAY_US) is False  # the first token, again
    assert await engine.advance_family(family, 1, 2, DAY_US) is True
    assert await engine.advance_family(family, 1, 2, DAY_US) is False
    assert await engine.advance_family(family, 0, 1, DAY_US) is False
    assert await engine.advance_family(family, 2, 3, DAY_US) is True


async def test_families_are_separate(engine: Engine) -> None:
    one, other = _name(), _name()

    assert await engine.advance_family(one, 0, 1, DAY_US)
    assert await engine.advance_family(other, 0, 1, DAY_US)
    assert await engine.advance_family(one, 1, 2, DAY_US)
    assert await engine.advance_family(other, 1, 2, DAY_US)


async def test_a_revoked_family_accepts_no_generation(engine: Engine) -> None:
    family = _name()
    assert await engine.advance_family(family, 0, 1, DAY_US)

    assert await engine.advance_family(family, 1, -1, DAY_US) is True
    assert [await engine.advance_family(family, g, g + 1, DAY_US) for g in range(3)] == [False] * 3
    # A family revoked before its first use.
    unused = _name()
    assert await engine.advance_family(unused, 0, -1, DAY_US) is True
    assert await engine.advance_family(unused, 0, 1, DAY_US) is False


async def test_a_family_is_held_until_its_expiry_then_forgotten(
    engine: Engine, clock: FakeClock
) -> None:
    family = _name()
    assert await engine.advance_family(family, 0, 1, MINUTE_US)
    clock.advance(30)
    assert await engine.advance_family(family, 1, 2, 30 * 1_000_000)  # the same expiry

    clock.advance(29)
    assert await engine.advance_family(family, 0, 1, MINUTE_US) is False
    clock.advance(2)
    # Expired: every token of the family has too, so it is at 0 again, as if never seen.
    assert await engine.advance_family(family, 2, 3, MINUTE_US) is False
    assert await engine.advance_family(family, 0, 1, MINUTE_US) is True


async def test_concurrent_uses_of_one_generation_have_exactly_one_winner(engine: Engine) -> None:
    family = _name()
    assert await engine.advance_family(family, 0, 1, DAY_US)

    results = await asyncio.gather(
        *(engine.advance_family(family, 1, 2, DAY_US) for _ in range(20))
    )

    assert sorted(results) == [False] * 19 + [True]


async def test_many_uses_of_one_family_are_not_a_limit(engine: Engine) -> None:
    family = _name()

    results = [await engine.advance_family(family, g, g + 1, DAY_US) for g in range(500)]

    assert results == [True] * 500
