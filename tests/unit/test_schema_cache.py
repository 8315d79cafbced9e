"""The validator cache: one build per schema however many ask at once, builds on its own
thread and in turns between tenants, and kept validators within a memory bound that one
tenant's schemas cannot take from another's."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from app.schema_cache import ValidatorCache
from app.schemas import SchemaValidator, canonical

MIB = 1024 * 1024
TEXT = canonical({"type": "object", "properties": {"n": {"type": "integer"}}})


class Builds:
    """A build function that records each build and, while `gate` is clear, holds it.
    Created on the test's event loop."""

    def __init__(self, weight: int = 0) -> None:
        self.weight = weight
        self.started: list[str] = []
        self.threads: set[str] = set()
        self.gate = threading.Event()
        self.gate.set()
        self._lock = threading.Lock()
        self._loop = asyncio.get_running_loop()
        self._changed = asyncio.Event()

    def __call__(self, schema_id: str, text: str) -> SchemaValidator:
        with self._lock:
            self.started.append(schema_id)
            self.threads.add(threading.current_thread().name)
        self._loop.call_soon_threadsafe(self._changed.set)
        self.gate.wait(timeout=60)
        if self.weight:
            return SchemaValidator(schema_id, weight=self.weight)
        return SchemaValidator.build(schema_id, text)

    async def started_count(self, count: int) -> None:
        """Until `count` builds have started (the builder threads run on their own)."""
        while True:
            self._changed.clear()
            if len(self.started) >= count:
                return
            await self._changed.wait()


@pytest.fixture
async def make_cache() -> AsyncIterator[Callable[..., ValidatorCache]]:
    caches: list[ValidatorCache] = []

    def make(builds: Builds, **options: int) -> ValidatorCache:
        caches.append(ValidatorCache(build=builds, **options))
        return caches[-1]

    yield make
    for cache in caches:
        await cache.__aexit__(None, None, None)


# -- building ----------------------------------------------------------------------------------


