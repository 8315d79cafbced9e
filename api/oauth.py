"""OAuth 2.0 token endpoint (authlib's authorization server) and the JWKS document.

Grants: `client_credentials`, `password`, `refresh_token` and the JWT bearer assertion
(`urn:ietf:params:oauth:grant-type:jwt-bearer`), answered in Salesforce's shape
(`access_token`, `instance_url`, `id` ending `/<tenant>/<user or client>`, `token_type`,
`issued_at` as an epoch-ms string, `scope`, plus `signature` for the password and refresh flows)
and the standard `expires_in`. The password grant also returns a `refresh_token`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl, unquote

import orjson
from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from authlib.oauth2.rfc6749.grants import (
    BaseGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
    ResourceOwnerPasswordCredentialsGrant,
    TokenEndpointMixin,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from api.body import read_body
from api.responses import JSONBytesResponse
from api.services import Services
from app.access import SCOPES, Principal
from app.catalog import ClientRecord, UserRecord
from app.credentials import generate_secret, hash_secret, verify_secret
from app.errors import AuthenticationFailed, CatalogUnavailable, RequestTooLarge

__all__ = ["jwks", "token"]

_MAX_TOKEN_REQUEST = 16 * 1024
_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_GRANTS = ("client_credentials", "password", "refresh_token", JWT_BEARER)
_ASSERTION_MAX_LIFE = 300 + 60  # Salesforce: at most 3 minutes; allow for clock skew
_CLOCK_SKEW = 60
_ASSERTION_ALGORITHMS = ["RS256", "ES256", "Ed25519"]
_UNKNOWN_HASH = hash_secret(generate_secret())
_DESCRIPTIONS = {
    "unsupported_grant_type": "grant type not supported",
    "invalid_client": "invalid client credentials",
    "invalid_grant": "authentication failure",
}


class _Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, record: ClientRecord) -> None:
        self.record = record

    def get_client_id(self) -> str:
        return self.record.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = self.record.scopes
        if not scope:
            return " ".join(allowed)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_client_secret(self, client_secret: str) -> bool:
        record: ClientRecord = self.record
        matches = verify_secret(client_secret, record.secret_hash)  # same cost when revoked
        return bool(matches and not record.revoked)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in _AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == JWT_BEARER:
            return bool(self.record.jwt_public_key)
        return grant_type in _GRANTS


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _AUTH_METHODS


class _PasswordGrant(ResourceOwnerPasswordCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _AUTH_METHODS

    def authenticate_user(self, username: str, password: str) -> UserRecord | None:
        endpoint: _TokenEndpoint = self.server
        return endpoint.check_user(username, password)


class _RefreshCredential:
    """A verified refresh token, as authlib's refresh grant wants to see it."""

    def __init__(self, principal: Principal) -> None:
        self.principal = principal

    def check_client(self, client: _Client) -> bool:
        return bool(
            client.record.client_id == self.principal.client_id
            and client.record.tenant == self.principal.tenant
            and client.record.generation == self.principal.client_generation
        )

    def get_scope(self) -> str:
        return " ".join(sorted(self.principal.scopes))


class _RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = _AUTH_METHODS

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshCredential | None:
        endpoint: _TokenEndpoint = self.server
        return endpoint.refresh

    def authenticate_user(self, credential: _RefreshCredential) -> UserRecord | None:
        endpoint: _TokenEndpoint = self.server
        user = endpoint.user
        if user is None or user.username != credential.principal.user:
            return None
        return user

    def revoke_old_credential(self, refresh_token: object) -> None:
        return None  # refresh tokens are stateless and simply expire


