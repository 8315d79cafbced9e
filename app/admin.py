"""Administration: tenants (platform operator only) and each tenant's OAuth clients (the
operator, or the tenant's own `admin` scope). Another tenant's resources look absent, never
forbidden, so their existence does not leak."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.access import parse_scope
from app.catalog import (
    Catalog,
    ChannelDefinition,
    ClientRecord,
    SchemaVersion,
    Tenant,
    TenantSettings,
)
from app.channels import publishable_name
from app.clock import Clock
from app.credentials import generate_client_id, generate_secret, hash_secret
from app.directory import Directory
from app.engine import Engine
from app.errors import (
    Conflict,
    EngineUnavailable,
    IncompatibleSchema,
    InvalidBody,
    NotFound,
    PermissionDenied,
    TenantRecentlyDeleted,
)
from app.readiness import CANARY_TENANT
from app.schemas import (
    SchemaLimits,
    canonical,
    check_schema,
    compatibility_problems,
    new_schema_id,
)
from app.settings import Settings
from app.tenancy import (
    TENANT_ID,
    ServerLimits,
    check_setting,
    check_within_server,
    settings_from_json,
    tenant_retention,
    updated_settings,
)

__all__ = ["Admin", "AdminService", "ChannelChange", "IssuedClient", "tenant_id_reuse_delay"]

_CLIENT_ID = TENANT_ID  # the same safe alphabet
_MAX_SCOPES = 32
_MAX_TEXT = 1000
_CHANNEL_FIELDS = frozenset({"description", "owner", "retention", "schema", "force"})


def tenant_id_reuse_delay(settings: Settings) -> float:
    """Seconds after a tenant's deletion before its id may be created again: longer than any
    node may still serve the deleted tenant, and so write for it. A node's catalog read begun
    before the deletion may answer after it with the old tenant (within the database pool and
    command timeouts); the node then uses that entry for the catalog cache TTL, and for
    `catalog_max_stale` more if the catalog becomes unreachable (`app.directory`); and a
    request it admitted meanwhile may last a held Bayeux connect, or a store call's own
    bounds."""
    longest_request = max(
        settings.bayeux_timeout, settings.redis_pool_timeout + settings.redis_command_timeout
    )
    return (
        settings.database_pool_timeout
        + settings.database_command_timeout
        + settings.catalog_cache_ttl
        + settings.catalog_max_stale
        + longest_request
    )


@dataclass(frozen=True, slots=True)
class Admin:
    """Who administers: the platform operator (`tenant` None) or one tenant's admin client."""

    tenant: str | None
    subject: str

    @property
    def is_operator(self) -> bool:
        return self.tenant is None


@dataclass(frozen=True, slots=True)
class IssuedClient:
    """A client and its secret, which is shown this once and stored only as a hash."""

    record: ClientRecord
    secret: str


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """A saved definition; `forced` lists the compatibility problems a forced schema had."""

    definition: ChannelDefinition
    new_version: SchemaVersion | None
    forced: tuple[str, ...] = ()


def _text(body: dict[str, Any], name: str, current: str) -> str:
    value = body.get(name, current)
    if not isinstance(value, str) or len(value) > _MAX_TEXT:
        raise InvalidBody(f"{name} must be text of at most {_MAX_TEXT} characters")
    return value


def _scopes(value: Any) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or len(value) > _MAX_SCOPES
        or not all(isinstance(scope, str) for scope in value)
    ):
        raise InvalidBody(
            f"scopes must be a list of 1 to {_MAX_SCOPES} scopes, such as "
            '["publish", "subscribe:/event/Order*"]'
        )
    return tuple(dict.fromkeys(parse_scope(scope) for scope in value))


