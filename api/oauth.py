"""OAuth 2.0 endpoints: token (authlib's rules, `api.oauth_server`), revoke, and the JWKS.

Grants: `client_credentials`, `password`, `refresh_token` and the JWT bearer assertion
(`urn:ietf:params:oauth:grant-type:jwt-bearer`), answered in Salesforce's shape
(`access_token`, `instance_url`, `id` ending `/<tenant>/<user or client>`, `token_type`,
`issued_at` as an epoch-ms string, `scope`, plus `signature` for the password and refresh flows)
and the standard `expires_in`. The password and refresh grants return a `refresh_token`; each
refresh token works once (the answer carries the next one) and can be revoked.

What a token request may cost a worker process is bounded before anything expensive happens:
requests per client address (429), secret checks per client id or user (429), hashes at once
(503), and unknown clients and users are refused after a timer instead of a hash
(`app.credential_guard`).
Clients and users are looked up through the Directory, which caches absent ones too.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import math
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from authlib.oauth2 import OAuth2Error
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response

from api.body import read_body
from api.forwarded import from_this_host
from api.oauth_server import CLOCK_SKEW, JWT_BEARER, Proven, TokenEndpoint, TokenRequest
from api.responses import JSONBytesResponse
from api.services import Services
from api.tokens import RefreshToken
from app.catalog import ClientRecord
from app.errors import (
    AuthenticationFailed,
    CatalogUnavailable,
    ClientGone,
    EngineUnavailable,
    Overloaded,
    QuotaExceeded,
    ReplaybusError,
    RequestTimeout,
    RequestTooLarge,
)
from app.settings import Settings

__all__ = ["jwks", "revoke", "token"]

_MAX_TOKEN_REQUEST = 16 * 1024
_MAX_NAME = 255  # client ids and usernames: longer ones exist nowhere, so nothing is looked up
_SECRET_GRANTS = ("client_credentials", "password", "refresh_token")
_REVOKED = -1  # a refresh family's generation once revoked: no token of it has it
_TOKEN_PATH = "/services/oauth2/token"
#: The OAuth protocol's one error table: domain errors to status and `error` code.
_OAUTH_ERRORS: dict[type[ReplaybusError], tuple[int, str]] = {
    QuotaExceeded: (429, "rate_limited"),
    Overloaded: (503, "temporarily_unavailable"),
    CatalogUnavailable: (503, "temporarily_unavailable"),
    EngineUnavailable: (503, "temporarily_unavailable"),
}
_UNAVAILABLE_TEXT: dict[type[ReplaybusError], str] = {
    CatalogUnavailable: "credentials cannot be checked right now: retry",
    EngineUnavailable: "single-use credentials cannot be checked right now: retry",
}


def _oauth_error(
    status: int, error: str, description: str, retry_after: float | None = None
) -> Response:
    headers = None
    if retry_after is not None or status == 503:
        headers = {"Retry-After": str(max(1, math.ceil(retry_after or 1)))}
    return JSONBytesResponse({"error": error, "error_description": description}, status, headers)


def _refusal(error: ReplaybusError) -> Response:
    for cls in type(error).__mro__:
        if cls in _OAUTH_ERRORS:
            status, code = _OAUTH_ERRORS[cls]
            retry_after = getattr(error, "retry_after", None)
            description = _UNAVAILABLE_TEXT.get(cls, error.message)
            return _oauth_error(status, code, description, retry_after)
    raise error


# -- the caller ------------------------------------------------------------------------------


def _address(connection: HTTPConnection) -> str:
    """The client's address for its rate limit (as `api.forwarded` reports it: the address a
    trusted proxy received the request from). An IPv6 client is one /64, since it holds the
    whole block."""
    host = connection.client.host if connection.client is not None else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _admit(connection: HTTPConnection, services: Services) -> Response | None:
    """The refusal of a request over its address's rate or on an insecure transport, or
    None: what every OAuth endpoint checks before reading the body."""
    wait = services.token_addresses.take(_address(connection))
    if wait > 0:
        services.metrics.token_refused.labels("address_limit").inc()
        return _oauth_error(
            429, "rate_limited", "too many token requests from this address: retry later", wait
        )
    if not _secure_transport(connection, services.settings):
        return _oauth_error(
            400, "insecure_transport", "OAuth 2 MUST utilize https (or a loopback client)"
        )
    return None


def _secure_transport(connection: HTTPConnection, settings: Settings) -> bool:
    """Whether credentials may travel on this request. Never judged from the Host header: an
    https REPLAYBUS_PUBLIC_URL says clients reach the service over TLS (terminated in front of
    the node); otherwise the connection must be TLS (or a trusted proxy's X-Forwarded-Proto
    says it was), or come from this host (`api.forwarded.from_this_host`: never from a
    forwarded address alone)."""
    if settings.public_url is not None and settings.public_url.startswith("https://"):
        return True
    if connection.scope.get("scheme") == "https":
        return True
    return from_this_host(connection.scope)


def _audiences(connection: HTTPConnection, settings: Settings) -> frozenset[str]:
    """The `aud` a JWT-bearer assertion may name: REPLAYBUS_PUBLIC_URL (or its token endpoint)
    when set; otherwise the address this connection reached, as the socket has it (never the
    Host header), with and without a default port."""
    if settings.public_url is not None:
        bases = {settings.public_url}
    else:
        scheme = connection.scope.get("scheme", "http")
        server = connection.scope.get("server")
        if not server:
            return frozenset()
        host, port = server[0], server[1]
        host = f"[{host}]" if ":" in host else host
        bases = {f"{scheme}://{host}:{port}"}
        if (scheme, port) in (("http", 80), ("https", 443)):
            bases.add(f"{scheme}://{host}")
    return frozenset({*bases, *(base + _TOKEN_PATH for base in bases)})


# -- the request ---------------------------------------------------------------------------


async def _form(request: Request) -> dict[str, str] | Response:
    try:
        body = await read_body(request, _MAX_TOKEN_REQUEST)
    except RequestTooLarge as error:
        return _oauth_error(413, "invalid_request", error.message)
    except (RequestTimeout, ClientGone) as error:
        status = 408 if isinstance(error, RequestTimeout) else 499
        refusal = _oauth_error(status, "invalid_request", error.message)
        refusal.headers["Connection"] = "close"  # the rest of the body may still be on its way
        return refusal
    form = dict(parse_qsl(request.url.query))
    try:
        form.update(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the body must be UTF-8 form fields")
    return form


def _uses_basic(request: Request) -> bool:
    return request.headers.get("authorization", "")[:6].lower() == "basic "


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    authorization = request.headers.get("authorization", "")
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (unquote(client_id), unquote(secret)) if separator else None


def _unverified_claims(assertion: str) -> dict[str, Any]:
    """The claims of a JWT before its signature is checked (to find whose key checks it)."""
    try:
        segment = assertion.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, binascii.Error, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


async def _prove(
    services: Services,
    grant_type: str | None,
    client_id: str | None,
    client_secret: str | None,
    record: ClientRecord | None,
    form: dict[str, str],
) -> Proven:
    """Check the client's secret, then (password grant) look the user up and check the
    password, through the credential guard. Raises QuotaExceeded or Overloaded when a check
    may not run now, CatalogUnavailable when the user cannot be looked up."""
    guard = services.credentials
    if grant_type == JWT_BEARER and client_id:
        guard.limit("client:" + client_id)  # an assertion's signature check, per issuer
    if grant_type not in _SECRET_GRANTS or not client_id:
        return Proven()  # nothing to hash: authlib refuses or the assertion decides
    if record is None:
        await guard.refuse_unknown("client:" + client_id)
        return Proven()
    matches = await guard.verify("client:" + client_id, client_secret or "", record.secret_hash)
    if not matches or record.revoked:
        return Proven()
    username, password = form.get("username"), form.get("password")
    if grant_type != "password" or not username or password is None:
        return Proven(client_secret)
    if len(username) > _MAX_NAME:
        return Proven(client_secret)
    user = await services.directory.user(username)
    if user is None or user.tenant != record.tenant:
        await guard.refuse_unknown("user:" + username)
        return Proven(client_secret)
    if await guard.verify("user:" + username, password, user.password_hash):
        return Proven(client_secret, user, password)
    return Proven(client_secret)


async def _claim_refresh(
    services: Services, refresh: RefreshToken, *, revoke: bool = False
) -> bool:
    """Use up a refresh token on every node, moving its family on to the next generation (or,
    with `revoke`, to none: the family ends); False if it was used or revoked already.
    Remembered until the family expires (every token of it ends then). Raises
    EngineUnavailable."""
    seconds_left = refresh.principal.expires_at - services.clock.now_us() / 1_000_000
    ttl_us = max(1, int(seconds_left * 1_000_000))
    to = _REVOKED if revoke else refresh.generation + 1
    return await services.engine.advance_family(refresh.family, refresh.generation, to, ttl_us)


def _assertion_name(issuer: str, assertion_id: str) -> str:
    return hashlib.sha256(f"{issuer}\n{assertion_id}".encode()).hexdigest()


async def _claim_single_use(
    services: Services, endpoint: TokenEndpoint, refresh: RefreshToken | None, tenant: str
) -> bool:
    """Claim the refresh token or assertion (of a client of `tenant`) just used, on every
    node: False if an earlier request had already used it (or it was revoked). Raises
    EngineUnavailable, or QuotaExceeded when the tenant has too many assertions unexpired."""
    if refresh is not None:
        return await _claim_refresh(services, refresh)
    now = services.clock.now_us() / 1_000_000
    if endpoint.assertion is not None:
        assertion = endpoint.assertion
        ttl = assertion.expires - now + CLOCK_SKEW  # nodes' clocks may differ that much
        name = _assertion_name(assertion.issuer, assertion.assertion_id)
        limit = services.settings.token_assertions_per_tenant
        try:
            return await services.engine.claim_once(tenant, name, int(ttl * 1_000_000), limit)
        except QuotaExceeded as full:
            raise QuotaExceeded(
                f"this tenant has {limit} JWT-bearer assertions accepted and not yet expired "
                "(REPLAYBUS_TOKEN_ASSERTIONS_PER_TENANT): retry later",
                full.retry_after,
            ) from None
    return True


async def token(request: Request) -> Response:
    """`POST /services/oauth2/token` and `POST /v1/oauth/token`."""
    services: Services = request.app.state.services
    refused = _admit(request, services)
    if refused is not None:
        return refused
    form = await _form(request)
    if isinstance(form, Response):
        return form
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if _uses_basic(request):
        basic = _basic_credentials(request)
        if basic is None:
            return _oauth_error(401, "invalid_client", "malformed HTTP Basic credentials")
        client_id, client_secret = basic
    grant_type = form.get("grant_type")
    username: str | None = None  # the user a refresh token or an assertion names
    refresh: RefreshToken | None = None
    if grant_type == JWT_BEARER:
        claims = _unverified_claims(form.get("assertion", ""))
        issuer, subject = claims.get("iss"), claims.get("sub")
        client_id = issuer if isinstance(issuer, str) else None
        username = subject if isinstance(subject, str) else None
    elif grant_type == "refresh_token" and form.get("refresh_token"):
        try:
            refresh = services.tokens.verify_refresh(form["refresh_token"])
        except AuthenticationFailed:
            return _oauth_error(400, "invalid_grant", "expired access/refresh token")
        username = refresh.principal.user
    if client_id is not None and len(client_id) > _MAX_NAME:
        return _oauth_error(400, "invalid_client", "invalid client credentials")
    if username is not None and len(username) > _MAX_NAME:
        return _oauth_error(400, "invalid_grant", "authentication failure")
    try:
        record = await services.directory.client(client_id) if client_id else None
        proven = await _prove(services, grant_type, client_id, client_secret, record, form)
        user = proven.user
        if username is not None and record is not None:
            user = await services.directory.user(username)
    except (CatalogUnavailable, QuotaExceeded, Overloaded) as error:
        return _refusal(error)
    endpoint = TokenEndpoint(
        services.tokens,
        services.clock,
        services.instance_url(request),
        _audiences(request, services.settings),
        record,
        user,
        refresh,
        proven,
    )
    try:
        oauth_request = TokenRequest(request.method, request.headers, form)
        status, payload, response_headers = endpoint.create_token_response(oauth_request)
    except OAuth2Error as error:
        return _oauth_error(400, error.error, error.description or error.error)
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "credentials must be UTF-8")
    if status == 200 and record is not None:
        # Checked only after the credentials verified, so a suspension is not revealed to
        # whoever merely knows a client id; the issued token is discarded.
        try:
            tenant = await services.directory.tenant(record.tenant)
        except CatalogUnavailable as error:
            return _refusal(error)
        if tenant is None or tenant.suspended:
            return _oauth_error(400, "invalid_grant", f"tenant {record.tenant} is suspended")
        try:
            first_use = await _claim_single_use(services, endpoint, refresh, record.tenant)
        except (EngineUnavailable, QuotaExceeded) as error:
            return _refusal(error)
        if not first_use:
            what = "refresh token" if refresh is not None else "assertion"
            return _oauth_error(400, "invalid_grant", f"this {what} was already used or revoked")
    headers = dict(response_headers)
    if status == 401 and not _uses_basic(request):
        # RFC 6749 §5.2: 401 only when the client authenticated with the Authorization header.
        status = 400
        headers.pop("WWW-Authenticate", None)
    return JSONBytesResponse(payload, status, headers)


async def revoke(request: Request) -> Response:
    """`POST /services/oauth2/revoke` (RFC 7009, as Salesforce serves it): form `token=`.

    A refresh token is revoked on every node until it expires; the token itself is the
    credential, as at Salesforce. Access tokens are not tracked, so they cannot be revoked one
    by one (400 `unsupported_token_type`): they expire within REPLAYBUS_TOKEN_TTL, and revoking
    the client ends them all. A token that is not valid anyway is answered 200, as RFC 7009
    asks."""
    services: Services = request.app.state.services
    refused = _admit(request, services)
    if refused is not None:
        return refused
    form = await _form(request)
    if isinstance(form, Response):
        return form
    text = form.get("token")
    if not text:
        return _oauth_error(400, "invalid_request", "send the token to revoke as token=")
    try:
        refresh = services.tokens.verify_refresh(text)
    except AuthenticationFailed:
        try:
            services.tokens.verify(text)
        except AuthenticationFailed:
            return Response(status_code=200)
        return _oauth_error(
            400,
            "unsupported_token_type",
            "access tokens cannot be revoked one by one: they expire within their lifetime; "
            "revoke the client to end all of its tokens",
        )
    try:
        await _claim_refresh(services, refresh, revoke=True)  # used or revoked: just as well
    except EngineUnavailable as error:
        return _refusal(error)
    return Response(status_code=200)


async def jwks(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONBytesResponse(services.tokens.jwks(), headers={"Cache-Control": "max-age=300"})
