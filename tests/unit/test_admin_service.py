"""Rules of the admin service that need no HTTP: a process-local catalog refuses changes."""

from __future__ import annotations

import pytest

from app.admin import Admin, AdminService
from app.directory import Directory
from app.errors import Conflict
from storage.memory import MemoryCatalog, MemoryEngine
from tests.fakes import FakeClock

OPERATOR = Admin(tenant=None, subject="operator")


def _service(*, process_local: bool) -> tuple[AdminService, MemoryCatalog]:
    clock = FakeClock()
    catalog = MemoryCatalog()
    directory = Directory(catalog, clock, ttl=5)
    engine = MemoryEngine(clock, idempotency_ttl=60)
    service = AdminService(catalog, engine, directory, clock, process_local_catalog=process_local)
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
