"""`Directory`: tenants and clients cached for the TTL, served stale while the catalog is down
(for a bounded time), one catalog read per key at a time, and `forget` for this node's own
changes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import pytest

import app.directory
from app.access import Principal
from app.catalog import ClientRecord, Tenant
from app.directory import Directory
from app.errors import CatalogUnavailable, TenantSuspended, TokenInvalid
from storage.memory import MemoryCatalog
from tests.fakes import FakeClock

R = TypeVar("R")
TTL = 5.0
MAX_STALE = 120.0
TENANT = Tenant("acme")
OTHER_TENANT = Tenant("globex")
CLIENT = ClientRecord("acme-app", "acme", "hash", ("publish", "subscribe"))
OTHER_CLIENT = ClientRecord("globex-app", "globex", "hash", ("publish",))


class CountingCatalog(MemoryCatalog):
    """The real in-memory catalog whose reads (`tenant`, `client`) are counted, can be made to
    fail with CatalogUnavailable, and can be held open until `gate` is set: before the value is
    read, or after it (`hold_after_read`, a reply still on its way back)."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: Counter[tuple[str, str]] = Counter()
        self.down = False
        self.gate: asyncio.Event | None = None
        self.hold_after_read = False
        self.reading = asyncio.Event()  # set once a read is waiting on `gate`

    async def _hold(self) -> None:
        if self.gate is not None:
            self.reading.set()
            await self.gate.wait()

    async def _read(self, kind: str, key: str, load: Callable[[str], Awaitable[R]]) -> R:
        self.reads[kind, key] += 1
        if not self.hold_after_read:
            await self._hold()
        if self.down:
            raise CatalogUnavailable("the catalog is unreachable")
        value = await load(key)
        if self.hold_after_read:
            await self._hold()
        return value

    async def tenant(self, tenant_id: str) -> Tenant | None:
        return await self._read("tenant", tenant_id, super().tenant)

    async def client(self, client_id: str) -> ClientRecord | None:
        return await self._read("client", client_id, super().client)


@dataclass
class World:
    catalog: CountingCatalog
    clock: FakeClock
    directory: Directory


@pytest.fixture
async def world() -> World:
    catalog = CountingCatalog()
    for tenant in (TENANT, OTHER_TENANT):
        assert await catalog.add_tenant(tenant)
    for client in (CLIENT, OTHER_CLIENT):
        await catalog.add_client(client)
    clock = FakeClock()
    return World(catalog, clock, Directory(catalog, clock, TTL, max_stale=MAX_STALE))


def principal(tenant: str = "acme", client_id: str = "acme-app") -> Principal:
    return Principal(tenant, client_id, frozenset({"publish"}), expires_at=2e9)


async def suspend(catalog: CountingCatalog, tenant: Tenant) -> None:
    assert await catalog.update_tenant(dataclasses.replace(tenant, suspended=True))


async def revoke(catalog: CountingCatalog, client: ClientRecord) -> None:
    await catalog.add_client(dataclasses.replace(client, revoked=True))


# --- admit ---------------------------------------------------------------------------------------


async def test_admit_returns_the_tenant_of_a_live_client(world: World) -> None:
    assert await world.directory.admit(principal()) == TENANT


@pytest.mark.parametrize(
    ("tenant", "client_id"),
    [
        pytest.param("acme", "nobody", id="unknown client"),
        pytest.param("acme", "globex-app", id="client of another tenant"),
        pytest.param("initech", "acme-app", id="token tenant differs from the client's"),
    ],
)
async def test_admit_rejects_a_client_that_is_not_the_tokens(
    world: World, tenant: str, client_id: str
) -> None:
    with pytest.raises(TokenInvalid):
        await world.directory.admit(principal(tenant, client_id))


async def test_admit_rejects_a_revoked_client(world: World) -> None:
    await revoke(world.catalog, CLIENT)
    with pytest.raises(TokenInvalid):
        await world.directory.admit(principal())


async def test_admit_rejects_a_client_whose_tenant_is_unknown(world: World) -> None:
    await world.catalog.add_client(ClientRecord("ghost-app", "ghost", "hash", ("publish",)))
    with pytest.raises(TokenInvalid):
        await world.directory.admit(principal("ghost", "ghost-app"))