class _JwtBearerGrant(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    """RFC 7523 §2.1, as Salesforce's JWT bearer flow: `iss` = client id, `sub` = username,
    `aud` = this server (or Salesforce's login hosts, for clients that hard-code them)."""

    GRANT_TYPE = JWT_BEARER
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", *_AUTH_METHODS]

    def validate_token_request(self) -> None:
        assertion = self.request.form.get("assertion")
        if not assertion:
            raise InvalidRequestError("Missing 'assertion' in request.")
        endpoint: _TokenEndpoint = self.server
        client, user = endpoint.check_assertion(assertion)
        self.request.client = _Client(client)
        self.request.user = user
        self.validate_requested_scope()

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(
            user=self.request.user, scope=self.request.payload.scope, include_refresh_token=False
        )
        return 200, token, self.TOKEN_RESPONSE_HEADER


class _TokenRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, uri: str, headers: Headers, form: dict[str, str]):
        super().__init__(method, uri, headers=headers)
        self.payload = BasicOAuth2Payload(form)
        self._form = form

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class _TokenEndpoint(AuthorizationServer):  # type: ignore[misc]
    """One request's authorization server. authlib is synchronous, so everything it needs from
    the (asynchronous) catalog is fetched first, and the grant runs in a worker thread."""

    def __init__(
        self,
        services: Services,
        instance_url: str,
        client: ClientRecord | None,
        user: UserRecord | None,
        refresh: Principal | None,
        client_secret: str | None,
    ) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self._services = services
        self._instance_url = instance_url
        self._client = client
        self.user = user
        self.refresh = _RefreshCredential(refresh) if refresh is not None else None
        self._client_secret = client_secret
        for grant in (_ClientCredentialsGrant, _PasswordGrant, _RefreshGrant, _JwtBearerGrant):
            self.register_grant(grant)
        self.register_token_generator("default", self._generate)

    def query_client(self, client_id: str) -> _Client | None:
        if self._client is None or self._client.client_id != client_id:
            return None
        return _Client(self._client)

    def check_user(self, username: str, password: str) -> UserRecord | None:
        user = self.user
        if user is None or user.username != username or self._client is None:
            verify_secret(password, _UNKNOWN_HASH)  # the same cost whether or not it exists
            return None
        matches = verify_secret(password, user.password_hash)  # same cost in any tenant
        return user if matches and user.tenant == self._client.tenant else None

    def check_assertion(self, assertion: str) -> tuple[ClientRecord, UserRecord]:
        client, user = self._client, self.user
        if client is None or client.revoked or not client.jwt_public_key:
            raise InvalidGrantError("invalid assertion: unknown issuer")
        try:
            key = _public_key(client.jwt_public_key)
            claims = jwt.decode(assertion, key, algorithms=_ASSERTION_ALGORITHMS).claims
        except (JoseError, ValueError, TypeError):
            raise InvalidGrantError("invalid assertion: bad signature") from None
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        accepted = {self._instance_url, self._instance_url + "/services/oauth2/token"}
        expires, not_before = claims.get("exp"), claims.get("nbf", 0)
        now = self._services.clock.now_us() / 1_000_000
        if claims.get("iss") != client.client_id or not accepted.intersection(audiences):
            raise InvalidGrantError("invalid assertion: wrong issuer or audience")
        if not isinstance(expires, int | float) or not now < expires <= now + _ASSERTION_MAX_LIFE:
            raise InvalidGrantError("invalid assertion: expired, or valid for over 5 minutes")
        if not isinstance(not_before, int | float) or not_before > now + _CLOCK_SKEW:
            raise InvalidGrantError("invalid assertion: not valid yet")
        if user is None or claims.get("sub") != user.username or user.tenant != client.tenant:
            raise InvalidGrantError("invalid assertion: unknown user")
        return client, user

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        return None  # tokens are self-contained JWTs: nothing to store

    def create_oauth2_request(self, request: _TokenRequest) -> _TokenRequest:
        return request

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        return None

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        if isinstance(body, dict) and "error" in body:
            # One text per error: details would tell a prober which clients and users exist.
            fixed = _DESCRIPTIONS.get(body["error"])
            if fixed is not None or not body.get("error_description"):
                body["error_description"] = fixed or body["error"]
        return status, body, headers

    def _generate(
        self,
        grant_type: str,
        client: _Client,
        user: UserRecord | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        record = client.record
        scopes = tuple(client.get_allowed_scope(scope).split())
        username = user.username if user is not None else None
        tokens = self._services.tokens
        issued = tokens.issue(
            record.tenant, record.client_id, scopes, user=username, generation=record.generation
        )
        issued_at = str(int(issued.issued_at * 1000))
        identity = f"{self._instance_url}/id/{record.tenant}/{username or record.client_id}"
        response: dict[str, Any] = {
            "access_token": issued.access_token,
            "instance_url": self._instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "scope": " ".join(scopes),
            "expires_in": issued.expires_in,
        }
        if grant_type in ("password", "refresh_token") and self._client_secret:
            response["signature"] = _signature(identity + issued_at, self._client_secret)
        if grant_type == "password" and username is not None and include_refresh_token:
            response["refresh_token"] = tokens.issue_refresh(
                record.tenant, record.client_id, scopes, username, record.generation
            )
        return response


def _public_key(pem: str) -> ECKey | RSAKey | OKPKey:
    for key_type in (RSAKey, ECKey, OKPKey):
        try:
            return key_type.import_key(pem)
        except (ValueError, TypeError, JoseError):
            continue
    raise ValueError("unusable public key")


def _signature(message: str, client_secret: str) -> str:
    """Salesforce's `signature`: base64 HMAC-SHA256 of `id + issued_at`, keyed with the client
    secret, so the client can check the response came from the server that knows its secret."""
    digest = hmac.new(client_secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


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


def _oauth_error(status: int, error: str, description: str) -> Response:
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONBytesResponse({"error": error, "error_description": description}, status, headers)


async def _client_record(services: Services, client_id: str | None) -> ClientRecord | None:
    """The client as the catalog has it now (so a rotated secret stops working at once); while
    the catalog is unreachable, as this node last saw it, so clients it knows still get tokens."""
    if not client_id:
        return None
    try:
        return await services.catalog.client(client_id)
    except CatalogUnavailable:
        return await services.directory.client(client_id)


async def token(request: Request) -> Response:
    """`POST /services/oauth2/token` and `POST /v1/oauth/token`."""
    services: Services = request.app.state.services
    try:
        body = await read_body(request, _MAX_TOKEN_REQUEST)
    except RequestTooLarge as error:
        return _oauth_error(413, "invalid_request", error.message)
    form = dict(parse_qsl(request.url.query))
    try:
        form.update(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "the body must be UTF-8 form fields")
    client_id, client_secret = form.get("client_id"), form.get("client_secret")
    if _uses_basic(request):
        basic = _basic_credentials(request)
        if basic is None:
            return _oauth_error(401, "invalid_client", "malformed HTTP Basic credentials")
        client_id, client_secret = basic
    grant_type = form.get("grant_type")
    username = form.get("username")
    refresh: Principal | None = None
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
        username = refresh.user
    try:
        record = await _client_record(services, client_id)
        user = await services.catalog.user(username) if username else None
    except CatalogUnavailable:
        return _oauth_error(
            503, "temporarily_unavailable", "credentials cannot be checked right now: retry"
        )
    if record is None and client_id:
        # Answer an unknown client as slowly as a known one, so ids cannot be probed by timing.
        await run_in_threadpool(verify_secret, "", _UNKNOWN_HASH)
    endpoint = _TokenEndpoint(
        services, services.instance_url(request), record, user, refresh, client_secret
    )
    try:
        oauth_request = _TokenRequest(request.method, str(request.url), request.headers, form)
    except OAuth2Error as error:
        return _oauth_error(400, error.error, error.description or error.error)
    try:
        status, payload, response_headers = await run_in_threadpool(
            endpoint.create_token_response, oauth_request
        )
    except UnicodeDecodeError:
        return _oauth_error(400, "invalid_request", "credentials must be UTF-8")
    if status == 200 and record is not None:
        # Checked only after the credentials verified, so a suspension is not revealed to
        # whoever merely knows a client id; the issued token is discarded.
        tenant = await services.directory.tenant(record.tenant)
        if tenant is None or tenant.suspended:
            return _oauth_error(400, "invalid_grant", f"tenant {record.tenant} is suspended")
    headers = dict(response_headers)
    if status == 401 and not _uses_basic(request):
        # RFC 6749 §5.2: 401 only when the client authenticated with the Authorization header.
        status = 400
        headers.pop("WWW-Authenticate", None)
    return JSONBytesResponse(payload, status, headers)


async def jwks(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONBytesResponse(services.tokens.jwks(), headers={"Cache-Control": "max-age=300"})
