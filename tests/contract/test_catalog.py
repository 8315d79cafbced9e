"""The Catalog contract: the memory and Postgres implementations behave the same."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from app.catalog import Catalog, ClientRecord, Tenant, UserRecord
from storage.memory import MemoryCatalog
from storage.postgres import PostgresCatalog
from tests.harness.postgres import RunningPostgres


@pytest.fixture(params=["memory", "postgres"])
async def catalog(request: pytest.FixtureRequest) -> AsyncIterator[Catalog]:
    if request.param == "memory":
        async with MemoryCatalog() as memory:
            yield memory
    else:
        server: RunningPostgres = request.getfixturevalue("postgres_server")
        async with PostgresCatalog(server.url()) as postgres:
            yield postgres


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def test_unknown_tenant_client_and_user_are_none(catalog: Catalog) -> None:
    assert await catalog.tenant(_unique("t")) is None
    assert await catalog.client(_unique("c")) is None
    assert await catalog.user(_unique("u")) is None


async def test_records_round_trip(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    client = ClientRecord(_unique("c"), tenant.tenant_id, "scrypt$hash", ("publish", "subscribe"))
    keyed = ClientRecord(
        _unique("c"), tenant.tenant_id, "h", ("admin",), revoked=True, jwt_public_key="PEM"
    )
    user = UserRecord(_unique("u"), tenant.tenant_id, "scrypt$pw")
    await catalog.add_tenant(tenant)
    for record in (client, keyed):
        await catalog.add_client(record)
    await catalog.add_user(user)

    assert await catalog.tenant(tenant.tenant_id) == tenant
    assert await catalog.client(client.client_id) == client
    assert await catalog.client(keyed.client_id) == keyed
    assert await catalog.user(user.username) == user


async def test_adding_again_replaces_a_client_and_keeps_a_tenant(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    await catalog.add_tenant(tenant)
    first = ClientRecord(_unique("c"), tenant.tenant_id, "old", ("publish",))
    await catalog.add_client(first)
    rotated = ClientRecord(first.client_id, tenant.tenant_id, "new", ("publish", "admin"))
    await catalog.add_client(rotated)

    assert await catalog.tenant(tenant.tenant_id) == tenant
    assert await catalog.client(first.client_id) == rotated
