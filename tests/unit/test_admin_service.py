"""Rules of the admin service that need no HTTP: a process-local catalog refuses changes; a
deleted tenant's id rests before it can be created again, and then starts empty."""

from __future__ import annotations

import pytest

from app.admin import Admin, AdminService, tenant_id_reuse_delay
from app.directory import Directory
from app.errors import Conflict, EngineUnavailable, NotFound, TenantRecentlyDeleted
from app.model import ChannelKey
from app.settings import Settings
from storage.memory import MemoryCatalog, MemoryEngine
from tests.contract._support import KEEP_ALL, publish_one
from tests.fakes import FakeClock

OPERATOR = Admin(tenant=None, subject="operator")


REUSE_DELAY_S = 60


def _service(
    *,
    process_local: bool = False,
    clock: FakeClock | None = None,
    engine: MemoryEngine | None = None,
    durable: bool = True,
) -> tuple[AdminService, MemoryCatalog]:
    clock = clock or FakeClock()
    catalog = MemoryCatalog()
    directory = Directory(catalog, clock, ttl=5, max_stale=5)
    service = AdminService(
        catalog,
        engine or MemoryEngine(clock, idempotency_ttl=60),
        directory,
        clock,
        tenant_id_reuse_delay=REUSE_DELAY_S,
        process_local_catalog=process_local,
        durable_catalog=durable,
    )
    return service, catalog


class _DroppingEngine(MemoryEngine):
    """The memory engine, recording each drop's `since_us`; the first `unfinished` drops stop
    early, as a Redis drop past its deadline does (having dropped nothing here)."""

    def __init__(self, clock: FakeClock, unfinished: int = 0) -> None:
        super().__init__(clock, idempotency_ttl=60)
        self.unfinished = unfinished
        self.since: list[int | None] = []

    async def drop_tenant(self, tenant: str, *, since_us: int | None = None) -> int:
        self.since.append(since_us)
        if self.unfinished:
            self.unfinished -= 1
            raise EngineUnavailable("dropping takes longer: send the same request again")
        return await super().drop_tenant(tenant, since_us=since_us)


async def test_a_catalog_local_to_one_of_several_workers_refuses_changes() -> None:
    service, catalog = _service(process_local=True)

    with pytest.raises(Conflict, match="REPLAYBUS_DATABASE_URL"):
        await service.create_tenant(OPERATOR, "acme", None)

    assert await catalog.tenants() == []
    assert await service.list_tenants(OPERATOR) == []  # reading stays possible


async def test_a_shared_or_single_process_catalog_accepts_changes() -> None:
    service, catalog = _service(process_local=False)

    await service.create_tenant(OPERATOR, "acme", None)

    assert [tenant.tenant_id for tenant in await catalog.tenants()] == ["acme"]


async def test_a_deleted_tenants_id_is_refused_until_the_delay_then_starts_empty() -> None:
    clock = FakeClock()
    engine = MemoryEngine(clock, idempotency_ttl=60)
    service, _ = _service(process_local=False, clock=clock, engine=engine)
    channel = ChannelKey("acme", "/event/Order__e")
    await service.create_tenant(OPERATOR, "acme", None)
    await service.delete_tenant(OPERATOR, "acme")
    # Another node, its cache still holding the tenant, publishes after the deletion.
    await publish_one(engine, channel, KEEP_ALL)

    clock.advance(REUSE_DELAY_S - 10)
    with pytest.raises(TenantRecentlyDeleted, match="in 10 s") as refused:
        await service.create_tenant(OPERATOR, "acme", None)
    assert refused.value.retry_after == 10
    assert (await engine.window(channel)).count == 1  # nothing swept while refused

    clock.advance(10)
    await service.create_tenant(OPERATOR, "acme", None)
    assert (await engine.window(channel)).count == 0
    assert await engine.channel_names("acme") == []


async def test_an_existing_tenant_is_a_conflict_and_its_events_are_left_alone() -> None:
    clock = FakeClock()
    engine = MemoryEngine(clock, idempotency_ttl=60)
    service, _ = _service(process_local=False, clock=clock, engine=engine)
    channel = ChannelKey("acme", "/event/Order__e")
    await service.create_tenant(OPERATOR, "acme", None)
    await service.delete_tenant(OPERATOR, "acme")
    clock.advance(REUSE_DELAY_S)
    await service.create_tenant(OPERATOR, "acme", None)
    await publish_one(engine, channel, KEEP_ALL)

    with pytest.raises(Conflict, match="already exists") as refused:
        await service.create_tenant(OPERATOR, "acme", None)
    assert not isinstance(refused.value, TenantRecentlyDeleted)
    assert (await engine.window(channel)).count == 1


