"""`Catalog` on PostgreSQL. Driver errors become `CatalogUnavailable`; none leave `storage/`."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from app.catalog import ChannelDefinition, ClientRecord, SchemaVersion, Tenant, UserRecord
from app.errors import CatalogUnavailable
from app.tenancy import settings_from_json, settings_to_json
from storage.failures import describe
from storage.postgres.migrations import pending_migrations

__all__ = ["PostgresCatalog"]

log = logging.getLogger("replaybus.catalog")

T = TypeVar("T")


_TENANT_COLUMNS = "SELECT tenant_id, suspended, settings FROM tenants"
_CLIENT_COLUMNS = (
    "SELECT client_id, tenant_id, secret_hash, scopes, revoked, jwt_public_key, generation "
    "FROM oauth_clients"
)


_VERSION_COLUMNS = (
    "SELECT schema_id, tenant_id, name, version, document, created_us FROM schema_versions"
)
_CHANNEL_COLUMNS = (
    "SELECT d.tenant_id, d.name, d.description, d.owner, d.retention, "
    "v.schema_id, v.version, v.document, v.created_us "
    "FROM channel_definitions d LEFT JOIN schema_versions v ON v.schema_id = d.current_schema_id"
)


def _version(row: Any) -> SchemaVersion:
    return SchemaVersion(
        schema_id=row["schema_id"],
        tenant=row["tenant_id"],
        channel=row["name"],
        version=row["version"],
        document=row["document"],
        created_us=row["created_us"],
    )


def _channel(row: Any) -> ChannelDefinition:
    retention = json.loads(row["retention"])
    return ChannelDefinition(
        tenant=row["tenant_id"],
        name=row["name"],
        description=row["description"],
        owner=row["owner"],
        retention_max_age=retention.get("maxAge"),
        retention_max_count=retention.get("maxCount"),
        schema=_version(row) if row["schema_id"] is not None else None,
    )


def _tenant(row: Any) -> Tenant:
    return Tenant(
        row["tenant_id"], row["suspended"], settings_from_json(json.loads(row["settings"]))
    )


def _client(row: Any) -> ClientRecord:
    return ClientRecord(
        client_id=row["client_id"],
        tenant=row["tenant_id"],
        secret_hash=row["secret_hash"],
        scopes=tuple(row["scopes"]),
        revoked=row["revoked"],
        jwt_public_key=row["jwt_public_key"],
        generation=row["generation"],
    )


class PostgresCatalog:
    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
        pool_timeout: float = 5.0,
    ) -> None:
        """Every call is bounded: `connect_timeout` to open a connection, `command_timeout`
        for a query's answer, `pool_timeout` to get a connection (opening one included).
        Beyond a bound the call raises CatalogUnavailable, as when the database is down."""
        self._url = url
        self._min_size = min_size
        self._max_size = max_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool_timeout = pool_timeout
        self._pool: Any = None

    async def __aenter__(self) -> PostgresCatalog:
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=self._min_size,
                max_size=self._max_size,
                timeout=self._connect_timeout,
                command_timeout=self._command_timeout,
            )
            async with self._pool.acquire(timeout=self._pool_timeout) as connection:
                pending = await pending_migrations(connection)
        except (OSError, asyncpg.PostgresError) as error:  # timeouts are OSErrors
            if self._pool is not None:
                self._pool.terminate()
            raise CatalogUnavailable(
                f"the catalog database is unavailable: {describe(error)}"
            ) from None
        if pending:
            await self._close()
            raise CatalogUnavailable(
                f"the catalog database needs migrations {', '.join(pending)}: "
                "run `replaybus migrate` first"
            )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._pool is not None:
            try:
                # A graceful close waits for the server; a silent one must not hold shutdown.
                await asyncio.wait_for(self._pool.close(), self._command_timeout)
            except TimeoutError:
                self._pool.terminate()

    async def _run(self, operation: Callable[[Any], Awaitable[T]]) -> T:
        try:
            async with self._pool.acquire(timeout=self._pool_timeout) as connection:
                return await operation(connection)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("catalog database error: %s", describe(error))
            raise CatalogUnavailable("the catalog database is unreachable") from None

    async def tenant(self, tenant_id: str) -> Tenant | None:
        row = await self._run(
            lambda c: c.fetchrow(f"{_TENANT_COLUMNS} WHERE tenant_id = $1", tenant_id)
        )
        return _tenant(row) if row else None

    async def tenants(self) -> list[Tenant]:
        rows = await self._run(
            lambda c: c.fetch(f'{_TENANT_COLUMNS} ORDER BY tenant_id COLLATE "C"')
        )
        return [_tenant(row) for row in rows]

    async def add_tenant(self, tenant: Tenant) -> bool:
        async def run(connection: Any) -> bool:
            async with connection.transaction():
                status = await connection.execute(
                    "INSERT INTO tenants (tenant_id, suspended, settings) VALUES ($1, $2, $3) "
                    "ON CONFLICT DO NOTHING",
                    tenant.tenant_id,
                    tenant.suspended,
                    json.dumps(settings_to_json(tenant.settings)),
                )
                if status != "INSERT 0 1":
                    return False
                await connection.execute(
                    "DELETE FROM tenant_tombstones WHERE tenant_id = $1", tenant.tenant_id
                )
                return True

        return await self._run(run)

    async def update_tenant(self, tenant: Tenant) -> bool:
        status = await self._run(
            lambda c: c.execute(
                "UPDATE tenants SET suspended = $2, settings = $3 WHERE tenant_id = $1",
                tenant.tenant_id,
                tenant.suspended,
                json.dumps(settings_to_json(tenant.settings)),
            )
        )
        return bool(status == "UPDATE 1")

    async def delete_tenant(self, tenant_id: str, *, deleted_us: int) -> bool:
        async def run(connection: Any) -> bool:
            async with connection.transaction():
                status = await connection.execute(
                    "DELETE FROM tenants WHERE tenant_id = $1", tenant_id
                )
                if status != "DELETE 1":
                    return False
                await connection.execute(
                    "INSERT INTO tenant_tombstones (tenant_id, deleted_us) VALUES ($1, $2) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET deleted_us = $2",
                    tenant_id,
                    deleted_us,
                )
                return True

        return await self._run(run)

    async def tenant_deleted_at(self, tenant_id: str) -> int | None:
        deleted: int | None = await self._run(
            lambda c: c.fetchval(
                "SELECT deleted_us FROM tenant_tombstones WHERE tenant_id = $1", tenant_id
            )
        )
        return deleted

    async def client(self, client_id: str) -> ClientRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(f"{_CLIENT_COLUMNS} WHERE client_id = $1", client_id)
        )
        return _client(row) if row else None

    async def clients(self, tenant_id: str) -> list[ClientRecord]:
        rows = await self._run(
            lambda c: c.fetch(
                f'{_CLIENT_COLUMNS} WHERE tenant_id = $1 ORDER BY client_id COLLATE "C"', tenant_id
            )
        )
        return [_client(row) for row in rows]

    async def channel(self, tenant_id: str, name: str) -> ChannelDefinition | None:
        row = await self._run(
            lambda c: c.fetchrow(
                f"{_CHANNEL_COLUMNS} WHERE d.tenant_id = $1 AND d.name = $2", tenant_id, name
            )
        )
        return _channel(row) if row else None

    async def channels(self, tenant_id: str) -> list[ChannelDefinition]:
        rows = await self._run(
            lambda c: c.fetch(
                f'{_CHANNEL_COLUMNS} WHERE d.tenant_id = $1 ORDER BY d.name COLLATE "C"',
                tenant_id,
            )
        )
        return [_channel(row) for row in rows]

    async def save_channel(
        self, definition: ChannelDefinition, new_version: SchemaVersion | None = None
    ) -> None:
        retention: dict[str, Any] = {}
        if definition.retention_max_age is not None:
            retention["maxAge"] = definition.retention_max_age
        if definition.retention_max_count is not None:
            retention["maxCount"] = definition.retention_max_count

        async def run(connection: Any) -> None:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO channel_definitions "
                    "(tenant_id, name, description, owner, retention, current_schema_id) "
                    "VALUES ($1, $2, $3, $4, $5, NULL) ON CONFLICT (tenant_id, name) DO UPDATE "
                    "SET description = $3, owner = $4, retention = $5, updated_at = now()",
                    definition.tenant,
                    definition.name,
                    definition.description,
                    definition.owner,
                    json.dumps(retention),
                )
                if new_version is not None:
                    await connection.execute(
                        "INSERT INTO schema_versions "
                        "(schema_id, tenant_id, name, version, document, created_us) "
                        "VALUES ($1, $2, $3, $4, $5, $6)",
                        new_version.schema_id,
                        new_version.tenant,
                        new_version.channel,
                        new_version.version,
                        new_version.document,
                        new_version.created_us,
                    )
                current = definition.schema.schema_id if definition.schema else None
                await connection.execute(
                    "UPDATE channel_definitions SET current_schema_id = $3 "
                    "WHERE tenant_id = $1 AND name = $2",
                    definition.tenant,
                    definition.name,
                    current,
                )

        await self._run(run)

    async def delete_channel(self, tenant_id: str, name: str) -> bool:
        status = await self._run(
            lambda c: c.execute(
                "DELETE FROM channel_definitions WHERE tenant_id = $1 AND name = $2",
                tenant_id,
                name,
            )
        )
        return bool(status == "DELETE 1")

    async def schema_versions(self, tenant_id: str, name: str) -> list[SchemaVersion]:
        rows = await self._run(
            lambda c: c.fetch(
                f"{_VERSION_COLUMNS} WHERE tenant_id = $1 AND name = $2 ORDER BY version",
                tenant_id,
                name,
            )
        )
        return [_version(row) for row in rows]

    async def schema(self, schema_id: str) -> SchemaVersion | None:
        row = await self._run(
            lambda c: c.fetchrow(f"{_VERSION_COLUMNS} WHERE schema_id = $1", schema_id)
        )
        return _version(row) if row else None

    async def user(self, username: str) -> UserRecord | None:
        row = await self._run(
            lambda c: c.fetchrow(
                "SELECT username, tenant_id, password_hash FROM users WHERE username = $1",
                username,
            )
        )
        return UserRecord(row["username"], row["tenant_id"], row["password_hash"]) if row else None

    async def add_client(self, client: ClientRecord) -> None:
        """Create the client, or replace it (a rotation or a revocation)."""
        await self._insert_client(
            client,
            "ON CONFLICT (client_id) DO UPDATE SET tenant_id = $2, secret_hash = $3, "
            "scopes = $4, revoked = $5, jwt_public_key = $6, generation = $7",
        )

    async def add_client_if_absent(self, client: ClientRecord) -> bool:
        status = await self._insert_client(client, "ON CONFLICT (client_id) DO NOTHING")
        return status == "INSERT 0 1"

    async def _insert_client(self, client: ClientRecord, on_conflict: str) -> str:
        status: str = await self._run(
            lambda c: c.execute(
                "INSERT INTO oauth_clients "
                "(client_id, tenant_id, secret_hash, scopes, revoked, jwt_public_key, generation) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7) {on_conflict}",
                client.client_id,
                client.tenant,
                client.secret_hash,
                list(client.scopes),
                client.revoked,
                client.jwt_public_key,
                client.generation,
            )
        )
        return status

    async def add_user(self, user: UserRecord) -> None:
        await self._insert_user(
            user, "ON CONFLICT (username) DO UPDATE SET tenant_id = $2, password_hash = $3"
        )

    async def add_user_if_absent(self, user: UserRecord) -> bool:
        status = await self._insert_user(user, "ON CONFLICT (username) DO NOTHING")
        return status == "INSERT 0 1"

    async def _insert_user(self, user: UserRecord, on_conflict: str) -> str:
        status: str = await self._run(
            lambda c: c.execute(
                "INSERT INTO users (username, tenant_id, password_hash) VALUES ($1, $2, $3) "
                + on_conflict,
                user.username,
                user.tenant,
                user.password_hash,
            )
        )
        return status
