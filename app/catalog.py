"""The `Catalog` seam: the control plane (tenants, OAuth clients). The hot path never waits on it
for token verification: access tokens are self-contained JWTs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Catalog", "ClientRecord", "Tenant", "UserRecord"]


@dataclass(frozen=True, slots=True)
class Tenant:
    tenant_id: str


@dataclass(frozen=True, slots=True)
class ClientRecord:
    """An OAuth client of one tenant. `secret_hash` is from `app.secrets.hash_secret`."""

    client_id: str
    tenant: str
    secret_hash: str
    scopes: tuple[str, ...]
    revoked: bool = False
    jwt_public_key: str | None = None  # PEM, verifies JWT-bearer assertions signed by the client


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A named user of a tenant, for the password, refresh-token and JWT-bearer grants."""

    username: str
    tenant: str
    password_hash: str


class Catalog(Protocol):
    async def tenant(self, tenant_id: str) -> Tenant | None: ...

    async def client(self, client_id: str) -> ClientRecord | None: ...

    async def add_tenant(self, tenant: Tenant) -> None: ...

    async def add_client(self, client: ClientRecord) -> None: ...

    async def user(self, username: str) -> UserRecord | None: ...

    async def add_user(self, user: UserRecord) -> None: ...
