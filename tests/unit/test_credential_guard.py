"""`CredentialGuard`: hash checks counted through the injected hash function, never timed.

Proven secrets are not hashed again within the cache TTL (and are after it, or after a
rotation); at most `concurrency` hashes run at once and one more is refused at once; attempts
that would hash are limited per identity; unknown identities are refused without hashing."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.credential_guard import CredentialGuard
from app.credentials import hash_secret, unmatchable_hash, verify_secret
from app.errors import Overloaded, QuotaExceeded
from tests.fakes import FakeClock

SECRET = "s3cret-for-the-guard"
CACHE_TTL = 60.0


class CountingHash:
    """The real hash check, counted; optionally held in its thread until `release` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.calls: list[str] = []
        self.hold = hold
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()

    def __call__(self, secret: str, stored: str) -> bool:
        self.calls.append(stored)
        self.entered.release()
        if self.hold:
            self.release.wait(timeout=30)
        return verify_secret(secret, stored)


class Sleeps:
    """Records what the guard asks to wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


class Ticks:
    """A timer whose every reading is `step` seconds after the last: one hash at a time
    measures exactly `step`."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.fixture(scope="module")
def stored() -> str:
    return hash_secret(SECRET)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _guard(
    clock: FakeClock,
    hashing: CountingHash,
    *,
    concurrency: int = 2,
    burst: int = 100,
    sleeps: Sleeps | None = None,
    checks: list[str] | None = None,
) -> CredentialGuard:
    return CredentialGuard(
        clock,
        concurrency=concurrency,
        cache_ttl=CACHE_TTL,
        rate=1.0,
        burst=burst,
        verify=hashing,
        sleep=sleeps or Sleeps(),
        timer=Ticks(0.04),
        on_check=(checks if checks is not None else []).append,
    )