async def test_admit_rejects_a_suspended_tenant(world: World) -> None:
    await suspend(world.catalog, TENANT)
    with pytest.raises(TenantSuspended, match="acme"):
        await world.directory.admit(principal())


async def test_tenant_returns_none_for_an_unknown_tenant(world: World) -> None:
    assert await world.directory.tenant("initech") is None
    assert await world.directory.tenant("acme") == TENANT


# --- the TTL -------------------------------------------------------------------------------------


async def test_a_hit_within_the_ttl_does_not_read_the_catalog_again(world: World) -> None:
    await world.directory.admit(principal())
    assert world.catalog.reads == {("tenant", "acme"): 1, ("client", "acme-app"): 1}
    world.clock.advance(TTL - 0.001)
    await world.directory.admit(principal())
    await world.directory.tenant("acme")
    assert world.catalog.reads == {("tenant", "acme"): 1, ("client", "acme-app"): 1}


async def test_a_miss_is_cached_too(world: World) -> None:
    assert await world.directory.tenant("initech") is None
    assert await world.directory.tenant("initech") is None
    assert world.catalog.reads["tenant", "initech"] == 1


async def test_a_suspension_within_the_ttl_is_not_seen_and_after_it_is(world: World) -> None:
    await world.directory.admit(principal())
    await suspend(world.catalog, TENANT)
    world.clock.advance(TTL - 0.001)
    assert await world.directory.admit(principal()) == TENANT  # bounded staleness
    world.clock.advance(0.001)
    with pytest.raises(TenantSuspended):
        await world.directory.admit(principal())
    assert world.catalog.reads["tenant", "acme"] == 2


async def test_a_revocation_is_seen_after_the_ttl(world: World) -> None:
    await world.directory.admit(principal())
    await revoke(world.catalog, CLIENT)
    world.clock.advance(TTL)
    with pytest.raises(TokenInvalid):
        await world.directory.admit(principal())
    assert world.catalog.reads["client", "acme-app"] == 2


async def test_a_new_tenant_is_seen_after_the_ttl_of_its_cached_absence(world: World) -> None:
    assert await world.directory.tenant("initech") is None
    assert await world.catalog.add_tenant(Tenant("initech"))
    world.clock.advance(TTL)
    assert await world.directory.tenant("initech") == Tenant("initech")


async def test_forget_makes_the_next_read_fresh(world: World) -> None:
    await world.directory.admit(principal())
    await suspend(world.catalog, TENANT)
    await revoke(world.catalog, CLIENT)
    world.directory.forget(tenant="acme")
    tenant = await world.directory.tenant("acme")
    assert tenant is not None
    assert tenant.suspended
    assert world.catalog.reads["tenant", "acme"] == 2
    world.directory.forget(client="acme-app")
    with pytest.raises(TokenInvalid):
        await world.directory.admit(principal())
    assert world.catalog.reads["client", "acme-app"] == 2


async def test_forget_of_one_key_leaves_the_others_cached(world: World) -> None:
    await world.directory.tenant("acme")
    await world.directory.tenant("globex")
    world.directory.forget(tenant="globex", client="never-cached")
    await world.directory.tenant("acme")
    await world.directory.tenant("globex")
    assert world.catalog.reads["tenant", "acme"] == 1
    assert world.catalog.reads["tenant", "globex"] == 2


async def test_hits_and_misses_are_counted(world: World) -> None:
    directory = world.directory
    assert (directory.hits, directory.misses) == (0, 0)
    await directory.admit(principal())  # client and tenant: two misses
    assert (directory.hits, directory.misses) == (0, 2)
    await directory.admit(principal())
    assert (directory.hits, directory.misses) == (2, 2)
    await directory.tenant("acme")
    assert (directory.hits, directory.misses) == (3, 2)
    world.clock.advance(TTL)
    await directory.tenant("acme")
    assert (directory.hits, directory.misses) == (3, 3)


# --- while the catalog is down -------------------------------------------------------------------


async def test_known_entries_are_served_past_the_ttl_while_the_catalog_is_down(
    world: World,
) -> None:
    await world.directory.admit(principal())
    world.catalog.down = True
    for _ in range(5):
        world.clock.advance(TTL)
        assert await world.directory.admit(principal()) == TENANT
        assert await world.directory.tenant("acme") == TENANT


