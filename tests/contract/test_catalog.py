"""The Catalog contract: the memory and Postgres implementations behave the same."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from app.catalog import Catalog, ClientRecord, Tenant, TenantSettings, UserRecord
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


_FULL_SETTINGS = TenantSettings(
    retention_max_age=3600.5,
    retention_max_count=250,
    publish_rate=12.5,
    publish_burst=40,
    max_subscribers=7,
    max_event_size=2048,
    max_channels=33,
    cors_origins=("https://app.example.com", "http://localhost:8080"),
    require_defined_channels=True,
)


def test_full_settings_differ_from_the_defaults_in_every_field() -> None:
    defaults = TenantSettings()
    same = [
        f.name
        for f in dataclasses.fields(TenantSettings)
        if getattr(_FULL_SETTINGS, f.name) == getattr(defaults, f.name)
    ]
    assert same == []


async def test_add_tenant_reports_a_taken_id_and_keeps_the_first(catalog: Catalog) -> None:
    first = Tenant(_unique("t"), suspended=True, settings=_FULL_SETTINGS)
    second = Tenant(first.tenant_id)

    assert await catalog.add_tenant(first) is True
    assert await catalog.add_tenant(second) is False
    assert await catalog.tenant(first.tenant_id) == first


async def test_tenants_lists_every_tenant_ordered_by_id(catalog: Catalog) -> None:
    stem = _unique("t")
    # Punctuation that a linguistic collation would skip: the order must be by code point.
    mine = [
        Tenant(f"{stem}a"),
        Tenant(f"{stem}_a", suspended=True),
        Tenant(f"{stem}-b"),
        Tenant(f"{stem}0"),
    ]
    for tenant in mine:
        assert await catalog.add_tenant(tenant) is True

    listed = await catalog.tenants()

    ids = [tenant.tenant_id for tenant in listed]
    assert ids == sorted(ids)
    assert [tenant_id for tenant_id in ids if tenant_id.startswith(stem)] == [
        f"{stem}-b",
        f"{stem}0",
        f"{stem}_a",
        f"{stem}a",
    ]
    assert [tenant for tenant in listed if tenant.tenant_id.startswith(stem)] == sorted(
        mine, key=lambda tenant: tenant.tenant_id
    )


async def test_update_tenant_replaces_status_and_every_setting(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    updated = Tenant(tenant.tenant_id, suspended=True, settings=_FULL_SETTINGS)

    assert await catalog.update_tenant(updated) is True
    assert await catalog.tenant(tenant.tenant_id) == updated
    assert updated in await catalog.tenants()

    restored = Tenant(tenant.tenant_id)
    assert await catalog.update_tenant(restored) is True
    assert await catalog.tenant(tenant.tenant_id) == restored


async def test_update_tenant_of_an_unknown_tenant_is_false(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"), suspended=True, settings=_FULL_SETTINGS)

    assert await catalog.update_tenant(tenant) is False
    assert await catalog.tenant(tenant.tenant_id) is None


async def test_delete_tenant_removes_its_clients_and_users_only(catalog: Catalog) -> None:
    doomed, kept = Tenant(_unique("t")), Tenant(_unique("t"))
    doomed_client = ClientRecord(_unique("c"), doomed.tenant_id, "h", ("publish",))
    kept_client = ClientRecord(_unique("c"), kept.tenant_id, "h", ("subscribe",))
    doomed_user = UserRecord(_unique("u"), doomed.tenant_id, "pw")
    kept_user = UserRecord(_unique("u"), kept.tenant_id, "pw")
    for tenant in (doomed, kept):
        await catalog.add_tenant(tenant)
    for client in (doomed_client, kept_client):
        await catalog.add_client(client)
    for user in (doomed_user, kept_user):
        await catalog.add_user(user)

    assert await catalog.delete_tenant(doomed.tenant_id) is True
    assert await catalog.delete_tenant(doomed.tenant_id) is False

    assert await catalog.tenant(doomed.tenant_id) is None
    assert doomed.tenant_id not in [tenant.tenant_id for tenant in await catalog.tenants()]
    assert await catalog.client(doomed_client.client_id) is None
    assert await catalog.clients(doomed.tenant_id) == []
    assert await catalog.user(doomed_user.username) is None
    assert await catalog.tenant(kept.tenant_id) == kept
    assert await catalog.clients(kept.tenant_id) == [kept_client]
    assert await catalog.user(kept_user.username) == kept_user


async def test_delete_tenant_of_an_unknown_tenant_is_false(catalog: Catalog) -> None:
    assert await catalog.delete_tenant(_unique("t")) is False


async def test_clients_lists_only_the_tenants_clients_ordered_by_id(catalog: Catalog) -> None:
    tenant, other = Tenant(_unique("t")), Tenant(_unique("t"))
    for record in (tenant, other):
        await catalog.add_tenant(record)
    stem = _unique("c")
    mine = [
        ClientRecord(f"{stem}a", tenant.tenant_id, "h", ("publish",)),
        ClientRecord(f"{stem}_a", tenant.tenant_id, "h", ("admin",), revoked=True),
        ClientRecord(f"{stem}-b", tenant.tenant_id, "h", ("subscribe",), jwt_public_key="PEM"),
        ClientRecord(f"{stem}0", tenant.tenant_id, "h", ("publish", "subscribe")),
    ]
    theirs = ClientRecord(f"{stem}-0", other.tenant_id, "h", ("publish",))
    for client in [*mine, theirs]:
        await catalog.add_client(client)

    listed = await catalog.clients(tenant.tenant_id)

    assert [client.client_id for client in listed] == [
        f"{stem}-b",
        f"{stem}0",
        f"{stem}_a",
        f"{stem}a",
    ]
    assert listed == sorted(mine, key=lambda client: client.client_id)
    assert await catalog.clients(other.tenant_id) == [theirs]
    assert await catalog.clients(_unique("t")) == []


async def test_clients_reflects_a_replaced_client(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    first = ClientRecord(_unique("c"), tenant.tenant_id, "old", ("publish",))
    await catalog.add_client(first)
    rotated = ClientRecord(first.client_id, tenant.tenant_id, "new", ("subscribe",), revoked=True)
    await catalog.add_client(rotated)

    assert await catalog.clients(tenant.tenant_id) == [rotated]


async def test_a_client_with_narrowed_scopes_round_trips(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    client = ClientRecord(
        _unique("c"),
        tenant.tenant_id,
        "h",
        ("publish:/event/Order*", "subscribe:/data/**", "subscribe"),
    )
    await catalog.add_client(client)

    assert await catalog.client(client.client_id) == client
    assert await catalog.clients(tenant.tenant_id) == [client]