async def test_concurrent_first_requests_for_a_schema_build_it_once(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    builds = Builds()
    cache = make_cache(builds)

    found = await asyncio.gather(*(cache.validator("acme", "s1", TEXT) for _ in range(20)))

    assert builds.started == ["s1"]
    assert all(validator is found[0] for validator in found)
    assert found[0].violations({"n": 1}) == []
    assert await cache.validator("acme", "s1", TEXT) is found[0]
    assert builds.started == ["s1"]


async def test_builds_hold_no_thread_of_the_default_executor(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    builds = Builds()
    builds.gate.clear()
    cache = make_cache(builds)
    waiting = [
        asyncio.ensure_future(cache.validator(f"tenant-{n}", f"s{n}", TEXT)) for n in range(40)
    ]
    await builds.started_count(1)

    # While 40 builds are pending, work on the default executor (hashing secrets) still runs.
    assert await asyncio.to_thread(lambda: "hashed") == "hashed"
    assert len(builds.started) == 1

    builds.gate.set()
    await asyncio.gather(*waiting)
    assert builds.threads == {"schema-validators_0"}


async def test_a_cancelled_waiter_cancels_nothing_of_the_build(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    builds = Builds()
    builds.gate.clear()
    cache = make_cache(builds)
    first = asyncio.ensure_future(cache.validator("acme", "s1", TEXT))
    second = asyncio.ensure_future(cache.validator("acme", "s1", TEXT))
    await builds.started_count(1)

    first.cancel()
    builds.gate.set()

    assert (await second).schema_id == "s1"
    assert first.cancelled()
    assert cache.kept("acme", "s1")
    assert builds.started == ["s1"]


async def test_builds_take_turns_between_tenants(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    builds = Builds()
    builds.gate.clear()
    cache = make_cache(builds)
    busy = [asyncio.ensure_future(cache.validator("busy", f"b{n}", TEXT)) for n in range(6)]
    await builds.started_count(1)  # b0 is being built; b1..b5 wait
    other = asyncio.ensure_future(cache.validator("other", "o0", TEXT))
    await asyncio.sleep(0)

    builds.gate.set()
    await asyncio.gather(*busy, other)

    assert builds.started == ["b0", "o0", "b1", "b2", "b3", "b4", "b5"]


async def test_a_failed_build_fails_its_waiters_and_is_not_kept(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    builds = Builds()
    cache = make_cache(builds)

    for _ in range(2):  # tried again on the next request
        with pytest.raises(orjson.JSONDecodeError):
            await cache.validator("acme", "broken", "{not json")
    assert not cache.kept("acme", "broken")
    assert builds.started == ["broken", "broken"]


async def test_leaving_the_cache_fails_the_builds_not_done() -> None:
    builds = Builds()
    builds.gate.clear()
    async with ValidatorCache(build=builds) as cache:
        running = asyncio.ensure_future(cache.validator("acme", "s1", TEXT))
        waiting = asyncio.ensure_future(cache.validator("acme", "s2", TEXT))
        await builds.started_count(1)
    builds.gate.set()

    for pending in (running, waiting):
        with pytest.raises(asyncio.CancelledError):
            await pending
    with pytest.raises(RuntimeError, match="closed"):
        await cache.validator("acme", "s3", TEXT)


# -- keeping -----------------------------------------------------------------------------------


async def test_one_tenants_many_large_schemas_do_not_evict_anothers_validator(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    # A 64 KiB schema's compiled validators weigh about 8 MiB: 8 fill the default 64 MiB.
    cache = make_cache(Builds(weight=8 * MIB))
    await cache.validator("quiet", "q0", TEXT)

    for round_ in range(3):
        for n in range(20):
            await cache.validator("noisy", f"n{n}", TEXT)
            assert cache.kept("quiet", "q0"), (round_, n)
            assert cache.held <= 64 * MIB

    assert cache.kept("noisy", "n19")
    assert not cache.kept("noisy", "n0")


async def test_a_tenant_holding_the_most_gives_up_its_least_recently_used_first(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    cache = make_cache(Builds(weight=MIB), max_bytes=10 * MIB, min_weight=1)
    for n in range(7):
        await cache.validator("big", f"b{n}", TEXT)
    await cache.validator("big", "b0", TEXT)  # used again: b1 is now the least recent
    for n in range(3):
        await cache.validator("small", f"s{n}", TEXT)

    await cache.validator("small", "s3", TEXT)  # 11 MiB: "big" (7) gives one up
    assert not cache.kept("big", "b1")
    assert all(cache.kept("big", f"b{n}") for n in (0, 2, 3, 4, 5, 6))
    for n in range(4, 8):  # up to an equal share, then "small" gives up its own
        await cache.validator("small", f"s{n}", TEXT)
    assert [n for n in range(8) if cache.kept("small", f"s{n}")] == [3, 4, 5, 6, 7]
    assert [n for n in range(7) if cache.kept("big", f"b{n}")] == [0, 3, 4, 5, 6]
    assert cache.held == 10 * MIB


async def test_every_validator_counts_at_least_the_minimum_weight(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    cache = make_cache(Builds(weight=1), max_bytes=4 * MIB, min_weight=MIB)
    for n in range(10):
        await cache.validator("acme", f"s{n}", TEXT)

    assert cache.held == 4 * MIB
    assert [n for n in range(10) if cache.kept("acme", f"s{n}")] == [6, 7, 8, 9]


async def test_a_validator_larger_than_the_bound_is_kept_alone(
    make_cache: Callable[..., ValidatorCache],
) -> None:
    cache = make_cache(Builds(weight=8 * MIB), max_bytes=4 * MIB)
    await cache.validator("acme", "s1", TEXT)
    await cache.validator("globex", "s2", TEXT)

    assert not cache.kept("acme", "s1")
    assert cache.kept("globex", "s2")
    assert cache.held == 8 * MIB