class AdminService:
    def __init__(
        self,
        catalog: Catalog,
        engine: Engine,
        directory: Directory,
        clock: Clock,
        *,
        tenant_id_reuse_delay: float,
        process_local_catalog: bool = False,
        durable_catalog: bool = True,
        limits: ServerLimits | None = None,
        schema_limits: SchemaLimits | None = None,
    ) -> None:
        """`tenant_id_reuse_delay`: seconds after a tenant's deletion before its id may be
        created again (`tenant_id_reuse_delay(settings)`).

        `process_local_catalog`: the catalog lives in this process while others serve the
        same clients (the embedded catalog with several workers), so changes are refused:
        they would reach one process only. `durable_catalog`: False when the catalog forgets
        tenants and their deletions on restart (the embedded one) while the engine may keep
        their data (Redis): every creation then drops whatever the engine holds for the id.
        `limits`: the server's bounds on tenant settings and channel definitions (default:
        those of the default settings). `schema_limits` bound channel schemas."""
        self._reuse_delay_us = int(tenant_id_reuse_delay * 1_000_000)
        self._process_local = process_local_catalog
        self._durable_catalog = durable_catalog
        self._started_us = clock.now_us()
        self._limits = limits or ServerLimits.of(Settings())
        self._schema_limits = schema_limits or SchemaLimits()
        self._catalog = catalog
        self._engine = engine
        self._directory = directory
        self._clock = clock

    # -- tenants ---------------------------------------------------------------------------

    def _writable(self) -> None:
        if self._process_local:
            raise Conflict(
                "the embedded catalog lives in each worker process, so a change would reach "
                "one of them only: set REPLAYBUS_DATABASE_URL to administer a node with several "
                "workers"
            )

    @staticmethod
    def _operator_only(admin: Admin) -> None:
        if not admin.is_operator:
            raise PermissionDenied("only the platform operator manages tenants")

    async def _visible_tenant(self, admin: Admin, tenant_id: str) -> Tenant:
        tenant = None
        if admin.is_operator or admin.tenant == tenant_id:
            tenant = await self._catalog.tenant(tenant_id)
        if tenant is None:
            raise NotFound(f"there is no tenant {tenant_id!r}")
        return tenant

    async def create_tenant(self, admin: Admin, tenant_id: Any, settings: Any) -> Tenant:
        self._writable()
        self._operator_only(admin)
        if not isinstance(tenant_id, str) or not TENANT_ID.fullmatch(tenant_id):
            raise InvalidBody("tenantId must be 1-64 letters, digits, '_' or '-'")
        if tenant_id == CANARY_TENANT:
            raise InvalidBody(f"tenantId {CANARY_TENANT!r} is reserved for the readiness check")
        tenant = Tenant(tenant_id, settings=settings_from_json(settings or {}))
        check_within_server(TenantSettings(), tenant.settings, self._limits)
        if await self._catalog.tenant(tenant_id) is not None:
            raise Conflict(f"tenant {tenant_id!r} already exists")
        await self._sweep_deleted(tenant_id)
        if not await self._catalog.add_tenant(tenant):
            raise Conflict(f"tenant {tenant_id!r} already exists")
        self._directory.forget(tenant=tenant_id)  # it may be cached as absent
        return tenant

    async def _sweep_deleted(self, tenant_id: str) -> None:
        """If a tenant of this id was deleted, refuse its re-creation until no node can still
        be serving the old one, then drop whatever such nodes wrote for it after its deletion
        (events, sessions, quota state), so the new tenant starts empty. Nothing is written
        for the old tenant after that instant, so a drop that stops at its deadline (an
        EngineUnavailable) is continued by the next attempt."""
        deleted_us = await self._catalog.tenant_deleted_at(tenant_id)
        if deleted_us is None:
            if not self._durable_catalog:
                # The catalog forgot any earlier tenant of this id when its process ended,
                # which wrote nothing for it since it started.
                await self._engine.drop_tenant(tenant_id, since_us=self._started_us)
            return
        quiet_us = deleted_us + self._reuse_delay_us
        wait_us = quiet_us - self._clock.now_us()
        if wait_us > 0:
            seconds = math.ceil(wait_us / 1_000_000)
            raise TenantRecentlyDeleted(
                f"tenant {tenant_id!r} was deleted moments ago and nodes may still serve it "
                f"from their caches: its id can be used again in {seconds} s",
                retry_after=wait_us / 1_000_000,
            )
        await self._engine.drop_tenant(tenant_id, since_us=quiet_us)

    async def list_tenants(self, admin: Admin) -> list[Tenant]:
        if admin.is_operator:
            return await self._catalog.tenants()
        assert admin.tenant is not None
        return [await self._visible_tenant(admin, admin.tenant)]

    async def get_tenant(self, admin: Admin, tenant_id: str) -> Tenant:
        return await self._visible_tenant(admin, tenant_id)

    async def update_tenant(self, admin: Admin, tenant_id: str, changes: Any) -> Tenant:
        self._writable()
        self._operator_only(admin)
        current = await self._visible_tenant(admin, tenant_id)
        settings = updated_settings(current.settings, changes)
        check_within_server(current.settings, settings, self._limits)
        return await self._save(dataclasses.replace(current, settings=settings))

    async def set_suspended(self, admin: Admin, tenant_id: str, suspended: bool) -> Tenant:
        self._writable()
        self._operator_only(admin)
        current = await self._visible_tenant(admin, tenant_id)
        return await self._save(dataclasses.replace(current, suspended=suspended))

    async def _save(self, tenant: Tenant) -> Tenant:
        if not await self._catalog.update_tenant(tenant):
            raise NotFound(f"there is no tenant {tenant.tenant_id!r}")
        self._directory.forget(tenant=tenant.tenant_id)
        return tenant

    async def delete_tenant(self, admin: Admin, tenant_id: str) -> int:
        """Delete the tenant, its clients and users, and drop its retained events, sessions and
        quota state; returns how many channels this call dropped. Tokens already issued fail
        once each node's directory notices; until then a node may still write for the tenant,
        which is why its id stays unusable for `tenant_id_reuse_delay` (see `create_tenant`).

        Dropping the data may not finish within one call (the engine's deadline): the tenant
        is deleted all the same and EngineUnavailable says so. Deleting a deleted tenant again
        (until its id is created anew) goes on dropping, and drops what other nodes wrote
        meanwhile."""
        self._writable()
        self._operator_only(admin)
        try:
            await self._visible_tenant(admin, tenant_id)
        except NotFound:
            deleted_us = await self._catalog.tenant_deleted_at(tenant_id)
            if deleted_us is None:
                raise
            return await self._drop_deleted(tenant_id, deleted_us)
        clients = await self._catalog.clients(tenant_id)
        deleted_us = self._clock.now_us()
        if not await self._catalog.delete_tenant(tenant_id, deleted_us=deleted_us):
            raise NotFound(f"there is no tenant {tenant_id!r}")
        self._directory.forget(tenant=tenant_id)
        for client in clients:
            self._directory.forget(client=client.client_id)
        return await self._drop_deleted(tenant_id, deleted_us)

    async def _drop_deleted(self, tenant_id: str, deleted_us: int) -> int:
        try:
            return await self._engine.drop_tenant(tenant_id, since_us=deleted_us)
        except EngineUnavailable as error:
            raise EngineUnavailable(
                f"tenant {tenant_id!r} is deleted, but not all its data is dropped yet: "
                f"{error.message}"
            ) from None

    # -- clients ---------------------------------------------------------------------------

    async def create_client(
        self,
        admin: Admin,
        tenant_id: str,
        scopes: Any,
        client_id: Any = None,
        jwt_public_key: Any = None,
    ) -> IssuedClient:
        self._writable()
        await self._visible_tenant(admin, tenant_id)
        if client_id is None:
            client_id = generate_client_id()
        elif not isinstance(client_id, str) or not _CLIENT_ID.fullmatch(client_id):
            raise InvalidBody("clientId must be 1-64 letters, digits, '_' or '-'")
        if jwt_public_key is not None and not isinstance(jwt_public_key, str):
            raise InvalidBody("jwtPublicKey must be a PEM public key")
        if await self._catalog.client(client_id) is not None:
            raise Conflict(f"client {client_id!r} already exists")
        secret = generate_secret()
        record = ClientRecord(
            client_id=client_id,
            tenant=tenant_id,
            secret_hash=await asyncio.to_thread(hash_secret, secret),
            scopes=_scopes(scopes),
            jwt_public_key=jwt_public_key,
            generation=secrets.token_hex(8),
        )
        await self._catalog.add_client(record)
        self._directory.forget(client=client_id)  # it may be cached as absent
        return IssuedClient(record, secret)

    async def list_clients(self, admin: Admin, tenant_id: str) -> Sequence[ClientRecord]:
        await self._visible_tenant(admin, tenant_id)
        return await self._catalog.clients(tenant_id)

    async def get_client(self, admin: Admin, tenant_id: str, client_id: str) -> ClientRecord:
        await self._visible_tenant(admin, tenant_id)
        record = await self._catalog.client(client_id)
        if record is None or record.tenant != tenant_id:
            raise NotFound(f"tenant {tenant_id!r} has no client {client_id!r}")
        return record

    async def rotate_secret(self, admin: Admin, tenant_id: str, client_id: str) -> IssuedClient:
        """A new secret; the old one stops getting new tokens at once on this node, on every
        node within the catalog cache TTL. Tokens already issued stay valid until they expire
        (revoke the client to end them)."""
        self._writable()
        record = await self.get_client(admin, tenant_id, client_id)
        if record.revoked:
            raise Conflict(f"client {client_id!r} is revoked; create a new client instead")
        secret = generate_secret()
        rotated = dataclasses.replace(
            record, secret_hash=await asyncio.to_thread(hash_secret, secret)
        )
        await self._catalog.add_client(rotated)
        self._directory.forget(client=client_id)
        return IssuedClient(rotated, secret)

    async def revoke_client(self, admin: Admin, tenant_id: str, client_id: str) -> ClientRecord:
        """No new tokens at once; tokens already issued fail on every node within the catalog
        cache TTL."""
        self._writable()
        record = await self.get_client(admin, tenant_id, client_id)
        revoked = dataclasses.replace(record, revoked=True)
        await self._catalog.add_client(revoked)
        self._directory.forget(client=client_id)
        return revoked

    # -- channel definitions ---------------------------------------------------------------

    async def define_channel(
        self, admin: Admin, tenant_id: str, channel: str, body: dict[str, Any]
    ) -> ChannelChange:
        """Create or update a channel definition. A new schema must be backward compatible
        with the current one (IncompatibleSchema lists why not) unless `force` is true;
        `"schema": null` removes the schema (which accepts everything, so is always safe)."""
        self._writable()
        tenant = await self._visible_tenant(admin, tenant_id)
        name = publishable_name(channel)
        unknown = sorted(set(body) - _CHANNEL_FIELDS)
        if unknown:
            raise InvalidBody(
                f"unknown fields {', '.join(unknown)}; known: {', '.join(sorted(_CHANNEL_FIELDS))}"
            )
        force = body.get("force", False)
        if not isinstance(force, bool):
            raise InvalidBody("force must be true or false")
        current = await self._catalog.channel(tenant_id, name) or ChannelDefinition(tenant_id, name)
        age, count = current.retention_max_age, current.retention_max_count
        if "retention" in body:
            retention = body["retention"] or {}
            if not isinstance(retention, dict) or set(retention) - {"maxAge", "maxCount"}:
                raise InvalidBody('retention must be {"maxAge": seconds, "maxCount": events}')
            age = check_setting("retentionMaxAge", retention.get("maxAge"))
            count = check_setting("retentionMaxCount", retention.get("maxCount"))
            self._check_within_tenant(tenant, age, count)
        definition = dataclasses.replace(
            current,
            description=_text(body, "description", current.description),
            owner=_text(body, "owner", current.owner),
            retention_max_age=age,
            retention_max_count=count,
        )
        new_version = None
        forced: tuple[str, ...] = ()
        if "schema" in body and body["schema"] is None:
            definition = dataclasses.replace(definition, schema=None)
        elif "schema" in body:
            document = body["schema"]
            # Checking and comparing a large schema takes a while: off the event loop.
            await asyncio.to_thread(check_schema, document, self._schema_limits)
            text = canonical(document)
            if current.schema is None or current.schema.document != text:
                problems = (
                    await asyncio.to_thread(
                        compatibility_problems, orjson.loads(current.schema.document), document
                    )
                    if current.schema is not None
                    else []
                )
                if problems and not force:
                    raise IncompatibleSchema(
                        f"the new schema of {name} is not backward compatible with version "
                        f"{current.schema.version if current.schema else 0}: "
                        + "; ".join(problems)
                        + ' (send "force": true to replace it anyway)',
                        problems,
                    )
                forced = tuple(problems)
                history = await self._catalog.schema_versions(tenant_id, name)
                version = max((v.version for v in history), default=0) + 1
                new_version = SchemaVersion(
                    schema_id=new_schema_id(tenant_id, name, version, text),
                    tenant=tenant_id,
                    channel=name,
                    version=version,
                    document=text,
                    created_us=self._clock.now_us(),
                )
                definition = dataclasses.replace(definition, schema=new_version)
        await self._catalog.save_channel(definition, new_version)
        self._directory.forget(channel=(tenant_id, name))
        return ChannelChange(definition, new_version, forced)

    def _check_within_tenant(self, tenant: Tenant, age: float | None, count: int | None) -> None:
        """A definition may keep a channel's events for less than its tenant does, not more:
        InvalidBody naming the tenant's retention otherwise. (A definition saved before the
        tenant's retention was lowered is clamped where it is used.)"""
        limit = tenant_retention(tenant.settings, self._limits.retention)
        if age is not None and age * 1_000_000 > limit.max_age_us:
            raise InvalidBody(
                f"retention.maxAge {age:g} s exceeds the retention of tenant "
                f"{tenant.tenant_id} ({limit.max_age_us / 1_000_000:g} s): a channel definition "
                "may keep events for less time than its tenant, not more"
            )
        if count is not None and count > limit.max_count:
            raise InvalidBody(
                f"retention.maxCount {count:,} exceeds the retention of tenant "
                f"{tenant.tenant_id} ({limit.max_count:,} events per channel): a channel "
                "definition may keep fewer events than its tenant, not more"
            )

    async def list_channels(self, admin: Admin, tenant_id: str) -> list[ChannelDefinition]:
        await self._visible_tenant(admin, tenant_id)
        return await self._catalog.channels(tenant_id)

    async def get_channel(
        self, admin: Admin, tenant_id: str, channel: str
    ) -> tuple[ChannelDefinition, list[SchemaVersion]]:
        await self._visible_tenant(admin, tenant_id)
        name = publishable_name(channel)
        definition = await self._catalog.channel(tenant_id, name)
        if definition is None:
            raise NotFound(f"tenant {tenant_id!r} has no channel definition {name}")
        return definition, await self._catalog.schema_versions(tenant_id, name)

    async def delete_channel(self, admin: Admin, tenant_id: str, channel: str) -> None:
        """Forget the definition and its schema history; retained events stay."""
        self._writable()
        await self._visible_tenant(admin, tenant_id)
        name = publishable_name(channel)
        if not await self._catalog.delete_channel(tenant_id, name):
            raise NotFound(f"tenant {tenant_id!r} has no channel definition {name}")
        self._directory.forget(channel=(tenant_id, name))