async def test_known_entries_are_served_stale_no_longer_than_the_bound(world: World) -> None:
    """A node cut off from the catalog must stop serving a tenant (deleted meanwhile, perhaps)
    and its clients' tokens once the bound is past: the id's reuse delay rests on it."""
    await world.directory.admit(principal())
    world.catalog.down = True
    world.clock.advance(TTL)
    assert await world.directory.admit(principal()) == TENANT  # stale from here on
    world.clock.advance(MAX_STALE - 0.001)
    assert await world.directory.admit(principal()) == TENANT

    world.clock.advance(0.001)
    with pytest.raises(CatalogUnavailable):
        await world.directory.admit(principal())
    with pytest.raises(CatalogUnavailable):
        await world.directory.tenant("acme")
    with pytest.raises(CatalogUnavailable):
        await world.directory.client("acme-app")
    world.catalog.down = False  # and once the catalog is back, so is the service
    assert await world.directory.admit(principal()) == TENANT


async def test_the_bound_counts_from_the_last_successful_read(world: World) -> None:
    await world.directory.admit(principal())
    world.clock.advance(TTL)
    await world.directory.admit(principal())  # read again: a new bound
    world.catalog.down = True
    world.clock.advance(TTL + MAX_STALE - 0.001)
    assert await world.directory.admit(principal()) == TENANT
    world.clock.advance(0.001)
    with pytest.raises(CatalogUnavailable):
        await world.directory.admit(principal())


async def test_the_catalog_is_retried_at_most_once_a_second_while_down(world: World) -> None:
    reads = world.catalog.reads
    await world.directory.admit(principal())
    world.catalog.down = True
    world.clock.advance(TTL)
    for _ in range(3):  # the first fails over to the stale entry, the rest are hits
        assert await world.directory.admit(principal()) == TENANT
    assert (reads["tenant", "acme"], reads["client", "acme-app"]) == (2, 2)
    world.clock.advance(0.5)
    await world.directory.admit(principal())
    world.clock.advance(0.499)
    await world.directory.admit(principal())
    assert (reads["tenant", "acme"], reads["client", "acme-app"]) == (2, 2)
    world.clock.advance(0.001)  # one second since the failed read
    for _ in range(3):
        await world.directory.admit(principal())
    assert (reads["tenant", "acme"], reads["client", "acme-app"]) == (3, 3)
    world.clock.advance(60)  # however long it has been, still one read per call
    await world.directory.admit(principal())
    assert (reads["tenant", "acme"], reads["client", "acme-app"]) == (4, 4)


async def test_an_entry_never_seen_raises_catalog_unavailable(world: World) -> None:
    await world.directory.admit(principal())
    world.catalog.down = True
    with pytest.raises(CatalogUnavailable):
        await world.directory.tenant("globex")
    with pytest.raises(CatalogUnavailable):
        await world.directory.admit(principal("globex", "globex-app"))
    with pytest.raises(CatalogUnavailable):  # no negative caching of the failure: tried again
        await world.directory.tenant("globex")
    assert world.catalog.reads["tenant", "globex"] == 2
    assert await world.directory.admit(principal()) == TENANT


async def test_a_known_client_of_an_unseen_tenant_raises_catalog_unavailable(
    world: World,
) -> None:
    await world.directory.tenant("acme")
    world.catalog.down = True
    with pytest.raises(CatalogUnavailable):
        await world.directory.admit(principal())


async def test_entries_refresh_once_the_catalog_recovers(world: World) -> None:
    await world.directory.admit(principal())
    world.catalog.down = True
    world.clock.advance(TTL)
    assert await world.directory.admit(principal()) == TENANT
    await suspend(world.catalog, TENANT)  # changed while this node could not see it
    world.catalog.down = False
    world.clock.advance(0.999)
    assert await world.directory.admit(principal()) == TENANT
    world.clock.advance(0.001)
    with pytest.raises(TenantSuspended):
        await world.directory.admit(principal())
    # Refreshed with a full TTL again, not the one-second retry.
    world.clock.advance(TTL - 0.001)
    with pytest.raises(TenantSuspended):
        await world.directory.admit(principal())
    assert world.catalog.reads["tenant", "acme"] == 3
    assert await world.directory.tenant("globex") == OTHER_TENANT


async def test_an_unseen_entry_loads_once_the_catalog_recovers(world: World) -> None:
    world.catalog.down = True
    with pytest.raises(CatalogUnavailable):
        await world.directory.admit(principal())
    world.catalog.down = False
    assert await world.directory.admit(principal()) == TENANT