def test_the_id_rests_longer_than_any_node_may_serve_the_deleted_tenant() -> None:
    settings = Settings()
    # Cached for the TTL, served stale for the bound past it, a request admitted then held.
    longest_serving = settings.catalog_cache_ttl + settings.catalog_max_stale
    assert tenant_id_reuse_delay(settings) > longest_serving + settings.bayeux_timeout
    longer = Settings(catalog_max_stale=600)
    assert tenant_id_reuse_delay(longer) - tenant_id_reuse_delay(settings) == (
        600 - settings.catalog_max_stale
    )


async def test_a_deletion_whose_drop_stops_early_deletes_the_tenant_and_a_second_one_finishes() -> (
    None
):
    clock = FakeClock()
    engine = _DroppingEngine(clock, unfinished=1)
    service, catalog = _service(clock=clock, engine=engine)
    channel = ChannelKey("acme", "/event/Order__e")
    await service.create_tenant(OPERATOR, "acme", None)
    await publish_one(engine, channel, KEEP_ALL)
    deleted_us = clock.now_us()

    with pytest.raises(EngineUnavailable, match="'acme' is deleted, but not all its data"):
        await service.delete_tenant(OPERATOR, "acme")
    assert await catalog.tenant("acme") is None
    clock.advance(1)
    assert await service.delete_tenant(OPERATOR, "acme") == 1  # goes on dropping

    assert (await engine.window(channel)).count == 0
    # Both go on with a drop begun after the deletion, none older.
    assert engine.since == [deleted_us, deleted_us]
    with pytest.raises(NotFound):
        await service.delete_tenant(OPERATOR, "never-existed")


async def test_deleting_a_deleted_tenant_again_drops_what_a_stale_node_wrote() -> None:
    clock = FakeClock()
    engine = MemoryEngine(clock, idempotency_ttl=60)
    service, _ = _service(clock=clock, engine=engine)
    channel = ChannelKey("acme", "/event/Order__e")
    await service.create_tenant(OPERATOR, "acme", None)
    await service.delete_tenant(OPERATOR, "acme")
    await publish_one(engine, channel, KEEP_ALL)  # a node that still had the tenant cached

    assert await service.delete_tenant(OPERATOR, "acme") == 1
    assert (await engine.window(channel)).count == 0


async def test_a_creation_continues_only_a_drop_begun_once_nobody_could_write() -> None:
    clock = FakeClock()
    engine = _DroppingEngine(clock)
    service, _ = _service(clock=clock, engine=engine)
    await service.create_tenant(OPERATOR, "acme", None)
    await service.delete_tenant(OPERATOR, "acme")
    deleted_us = clock.now_us()
    clock.advance(REUSE_DELAY_S + 30)
    engine.unfinished = 1

    with pytest.raises(EngineUnavailable):
        await service.create_tenant(OPERATOR, "acme", None)
    await service.create_tenant(OPERATOR, "acme", None)

    quiet_us = deleted_us + REUSE_DELAY_S * 1_000_000
    assert engine.since == [deleted_us, quiet_us, quiet_us]


async def test_a_catalog_that_forgets_deletions_drops_the_ids_leftovers_on_creation() -> None:
    """The embedded catalog loses its tenants and their deletions with its process, while a
    Redis engine keeps their data: a tenant created under an old id must not inherit it."""
    clock = FakeClock()
    engine = _DroppingEngine(clock)
    channel = ChannelKey("acme", "/event/Order__e")
    await publish_one(engine, channel, KEEP_ALL)  # left by a tenant of an earlier process
    clock.advance(10)
    forgetful, _ = _service(clock=clock, engine=engine, durable=False)
    durable, _ = _service(clock=clock, engine=engine, durable=True)

    await durable.create_tenant(OPERATOR, "globex", None)
    await forgetful.create_tenant(OPERATOR, "acme", None)

    assert engine.since == [clock.now_us()]  # only the forgetful one drops, since it started
    assert (await engine.window(channel)).count == 0
