"""Rules of the admin service that need no HTTP: a process-local catalog refuses changes; a
deleted tenant's id rests before it can be created again, and then starts empty."""

from __future__ import annotations

import pytest

from app.admin import Admin, AdminService
from app.directory import Directory
from app.errors import Conflict, TenantRecentlyDeleted
from app.model import ChannelKey
from storage.memory import MemoryCatalog, MemoryEngine
from tests.contract._support import KEEP_ALL, publish_one
from tests.fakes import FakeClock

OPERATOR = Admin(tenant=None, subject="operator")


REUSE_DELAY_S = 60


def _service(
    *, process_local: bool, clock: FakeClock | None = None, engine: MemoryEngine | None = None
) -> tuple[AdminService, MemoryCatalog]:
    clock = clock or FakeClock()
    catalog = MemoryCatalog()
    directory = Directory(catalog, clock, ttl=5)
    service = AdminService(
        catalog,
        engine or MemoryEngine(clock, idempotency_ttl=60),
        directory,
        clock,
        tenant_id_reuse_delay=REUSE_DELAY_S,
        process_local_catalog=process_local,
    )
    return service, catalog


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
