"""The in-process catalog, seeded at start-up from settings."""

from __future__ import annotations

from app.catalog import ChannelDefinition, ClientRecord, SchemaVersion, Tenant, UserRecord

__all__ = ["MemoryCatalog"]


class MemoryCatalog:
    def __init__(self) -> None:
        self._tenants: dict[str, Tenant] = {}
        self._clients: dict[str, ClientRecord] = {}
        self._users: dict[str, UserRecord] = {}
        self._channels: dict[tuple[str, str], ChannelDefinition] = {}
        self._versions: dict[tuple[str, str], list[SchemaVersion]] = {}
        self._deleted: dict[str, int] = {}  # tenant id -> when it was deleted (µs)

    async def __aenter__(self) -> MemoryCatalog:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        return None

    async def tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def tenants(self) -> list[Tenant]:
        return [self._tenants[key] for key in sorted(self._tenants)]

    async def add_tenant(self, tenant: Tenant) -> bool:
        if tenant.tenant_id in self._tenants:
            return False
        self._tenants[tenant.tenant_id] = tenant
        self._deleted.pop(tenant.tenant_id, None)
        return True

    async def update_tenant(self, tenant: Tenant) -> bool:
        if tenant.tenant_id not in self._tenants:
            return False
        self._tenants[tenant.tenant_id] = tenant
        return True

    async def delete_tenant(self, tenant_id: str, *, deleted_us: int) -> bool:
        if self._tenants.pop(tenant_id, None) is None:
            return False
        self._deleted[tenant_id] = deleted_us
        for records in (self._clients, self._users):
            for key in [key for key, record in records.items() if record.tenant == tenant_id]:
                del records[key]
        for name in [name for tenant, name in self._channels if tenant == tenant_id]:
            await self.delete_channel(tenant_id, name)
        return True

    async def tenant_deleted_at(self, tenant_id: str) -> int | None:
        return self._deleted.get(tenant_id)

    async def client(self, client_id: str) -> ClientRecord | None:
        return self._clients.get(client_id)

    async def clients(self, tenant_id: str) -> list[ClientRecord]:
        return sorted(
            (record for record in self._clients.values() if record.tenant == tenant_id),
            key=lambda record: record.client_id,
        )

    async def add_client(self, client: ClientRecord) -> None:
        self._clients[client.client_id] = client

    async def add_client_if_absent(self, client: ClientRecord) -> bool:
        if client.client_id in self._clients:
            return False
        self._clients[client.client_id] = client
        return True

    async def channel(self, tenant_id: str, name: str) -> ChannelDefinition | None:
        return self._channels.get((tenant_id, name))

    async def channels(self, tenant_id: str) -> list[ChannelDefinition]:
        return [self._channels[key] for key in sorted(self._channels) if key[0] == tenant_id]

    async def save_channel(
        self, definition: ChannelDefinition, new_version: SchemaVersion | None = None
    ) -> None:
        key = (definition.tenant, definition.name)
        self._channels[key] = definition
        if new_version is not None:
            self._versions.setdefault(key, []).append(new_version)

    async def delete_channel(self, tenant_id: str, name: str) -> bool:
        self._versions.pop((tenant_id, name), None)
        return self._channels.pop((tenant_id, name), None) is not None

    async def schema_versions(self, tenant_id: str, name: str) -> list[SchemaVersion]:
        return list(self._versions.get((tenant_id, name), []))

    async def schema(self, schema_id: str) -> SchemaVersion | None:
        for versions in self._versions.values():
            for version in versions:
                if version.schema_id == schema_id:
                    return version
        return None

    async def user(self, username: str) -> UserRecord | None:
        return self._users.get(username)

    async def add_user(self, user: UserRecord) -> None:
        self._users[user.username] = user

    async def add_user_if_absent(self, user: UserRecord) -> bool:
        if user.username in self._users:
            return False
        self._users[user.username] = user
        return True