async def test_a_proven_secret_is_not_hashed_again_within_the_ttl(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash()
    checks: list[str] = []
    guard = _guard(clock, hashing, checks=checks)

    results = [await guard.verify("client:app", SECRET, stored) for _ in range(5)]

    assert results == [True] * 5
    assert len(hashing.calls) == 1
    assert checks == ["hashed", "cached", "cached", "cached", "cached"]


async def test_a_proven_secret_is_hashed_again_after_the_ttl(clock: FakeClock, stored: str) -> None:
    hashing = CountingHash()
    guard = _guard(clock, hashing)
    assert await guard.verify("client:app", SECRET, stored)

    clock.advance(CACHE_TTL + 1)

    assert await guard.verify("client:app", SECRET, stored)
    assert len(hashing.calls) == 2


async def test_a_rotated_secret_is_never_found_under_the_old_entry(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash()
    guard = _guard(clock, hashing)
    assert await guard.verify("client:app", SECRET, stored)
    rotated = hash_secret("the-new-secret")

    old_secret_after_rotation = await guard.verify("client:app", SECRET, rotated)
    new_secret = await guard.verify("client:app", "the-new-secret", rotated)

    assert (old_secret_after_rotation, new_secret) == (False, True)
    assert hashing.calls == [stored, rotated, rotated]


async def test_wrong_secrets_are_hashed_every_time_and_never_remembered(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash()
    guard = _guard(clock, hashing)

    assert [await guard.verify("client:app", "guess", stored) for _ in range(3)] == [False] * 3
    assert len(hashing.calls) == 3
    # Another identity with the same secret and hash is a different entry.
    assert await guard.verify("client:app", SECRET, stored)
    assert await guard.verify("client:other", SECRET, stored)
    assert len(hashing.calls) == 5


async def test_unknown_identities_wait_the_measured_hash_time_without_hashing(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash()
    sleeps = Sleeps()
    checks: list[str] = []
    guard = _guard(clock, hashing, sleeps=sleeps, checks=checks)
    await guard.verify("client:app", "guess", stored)  # one real check, measured
    before = len(hashing.calls)

    for n in range(50):
        await guard.refuse_unknown(f"client:nobody-{n}")

    assert len(hashing.calls) == before
    assert sleeps.waits == [pytest.approx(0.04)] * 50
    assert checks.count("unknown") == 50


async def test_the_first_unknown_identities_share_one_calibrating_hash(clock: FakeClock) -> None:
    hashing = CountingHash()
    sleeps = Sleeps()
    guard = _guard(clock, hashing, sleeps=sleeps)

    await asyncio.gather(*(guard.refuse_unknown(f"client:nobody-{n}") for n in range(20)))
    await guard.refuse_unknown("client:nobody-later")

    assert hashing.calls == [unmatchable_hash()]
    assert sleeps.waits == [pytest.approx(0.04)] * 21


async def test_concurrent_checks_of_the_same_credentials_share_one_hash(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash(hold=True)
    checks: list[str] = []
    guard = _guard(clock, hashing, concurrency=1, burst=1, checks=checks)
    first = asyncio.create_task(guard.verify("client:app", SECRET, stored))
    await asyncio.to_thread(hashing.entered.acquire)
    others = [asyncio.create_task(guard.verify("client:app", SECRET, stored)) for _ in range(9)]
    wrong = asyncio.create_task(guard.verify("client:app", "guess", stored))

    hashing.release.set()
    results = await asyncio.gather(first, *others)

    assert results == [True] * 10  # no place and no allowance needed beyond the first
    assert len(hashing.calls) == 1
    assert checks == ["hashed"] + ["cached"] * 9
    with pytest.raises(QuotaExceeded):  # other credentials are not shared: they count
        await wrong
    assert await guard.verify("client:app", SECRET, stored)  # and now it is remembered
    assert len(hashing.calls) == 1


async def test_hashes_beyond_the_concurrency_limit_are_refused_at_once(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash(hold=True)
    guard = _guard(clock, hashing, concurrency=2)
    held = [asyncio.create_task(guard.verify(f"client:app-{n}", SECRET, stored)) for n in range(2)]
    for _ in held:
        await asyncio.to_thread(hashing.entered.acquire)  # both hashes are running

    with pytest.raises(Overloaded) as refused:
        await guard.verify("client:app-3", SECRET, stored)
    with pytest.raises(Overloaded):
        await guard.refuse_unknown("client:nobody")  # calibrating needs a place too

    hashing.release.set()
    assert await asyncio.gather(*held) == [True, True]
    assert refused.value.retry_after >= 1.0
    assert len(hashing.calls) == 2  # the refused checks never reached the hash
    assert await guard.verify("client:app-3", SECRET, stored)


async def test_a_caller_that_goes_away_keeps_its_place_until_the_hash_ends(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash(hold=True)
    guard = _guard(clock, hashing, concurrency=1)
    gone = asyncio.create_task(guard.verify("client:app", SECRET, stored))
    await asyncio.to_thread(hashing.entered.acquire)

    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    with pytest.raises(Overloaded):
        await guard.verify("client:other", SECRET, stored)

    hashing.release.set()
    hashing.hold = False
    for _ in range(100):  # the thread finishing hands the place back on the loop
        if await _try(guard, stored):
            break
    else:
        raise AssertionError("the place was never given back")


async def _try(guard: CredentialGuard, stored: str) -> bool:
    try:
        return await guard.verify("client:other", SECRET, stored)
    except Overloaded:
        await asyncio.sleep(0.01)  # the worker thread's completion callback, nothing to await
        return False


async def test_attempts_that_would_hash_are_limited_per_identity(
    clock: FakeClock, stored: str
) -> None:
    hashing = CountingHash()
    guard = _guard(clock, hashing, burst=3)
    assert await guard.verify("client:app", SECRET, stored)  # proven: cached from now on

    for _ in range(2):
        assert not await guard.verify("client:app", "guess", stored)
    with pytest.raises(QuotaExceeded) as limited:
        await guard.verify("client:app", "guess", stored)
    with pytest.raises(QuotaExceeded):
        await guard.refuse_unknown("client:app")

    assert limited.value.retry_after == pytest.approx(1.0)
    assert len(hashing.calls) == 3
    # The proven secret is still served from the cache, and other identities are untouched.
    assert await guard.verify("client:app", SECRET, stored)
    assert not await guard.verify("client:other", "guess", stored)
