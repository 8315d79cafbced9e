"""The Catalog contract: the memory and Postgres implementations behave the same."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator

import pytest

from app.catalog import (
    Catalog,
    ChannelDefinition,
    ClientRecord,
    SchemaVersion,
    Tenant,
    TenantSettings,
    UserRecord,
)
from app.schemas import canonical, new_schema_id
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


DELETED_US = 1_700_000_000_000_000


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
    max_streams_per_client=3,
    max_event_size=2048,
    max_channels=33,
    cors_origins=("https://app.example.com", "http://localhost:8080"),
    require_defined_channels=True,
)


async def test_adding_a_client_if_absent_never_replaces_one(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    first = ClientRecord(_unique("c"), tenant.tenant_id, "first", ("publish",), generation="a")
    later = dataclasses.replace(first, secret_hash="later", generation="b")
    revoked = dataclasses.replace(first, revoked=True)

    assert await catalog.add_client_if_absent(first) is True
    assert await catalog.add_client_if_absent(later) is False
    assert await catalog.client(first.client_id) == first
    await catalog.add_client(revoked)
    assert await catalog.add_client_if_absent(later) is False
    assert await catalog.client(first.client_id) == revoked


async def test_concurrent_adds_if_absent_of_one_client_have_one_winner(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    client_id = _unique("c")
    records = [
        ClientRecord(client_id, tenant.tenant_id, f"hash-{n}", ("publish",), generation=str(n))
        for n in range(8)
    ]

    created = await asyncio.gather(*(catalog.add_client_if_absent(r) for r in records))

    assert sorted(created) == [False] * 7 + [True]
    assert await catalog.client(client_id) == records[created.index(True)]


async def test_adding_a_user_if_absent_never_replaces_one(catalog: Catalog) -> None:
    tenant = Tenant(_unique("t"))
    await catalog.add_tenant(tenant)
    first = UserRecord(_unique("u"), tenant.tenant_id, "first")
    records = [dataclasses.replace(first, password_hash=f"hash-{n}") for n in range(4)]

    assert await catalog.add_user_if_absent(first) is True
    assert await asyncio.gather(*(catalog.add_user_if_absent(r) for r in records)) == [False] * 4
    assert await catalog.user(first.username) == first


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

    assert await catalog.delete_tenant(doomed.tenant_id, deleted_us=DELETED_US) is True
    assert await catalog.delete_tenant(doomed.tenant_id, deleted_us=DELETED_US) is False

    assert await catalog.tenant(doomed.tenant_id) is None
    assert doomed.tenant_id not in [tenant.tenant_id for tenant in await catalog.tenants()]
    assert await catalog.client(doomed_client.client_id) is None
    assert await catalog.clients(doomed.tenant_id) == []
    assert await catalog.user(doomed_user.username) is None
    assert await catalog.tenant(kept.tenant_id) == kept
    assert await catalog.clients(kept.tenant_id) == [kept_client]
    assert await catalog.user(kept_user.username) == kept_user


async def test_delete_tenant_of_an_unknown_tenant_is_false(catalog: Catalog) -> None:
    unknown = _unique("t")

    assert await catalog.delete_tenant(unknown, deleted_us=DELETED_US) is False
    assert await catalog.tenant_deleted_at(unknown) is None


async def test_a_deleted_id_records_when_until_a_tenant_of_it_is_created_again(
    catalog: Catalog,
) -> None:
    tenant, other = Tenant(_unique("t")), Tenant(_unique("t"))
    for record in (tenant, other):
        await catalog.add_tenant(record)
    assert await catalog.tenant_deleted_at(tenant.tenant_id) is None

    await catalog.delete_tenant(tenant.tenant_id, deleted_us=DELETED_US)
    assert await catalog.tenant_deleted_at(tenant.tenant_id) == DELETED_US
    assert await catalog.tenant_deleted_at(other.tenant_id) is None

    assert await catalog.add_tenant(tenant) is True
    assert await catalog.tenant_deleted_at(tenant.tenant_id) is None
    await catalog.delete_tenant(tenant.tenant_id, deleted_us=DELETED_US + 5)
    assert await catalog.tenant_deleted_at(tenant.tenant_id) == DELETED_US + 5
    await catalog.add_tenant(tenant)
    await catalog.delete_tenant(tenant.tenant_id, deleted_us=DELETED_US + 9)
    assert await catalog.tenant_deleted_at(tenant.tenant_id) == DELETED_US + 9


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


# -- channel definitions and schema history ------------------------------------------------


def _schema_version(
    tenant: str, channel: str, version: int, document: object, created_us: int = 0
) -> SchemaVersion:
    text = canonical(document)
    return SchemaVersion(
        schema_id=new_schema_id(tenant, channel, version, text),
        tenant=tenant,
        channel=channel,
        version=version,
        document=text,
        created_us=created_us or 1_700_000_000_000_000 + version,
    )


async def _new_tenant(catalog: Catalog) -> str:
    tenant = Tenant(_unique("t"))
    assert await catalog.add_tenant(tenant) is True
    return tenant.tenant_id


async def _define_with_history(
    catalog: Catalog, tenant: str, name: str, versions: int
) -> tuple[ChannelDefinition, list[SchemaVersion]]:
    """Define `name` and record `versions` schema versions, each `{"maxLength": n}`."""
    history: list[SchemaVersion] = []
    definition = ChannelDefinition(tenant, name, description="orders", owner="team-a")
    for number in range(1, versions + 1):
        version = _schema_version(tenant, name, number, {"type": "string", "maxLength": number})
        definition = dataclasses.replace(definition, schema=version)
        await catalog.save_channel(definition, new_version=version)
        history.append(version)
    return definition, history


async def test_an_unknown_channel_is_none(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)

    assert await catalog.channel(tenant, "/event/Nothing__e") is None
    assert await catalog.channel(_unique("t"), "/event/Nothing__e") is None
    assert await catalog.channels(tenant) == []
    assert await catalog.schema_versions(tenant, "/event/Nothing__e") == []


async def test_a_channel_without_a_schema_round_trips(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    definition = ChannelDefinition(
        tenant, "/event/Order_Placed__e", description="Orders as placed", owner="orders-team"
    )

    await catalog.save_channel(definition)

    assert await catalog.channel(tenant, definition.name) == definition
    assert await catalog.channels(tenant) == [definition]
    assert await catalog.schema_versions(tenant, definition.name) == []


async def test_saving_again_replaces_description_and_owner(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    first = ChannelDefinition(tenant, "/event/A", description="old", owner="a")
    await catalog.save_channel(first)
    second = ChannelDefinition(tenant, "/event/A", description="new", owner="")

    await catalog.save_channel(second)

    assert await catalog.channel(tenant, "/event/A") == second
    assert await catalog.channels(tenant) == [second]


async def test_channels_lists_only_the_tenants_channels_ordered_by_name(
    catalog: Catalog,
) -> None:
    tenant, other = await _new_tenant(catalog), await _new_tenant(catalog)
    # Punctuation and case that a linguistic collation would reorder: by code point.
    names = ["/event/b", "/event/a_b", "/event/A", "/event/a-b", "/event/a0", "/event/a"]
    for name in names:
        await catalog.save_channel(ChannelDefinition(tenant, name, description=name))
    theirs = ChannelDefinition(other, "/event/0", owner="them")
    await catalog.save_channel(theirs)

    listed = await catalog.channels(tenant)

    assert [definition.name for definition in listed] == [
        "/event/A",
        "/event/a",
        "/event/a-b",
        "/event/a0",
        "/event/a_b",
        "/event/b",
    ]
    assert all(definition.tenant == tenant for definition in listed)
    assert [definition.description for definition in listed] == sorted(names)
    assert await catalog.channels(other) == [theirs]
    assert await catalog.channels(_unique("t")) == []


async def test_new_versions_build_the_history_oldest_first(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    definition, history = await _define_with_history(catalog, tenant, "/event/Order__e", 3)

    assert await catalog.schema_versions(tenant, "/event/Order__e") == history
    current = await catalog.channel(tenant, "/event/Order__e")
    assert current == definition
    assert current is not None
    assert current.schema == history[-1]
    assert [version.version for version in history] == [1, 2, 3]
    assert await catalog.channels(tenant) == [definition]


async def test_schema_finds_any_version_by_id(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    _, history = await _define_with_history(catalog, tenant, "/event/Order__e", 2)

    for version in history:
        assert await catalog.schema(version.schema_id) == version
    assert await catalog.schema(new_schema_id(tenant, "/event/Order__e", 3, "{}")) is None
    assert await catalog.schema(_unique("s")) is None


async def test_saving_without_a_new_version_keeps_the_history(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    definition, history = await _define_with_history(catalog, tenant, "/event/Order__e", 2)
    renamed = dataclasses.replace(definition, description="renamed", owner="team-b")

    await catalog.save_channel(renamed)

    assert await catalog.channel(tenant, "/event/Order__e") == renamed
    assert await catalog.schema_versions(tenant, "/event/Order__e") == history


async def test_removing_the_schema_keeps_the_history(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    definition, history = await _define_with_history(catalog, tenant, "/event/Order__e", 2)
    unschematised = dataclasses.replace(definition, schema=None)

    await catalog.save_channel(unschematised)

    current = await catalog.channel(tenant, "/event/Order__e")
    assert current == unschematised
    assert current is not None
    assert current.schema is None
    assert await catalog.channels(tenant) == [unschematised]
    assert await catalog.schema_versions(tenant, "/event/Order__e") == history
    for version in history:
        assert await catalog.schema(version.schema_id) == version


async def test_a_schema_can_be_restored_after_removal_as_a_new_version(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    definition, history = await _define_with_history(catalog, tenant, "/event/Order__e", 1)
    await catalog.save_channel(dataclasses.replace(definition, schema=None))
    again = _schema_version(tenant, "/event/Order__e", 2, {"type": "integer"})
    restored = dataclasses.replace(definition, schema=again)

    await catalog.save_channel(restored, new_version=again)

    assert await catalog.channel(tenant, "/event/Order__e") == restored
    assert await catalog.schema_versions(tenant, "/event/Order__e") == [*history, again]


@pytest.mark.parametrize(
    ("max_age", "max_count"),
    [(90.25, 500), (3600.5, None), (None, 7), (None, None), (0.5, 1)],
)
async def test_a_retention_override_round_trips(
    catalog: Catalog, max_age: float | None, max_count: int | None
) -> None:
    tenant = await _new_tenant(catalog)
    definition = ChannelDefinition(
        tenant, "/event/Kept__e", retention_max_age=max_age, retention_max_count=max_count
    )

    await catalog.save_channel(definition)

    stored = await catalog.channel(tenant, definition.name)
    assert stored == definition
    assert stored is not None
    assert type(stored.retention_max_age) is type(max_age)
    assert type(stored.retention_max_count) is type(max_count)
    assert await catalog.channels(tenant) == [definition]


async def test_a_retention_override_can_be_cleared(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    kept = ChannelDefinition(
        tenant, "/event/Kept__e", retention_max_age=120.5, retention_max_count=10
    )
    await catalog.save_channel(kept)
    cleared = dataclasses.replace(kept, retention_max_age=None, retention_max_count=None)

    await catalog.save_channel(cleared)

    assert await catalog.channel(tenant, kept.name) == cleared


async def test_delete_channel_removes_the_definition_and_its_history(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    _, history = await _define_with_history(catalog, tenant, "/event/Doomed__e", 2)
    kept, kept_history = await _define_with_history(catalog, tenant, "/event/Kept__e", 1)

    assert await catalog.delete_channel(tenant, "/event/Doomed__e") is True
    assert await catalog.delete_channel(tenant, "/event/Doomed__e") is False

    assert await catalog.channel(tenant, "/event/Doomed__e") is None
    assert await catalog.channels(tenant) == [kept]
    assert await catalog.schema_versions(tenant, "/event/Doomed__e") == []
    for version in history:
        assert await catalog.schema(version.schema_id) is None
    assert await catalog.schema_versions(tenant, "/event/Kept__e") == kept_history
    assert await catalog.schema(kept_history[0].schema_id) == kept_history[0]


async def test_delete_channel_of_an_unknown_channel_is_false(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)

    assert await catalog.delete_channel(tenant, "/event/Nothing__e") is False
    assert await catalog.delete_channel(_unique("t"), "/event/Nothing__e") is False


async def test_a_deleted_channel_can_be_defined_again_from_scratch(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    _, history = await _define_with_history(catalog, tenant, "/event/Again__e", 2)
    assert await catalog.delete_channel(tenant, "/event/Again__e") is True

    # The same first version again: the same schema id, which must be free once more.
    definition, again = await _define_with_history(catalog, tenant, "/event/Again__e", 1)

    assert again == history[:1]
    assert await catalog.channel(tenant, "/event/Again__e") == definition
    assert await catalog.schema_versions(tenant, "/event/Again__e") == again
    assert await catalog.schema(history[1].schema_id) is None


async def test_delete_tenant_removes_its_channel_definitions(catalog: Catalog) -> None:
    doomed, kept = await _new_tenant(catalog), await _new_tenant(catalog)
    _, doomed_history = await _define_with_history(catalog, doomed, "/event/Order__e", 2)
    await catalog.save_channel(ChannelDefinition(doomed, "/event/Bare__e"))
    kept_definition, kept_history = await _define_with_history(catalog, kept, "/event/Order__e", 1)

    assert await catalog.delete_tenant(doomed, deleted_us=DELETED_US) is True

    assert await catalog.channels(doomed) == []
    assert await catalog.channel(doomed, "/event/Order__e") is None
    assert await catalog.channel(doomed, "/event/Bare__e") is None
    assert await catalog.schema_versions(doomed, "/event/Order__e") == []
    for version in doomed_history:
        assert await catalog.schema(version.schema_id) is None
    assert await catalog.channels(kept) == [kept_definition]
    assert await catalog.schema_versions(kept, "/event/Order__e") == kept_history


async def test_a_recreated_tenant_starts_without_channels(catalog: Catalog) -> None:
    tenant = await _new_tenant(catalog)
    await _define_with_history(catalog, tenant, "/event/Order__e", 1)
    assert await catalog.delete_tenant(tenant, deleted_us=DELETED_US) is True

    assert await catalog.add_tenant(Tenant(tenant)) is True

    assert await catalog.channels(tenant) == []
    assert await catalog.schema_versions(tenant, "/event/Order__e") == []
    definition, history = await _define_with_history(catalog, tenant, "/event/Order__e", 1)
    assert await catalog.channels(tenant) == [definition]
    assert await catalog.schema_versions(tenant, "/event/Order__e") == history


async def test_two_tenants_define_the_same_channel_independently(catalog: Catalog) -> None:
    first, second = await _new_tenant(catalog), await _new_tenant(catalog)
    name = "/event/Shared__e"
    first_definition, first_history = await _define_with_history(catalog, first, name, 2)
    second_version = _schema_version(second, name, 1, {"type": "object"})
    second_definition = ChannelDefinition(
        second,
        name,
        description="theirs",
        owner="team-b",
        retention_max_count=3,
        schema=second_version,
    )
    await catalog.save_channel(second_definition, new_version=second_version)

    assert await catalog.channel(first, name) == first_definition
    assert await catalog.channel(second, name) == second_definition
    assert await catalog.schema_versions(first, name) == first_history
    assert await catalog.schema_versions(second, name) == [second_version]
    assert second_version.schema_id != first_history[0].schema_id

    await catalog.save_channel(dataclasses.replace(second_definition, schema=None))
    assert await catalog.channel(first, name) == first_definition

    assert await catalog.delete_channel(second, name) is True
    assert await catalog.channel(first, name) == first_definition
    assert await catalog.schema_versions(first, name) == first_history
    assert await catalog.schema(second_version.schema_id) is None
    assert await catalog.schema(first_history[0].schema_id) == first_history[0]
