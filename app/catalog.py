"""The `Catalog` seam: the control plane (tenants, OAuth clients, users). The hot path reads it
through `app.directory.Directory`, a cache with bounded staleness, never directly."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Catalog",
    "ChannelDefinition",
    "ClientRecord",
    "SchemaVersion",
    "Tenant",
    "TenantSettings",
    "UserRecord",
]


@dataclass(frozen=True, slots=True)
class TenantSettings:
    """Per-tenant overrides and quotas. None means the server-wide setting applies."""

    retention_max_age: float | None = None  # seconds
    retention_max_count: int | None = None
    publish_rate: float | None = None  # events per second, sustained
    publish_burst: int | None = None  # events above the rate allowed at once
    max_subscribers: int | None = None  # concurrent SSE streams + Bayeux sessions
    max_streams_per_client: int | None = None  # SSE streams of one client on one worker
    max_event_size: int | None = None  # bytes of one event's payload
    max_channels: int | None = None  # distinct channels with events
    cors_origins: tuple[str, ...] = ()
    require_defined_channels: bool = False


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str
    suspended: bool = False
    settings: TenantSettings = field(default_factory=TenantSettings)


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """An OAuth client of one tenant. `secret_hash` is from `app.credentials.hash_secret`.
    `scopes`: `publish`, `subscribe`, `admin`, or one narrowed to a channel glob
    (`publish:/event/Order*`)."""

    client_id: str
    tenant: str
    secret_hash: str
    scopes: tuple[str, ...]
    revoked: bool = False
    jwt_public_key: str | None = None  # PEM, verifies JWT-bearer assertions signed by the client
    # Set anew whenever a client is created, and carried in its tokens: a token of a deleted
    # client never works for a later client that reuses the id.
    generation: str = ""


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A named user of a tenant, for the password, refresh-token and JWT-bearer grants."""

    username: str
    tenant: str
    password_hash: str


@dataclass(frozen=True, slots=True)
class SchemaVersion:
    """One version of a channel's payload schema. `document` is canonical JSON text."""

    schema_id: str
    tenant: str
    channel: str
    version: int
    document: str
    created_us: int


@dataclass(frozen=True, slots=True)
class ChannelDefinition:
    """A channel a tenant has declared: what it carries, who owns it, how long it keeps events
    (None: the tenant's or server's retention), and its current schema, if any."""

    tenant: str
    name: str
    description: str = ""
    owner: str = ""
    retention_max_age: float | None = None
    retention_max_count: int | None = None
    schema: SchemaVersion | None = None


class Catalog(Protocol):
    async def tenant(self, tenant_id: str) -> Tenant | None: ...

    async def tenants(self) -> list[Tenant]:
        """Every tenant, ordered by id."""
        ...

    async def add_tenant(self, tenant: Tenant) -> bool:
        """Create `tenant`, removing its id's deletion record in the same step; False (and the
        existing one untouched) if its id is taken."""
        ...

    async def update_tenant(self, tenant: Tenant) -> bool:
        """Replace the tenant's status and settings; False if there is no such tenant."""
        ...

    async def delete_tenant(self, tenant_id: str, *, deleted_us: int) -> bool:
        """Delete the tenant with its clients and users, and record in the same step that its
        id was deleted at `deleted_us` (replacing an earlier record); False if there was none
        (and nothing recorded)."""
        ...

    async def tenant_deleted_at(self, tenant_id: str) -> int | None:
        """When the tenant of this id was last deleted (µs), unless it has been created since."""
        ...

    async def client(self, client_id: str) -> ClientRecord | None: ...

    async def clients(self, tenant_id: str) -> list[ClientRecord]:
        """The tenant's clients, ordered by id."""
        ...

    async def add_client(self, client: ClientRecord) -> None:
        """Create the client, or replace the one with its id."""
        ...

    async def add_client_if_absent(self, client: ClientRecord) -> bool:
        """Create the client unless its id is taken, in one step: True if created, False (and
        the existing one untouched) otherwise, so of callers racing for one id one wins."""
        ...

    async def channel(self, tenant_id: str, name: str) -> ChannelDefinition | None: ...

    async def channels(self, tenant_id: str) -> list[ChannelDefinition]:
        """The tenant's channel definitions, ordered by name."""
        ...

    async def save_channel(
        self, definition: ChannelDefinition, new_version: SchemaVersion | None = None
    ) -> None:
        """Create or replace the definition; with `new_version`, record it in the channel's
        history as one step (`definition.schema` is then that version)."""
        ...

    async def delete_channel(self, tenant_id: str, name: str) -> bool:
        """Delete the definition and its schema history; False if there was none."""
        ...

    async def schema_versions(self, tenant_id: str, name: str) -> list[SchemaVersion]:
        """Every schema version of the channel, oldest first."""
        ...

    async def schema(self, schema_id: str) -> SchemaVersion | None: ...

    async def user(self, username: str) -> UserRecord | None: ...

    async def add_user(self, user: UserRecord) -> None:
        """Create the user, or replace the one with its name."""
        ...

    async def add_user_if_absent(self, user: UserRecord) -> bool:
        """Create the user unless its name is taken, in one step: True if created, False (and
        the existing one untouched) otherwise."""
        ...
