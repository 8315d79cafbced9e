"""Finding and verifying the caller's access token on a request."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from api.tokens import TokenService
from app.access import Principal
from app.errors import TokenMissing

__all__ = ["authenticate", "token_from_header"]

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


def authenticate(
    connection: HTTPConnection, tokens: TokenService, *, allow_query: bool = False
) -> Principal:
    """The principal behind the request's token. With `allow_query`, an `access_token` query
    parameter is accepted too (browsers' EventSource cannot set headers)."""
    token = token_from_header(connection.headers.get("authorization"))
    if token is None and allow_query:
        token = connection.query_params.get("access_token") or None
    if token is None:
        raise TokenMissing(
            "an access token is required: send 'Authorization: Bearer <token>'"
            + (" or ?access_token=<token>" if allow_query else "")
        )
    return tokens.verify(token)
