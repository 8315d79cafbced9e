"""Finding and verifying the caller's credential on a request."""

from __future__ import annotations

import hmac

from starlette.requests import HTTPConnection

from api.services import Services
from app.access import Principal
from app.admin import Admin
from app.catalog import Tenant
from app.errors import PermissionDenied, TokenMissing

__all__ = ["admitted", "authenticate", "authenticate_admin", "token_from_header"]

_SCHEMES = ("bearer", "oauth")


def token_from_header(value: str | None) -> str | None:
    """`Bearer <t>`, `OAuth <t>` (any case) or a bare `<t>`, as Salesforce clients send them.
    A scheme with no token is no token."""
    if value is None:
        return None
    parts = value.split(None, 1)
    if not parts:
        return None
    if parts[0].lower() not in _SCHEMES:
        return value.strip()
    return parts[1].strip() if len(parts) == 2 else None


def _token(connection: HTTPConnection, allow_query: bool) -> str:
    token = token_from_header(connection.headers.get("authorization"))
    if token is None and allow_query:
        token = connection.query_params.get("access_token") or None
    if token is None:
        raise TokenMissing(
            "an access token is required: send 'Authorization: Bearer <token>'"
            + (" or ?access_token=<token>" if allow_query else "")
        )
    return token


async def authenticate(
    connection: HTTPConnection, services: Services, *, allow_query: bool = False
) -> tuple[Principal, Tenant]:
    """The principal behind the request's token and its (active) tenant. With `allow_query`,
    an `access_token` query parameter is accepted too (browsers' EventSource cannot set
    headers)."""
    return await admitted(connection, services, _token(connection, allow_query))


async def admitted(
    connection: HTTPConnection, services: Services, token: str
) -> tuple[Principal, Tenant]:
    """The token verified, its client and tenant admitted, the browser origin allowed."""
    principal = services.tokens.verify(token)
    connection.scope.setdefault("state", {})["tenant"] = principal.tenant  # for the access log
    tenant = await services.directory.admit(principal)
    check_origin(connection, tenant)
    return principal, tenant


def check_origin(connection: HTTPConnection, tenant: Tenant) -> None:
    """A tenant's CORS origins narrow the server's: a browser request (one with an `Origin`)
    from elsewhere is refused, even with a valid token of that tenant."""
    allowed = tenant.settings.cors_origins
    origin = connection.headers.get("origin")
    if allowed and origin is not None and origin not in allowed and "*" not in allowed:
        raise PermissionDenied(f"origin {origin} is not allowed for tenant {tenant.tenant_id}")


async def authenticate_admin(connection: HTTPConnection, services: Services) -> Admin:
    """The platform operator (its key from settings) or a tenant client with `admin` scope."""
    token = _token(connection, allow_query=False)
    operator_key = services.settings.operator_key
    if operator_key is not None and hmac.compare_digest(token.encode(), operator_key.encode()):
        return Admin(tenant=None, subject="operator")
    principal, _ = await admitted(connection, services, token)
    principal.require("admin")
    return Admin(tenant=principal.tenant, subject=principal.subject)