# --- one read per key at a time ------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True], ids=["first read", "refresh"])
async def test_concurrent_lookups_of_one_key_share_one_catalog_read(
    world: World, cached: bool
) -> None:
    directory = world.directory
    if cached:
        assert await directory.tenant("acme") == TENANT
        world.clock.advance(TTL)
    await suspend(world.catalog, TENANT)
    before = world.catalog.reads["tenant", "acme"]
    misses = directory.misses
    world.catalog.gate = asyncio.Event()
    lookups = [asyncio.create_task(directory.tenant("acme")) for _ in range(5)]
    await world.catalog.reading.wait()
    assert directory.misses == misses + 5  # every lookup is waiting on the one read
    assert not any(lookup.done() for lookup in lookups)
    world.catalog.gate.set()
    results = await asyncio.gather(*lookups)
    assert results == [dataclasses.replace(TENANT, suspended=True)] * 5
    assert world.catalog.reads["tenant", "acme"] == before + 1
    assert await directory.tenant("acme") == results[0]  # and it is cached afterwards
    assert world.catalog.reads["tenant", "acme"] == before + 1


async def test_concurrent_admits_share_one_read_per_key(world: World) -> None:
    world.catalog.gate = asyncio.Event()
    admits = [asyncio.create_task(world.directory.admit(principal())) for _ in range(4)]
    await world.catalog.reading.wait()
    world.catalog.gate.set()
    assert await asyncio.gather(*admits) == [TENANT] * 4
    assert world.catalog.reads == {("tenant", "acme"): 1, ("client", "acme-app"): 1}


async def test_lookups_of_different_keys_do_not_share_a_read(world: World) -> None:
    world.catalog.gate = asyncio.Event()
    lookups = [
        asyncio.create_task(world.directory.tenant(tenant_id))
        for tenant_id in ("acme", "globex", "acme")
    ]
    await world.catalog.reading.wait()
    world.catalog.gate.set()
    assert await asyncio.gather(*lookups) == [TENANT, OTHER_TENANT, TENANT]
    assert world.catalog.reads == {("tenant", "acme"): 1, ("tenant", "globex"): 1}


async def test_a_failed_shared_read_of_an_unseen_key_fails_every_waiter(world: World) -> None:
    world.catalog.down = True
    world.catalog.gate = asyncio.Event()
    lookups = [asyncio.create_task(world.directory.tenant("acme")) for _ in range(3)]
    await world.catalog.reading.wait()
    world.catalog.gate.set()
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert all(isinstance(result, CatalogUnavailable) for result in results)
    assert world.catalog.reads["tenant", "acme"] == 1


async def test_a_failed_shared_refresh_serves_every_waiter_the_cached_entry(
    world: World,
) -> None:
    assert await world.directory.tenant("acme") == TENANT
    world.clock.advance(TTL)
    world.catalog.down = True
    world.catalog.gate = asyncio.Event()
    lookups = [asyncio.create_task(world.directory.tenant("acme")) for _ in range(3)]
    await world.catalog.reading.wait()
    world.catalog.gate.set()
    assert await asyncio.gather(*lookups) == [TENANT] * 3
    assert world.catalog.reads["tenant", "acme"] == 2


async def test_a_cancelled_waiter_does_not_cancel_the_shared_read(world: World) -> None:
    world.catalog.gate = asyncio.Event()
    first = asyncio.create_task(world.directory.tenant("acme"))
    second = asyncio.create_task(world.directory.tenant("acme"))
    await world.catalog.reading.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    world.catalog.gate.set()
    assert await second == TENANT
    assert world.catalog.reads["tenant", "acme"] == 1


# --- forget while a read is in flight ------------------------------------------------------------


async def test_a_lookup_after_forget_does_not_join_a_read_begun_before_it(world: World) -> None:
    world.catalog.hold_after_read = True  # the old value is read, its reply still on the way
    world.catalog.gate = asyncio.Event()
    before = asyncio.create_task(world.directory.tenant("acme"))
    await world.catalog.reading.wait()
    await suspend(world.catalog, TENANT)  # this node changes the tenant, then forgets it
    world.directory.forget(tenant="acme")
    after = asyncio.create_task(world.directory.tenant("acme"))
    world.catalog.gate.set()
    assert await before == TENANT  # began before the change: the old value is fair
    tenant = await after
    assert tenant is not None
    assert tenant.suspended, "the next read after forget() returned the pre-change value"


