"""authlib's authorization server, for one token request whose credentials are already checked.

Everything slow or asynchronous (catalog lookups, secret hashes, single-use claims) happens in
`api.oauth` before or after; authlib here only applies the OAuth rules to what was found and
shapes the answer, so it runs on the event loop without blocking it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

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
from starlette.datastructures import Headers

from api.tokens import RefreshToken, TokenService
from app.access import SCOPES
from app.catalog import ClientRecord, UserRecord
from app.clock import Clock

__all__ = ["JWT_BEARER", "Assertion", "Proven", "TokenEndpoint", "TokenRequest"]

_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_GRANTS = ("client_credentials", "password", "refresh_token", JWT_BEARER)
_ASSERTION_MAX_LIFE = 300 + 60  # Salesforce: at most 3 minutes; allow for clock skew
CLOCK_SKEW = 60
_MAX_ASSERTION_ID = 255
_ASSERTION_ALGORITHMS = ["RS256", "ES256", "Ed25519"]
_DESCRIPTIONS = {
    "unsupported_grant_type": "grant type not supported",
    "invalid_client": "invalid client credentials",
    "invalid_grant": "authentication failure",
}


@dataclass(frozen=True, slots=True)
class Proven:
    """What the endpoint proved before authlib runs: the client's secret, when it matched and
    the client is not revoked, and the user's password, when it matched too."""

    client_secret: str | None = None
    user: UserRecord | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Assertion:
    """A verified JWT-bearer assertion's single-use identity: its issuer's `jti`, and when it
    expires (epoch seconds)."""

    issuer: str
    assertion_id: str
    expires: float


def _same(given: str | None, proven: str | None) -> bool:
    if given is None or proven is None:
        return False
    return hmac.compare_digest(given.encode(), proven.encode())


class _Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, record: ClientRecord, proven_secret: str | None) -> None:
        self.record = record
        self._proven_secret = proven_secret

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
        return _same(client_secret, self._proven_secret)

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
        endpoint: TokenEndpoint = self.server
        return endpoint.check_user(username, password)


class _RefreshCredential:
    """A verified refresh token, as authlib's refresh grant wants to see it."""

    def __init__(self, refresh: RefreshToken) -> None:
        self.principal = refresh.principal

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
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: each use returns the next refresh token

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshCredential | None:
        endpoint: TokenEndpoint = self.server
        return endpoint.refresh

    def authenticate_user(self, credential: _RefreshCredential) -> UserRecord | None:
        endpoint: TokenEndpoint = self.server
        user = endpoint.user
        principal = credential.principal
        if user is None or user.username != principal.user or user.tenant != principal.tenant:
            return None
        return user

    def revoke_old_credential(self, refresh_token: object) -> None:
        return None  # the endpoint claims the used token once the new one is issued


class _JwtBearerGrant(BaseGrant, TokenEndpointMixin):  # type: ignore[misc]
    """RFC 7523 §2.1, as Salesforce's JWT bearer flow: `iss` = client id, `sub` = username,
    `aud` = this server, plus a `jti` that makes the assertion single use."""

    GRANT_TYPE = JWT_BEARER
    TOKEN_ENDPOINT_AUTH_METHODS = ["none", *_AUTH_METHODS]

    def validate_token_request(self) -> None:
        assertion = self.request.form.get("assertion")
        if not assertion:
            raise InvalidRequestError("Missing 'assertion' in request.")
        endpoint: TokenEndpoint = self.server
        client, user = endpoint.check_assertion(assertion)
        self.request.client = _Client(client, None)
        self.request.user = user
        self.validate_requested_scope()

    def create_token_response(self) -> tuple[int, dict[str, Any], list[tuple[str, str]]]:
        token = self.generate_token(
            user=self.request.user, scope=self.request.payload.scope, include_refresh_token=False
        )
        return 200, token, self.TOKEN_RESPONSE_HEADER


class TokenRequest(OAuth2Request):  # type: ignore[misc]
    def __init__(self, method: str, headers: Headers, form: dict[str, str]):
        # authlib judges the transport from the URI, whose host comes from the Host header;
        # the endpoint has judged it from the connection instead (`api.oauth`), so authlib
        # gets a URI that only says "secure".
        super().__init__(method, "https://replaybus/token")
        self.headers = headers
        self.payload = BasicOAuth2Payload(form)
        self._form = form

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self._form


class TokenEndpoint(AuthorizationServer):  # type: ignore[misc]
    """One request's authorization server, built from what the endpoint looked up and proved."""

    def __init__(
        self,
        tokens: TokenService,
        clock: Clock,
        instance_url: str,
        audiences: frozenset[str],
        client: ClientRecord | None,
        user: UserRecord | None,
        refresh: RefreshToken | None,
        proven: Proven,
    ) -> None:
        super().__init__(scopes_supported=list(SCOPES))
        self._tokens = tokens
        self._clock = clock
        self._instance_url = instance_url
        self._audiences = audiences
        self._client = client
        self.user = user
        self._refresh = refresh
        self.refresh = _RefreshCredential(refresh) if refresh is not None else None
        self._proven = proven
        self.assertion: Assertion | None = None  # set once an assertion verified
        for grant in (_ClientCredentialsGrant, _PasswordGrant, _RefreshGrant, _JwtBearerGrant):
            self.register_grant(grant)
        self.register_token_generator("default", self._generate)

    def query_client(self, client_id: str) -> _Client | None:
        if self._client is None or self._client.client_id != client_id:
            return None
        return _Client(self._client, self._proven.client_secret)

    def check_user(self, username: str, password: str) -> UserRecord | None:
        user = self._proven.user
        if user is None or user.username != username or not _same(password, self._proven.password):
            return None
        return user

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
        expires, not_before = claims.get("exp"), claims.get("nbf", 0)
        assertion_id = claims.get("jti")
        now = self._clock.now_us() / 1_000_000
        if claims.get("iss") != client.client_id or not self._audiences.intersection(audiences):
            raise InvalidGrantError("invalid assertion: wrong issuer or audience")
        if not isinstance(expires, int | float) or not now < expires <= now + _ASSERTION_MAX_LIFE:
            raise InvalidGrantError("invalid assertion: expired, or valid for over 5 minutes")
        if not isinstance(not_before, int | float) or not_before > now + CLOCK_SKEW:
            raise InvalidGrantError("invalid assertion: not valid yet")
        if not isinstance(assertion_id, str) or not 0 < len(assertion_id) <= _MAX_ASSERTION_ID:
            raise InvalidGrantError(
                "invalid assertion: a jti claim (a unique id, 1-255 characters) is required; "
                "each assertion is accepted once"
            )
        if user is None or claims.get("sub") != user.username or user.tenant != client.tenant:
            raise InvalidGrantError("invalid assertion: unknown user")
        self.assertion = Assertion(client.client_id, assertion_id, float(expires))
        return client, user

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        return None  # tokens are self-contained JWTs: nothing to store

    def create_oauth2_request(self, request: TokenRequest) -> TokenRequest:
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
        tokens = self._tokens
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
        secret = self._proven.client_secret
        if grant_type in ("password", "refresh_token") and secret:
            response["signature"] = _signature(identity + issued_at, secret)
        if grant_type in ("password", "refresh_token") and username and include_refresh_token:
            response["refresh_token"] = tokens.issue_refresh(
                record.tenant, record.client_id, scopes, username, record.generation, self._refresh
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
