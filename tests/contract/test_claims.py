"""`Engine.claim_once`: single-use names (assertion ids, refresh tokens) remembered until they
expire, shared by every node."""

from __future__ import annotations

import asyncio
import uuid

from app.engine import Engine
from tests.fakes import FakeClock

MINUTE_US = 60_000_000


def _name() -> str:
    return uuid.uuid4().hex


async def test_the_first_claim_wins_and_later_ones_are_refused(engine: Engine) -> None:
    name = _name()

    assert await engine.claim_once("refresh", name, MINUTE_US) is True
    assert await engine.claim_once("refresh", name, MINUTE_US) is False
    assert await engine.claim_once("refresh", name, MINUTE_US) is False


async def test_scopes_and_names_are_claimed_separately(engine: Engine) -> None:
    name = _name()

    assert await engine.claim_once("refresh", name, MINUTE_US)
    assert await engine.claim_once("assertion", name, MINUTE_US)
    assert await engine.claim_once("refresh", _name(), MINUTE_US)


async def test_a_claim_holds_until_its_expiry_and_not_after(
    engine: Engine, clock: FakeClock
) -> None:
    name = _name()
    assert await engine.claim_once("assertion", name, MINUTE_US)

    clock.advance(59)
    assert await engine.claim_once("assertion", name, MINUTE_US) is False
    clock.advance(2)
    assert await engine.claim_once("assertion", name, MINUTE_US) is True
    # Claimed anew: held again for its own lifetime.
    assert await engine.claim_once("assertion", name, MINUTE_US) is False


async def test_a_refused_claim_does_not_extend_the_first(engine: Engine, clock: FakeClock) -> None:
    name = _name()
    assert await engine.claim_once("refresh", name, MINUTE_US)
    clock.advance(30)
    assert await engine.claim_once("refresh", name, 10 * MINUTE_US) is False

    clock.advance(31)
    assert await engine.claim_once("refresh", name, MINUTE_US) is True


async def test_concurrent_claims_of_one_name_have_exactly_one_winner(engine: Engine) -> None:
    name = _name()

    results = await asyncio.gather(
        *(engine.claim_once("refresh", name, MINUTE_US) for _ in range(20))
    )

    assert sorted(results) == [False] * 19 + [True]