async def test_a_read_begun_before_forget_does_not_recache_the_old_value(world: World) -> None:
    world.catalog.hold_after_read = True
    world.catalog.gate = asyncio.Event()
    before = asyncio.create_task(world.directory.tenant("acme"))
    await world.catalog.reading.wait()
    await suspend(world.catalog, TENANT)
    world.directory.forget(tenant="acme")
    world.catalog.gate.set()
    assert await before == TENANT
    tenant = await world.directory.tenant("acme")
    assert tenant is not None
    assert tenant.suspended, "a read begun before forget() cached the old value for a full TTL"


async def test_each_lookup_reports_one_result_hit_miss_or_stale() -> None:
    catalog = CountingCatalog()
    assert await catalog.add_tenant(TENANT)
    clock = FakeClock()
    results: list[str] = []
    directory = Directory(catalog, clock, TTL, max_stale=MAX_STALE, on_lookup=results.append)

    await directory.tenant("acme")  # read from the catalog
    await directory.tenant("acme")  # cached
    catalog.down = True
    clock.advance(TTL)
    await directory.tenant("acme")  # expired, the catalog is down: the cached entry is used
    await directory.tenant("acme")  # still served from that entry while the catalog is down
    catalog.down = False
    clock.advance(TTL)
    await directory.tenant("acme")  # read again

    assert results == ["miss", "hit", "stale", "stale", "miss"]


# --- bounds --------------------------------------------------------------------------------------


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> World:
    """A directory whose caches keep at most 3 names found and 2 absent, each."""
    monkeypatch.setattr(app.directory, "_MAX_ENTRIES", 3)
    monkeypatch.setattr(app.directory, "_MAX_ABSENT", 2)
    catalog = CountingCatalog()
    clock = FakeClock()
    return World(catalog, clock, Directory(catalog, clock, TTL, max_stale=MAX_STALE))


async def _clients(world: World, count: int) -> list[str]:
    ids = [f"app-{n}" for n in range(count)]
    for client_id in ids:
        await world.catalog.add_client(ClientRecord(client_id, "acme", "hash", ("publish",)))
    return ids


async def test_a_flood_of_unknown_names_does_not_push_out_the_known_ones(small: World) -> None:
    known = await _clients(small, 3)
    for client_id in known:
        assert await small.directory.client(client_id) is not None

    for n in range(100):
        assert await small.directory.client(f"nobody-{n}") is None
    for client_id in known:
        assert await small.directory.client(client_id) is not None

    assert all(small.catalog.reads["client", client_id] == 1 for client_id in known)


async def test_absent_names_are_bounded_least_recently_used_first(small: World) -> None:
    for name in ("nobody-0", "nobody-1"):
        assert await small.directory.client(name) is None
    assert await small.directory.client("nobody-0") is None  # used again: now the newest

    assert await small.directory.client("nobody-2") is None  # pushes out nobody-1
    for name in ("nobody-0", "nobody-2", "nobody-1"):
        assert await small.directory.client(name) is None

    assert small.catalog.reads["client", "nobody-0"] == 1
    assert small.catalog.reads["client", "nobody-1"] == 2
    assert small.catalog.reads["client", "nobody-2"] == 1


async def test_known_names_are_bounded_least_recently_used_first(small: World) -> None:
    first, second, third, fourth = await _clients(small, 4)
    for client_id in (first, second, third, first):
        await small.directory.client(client_id)

    await small.directory.client(fourth)  # pushes out `second`, the least recently used
    for client_id in (first, second):
        await small.directory.client(client_id)

    assert small.catalog.reads["client", first] == 1
    assert small.catalog.reads["client", second] == 2


async def test_a_name_found_later_leaves_the_absent_table(small: World) -> None:
    assert await small.directory.client("late") is None
    await small.catalog.add_client(ClientRecord("late", "acme", "hash", ("publish",)))
    small.clock.advance(TTL + 1)
    assert await small.directory.client("late") is not None
    for n in range(5):  # churn the absent table
        assert await small.directory.client(f"nobody-{n}") is None

    assert await small.directory.client("late") is not None
    assert small.catalog.reads["client", "late"] == 2
