"""OAuth 2.0 token endpoint (authlib's authorization server) and the JWKS document.

Responses are shaped like Salesforce's client-credentials answer (`access_token`, `instance_url`,
`id`, `token_type`, `issued_at` as an epoch-ms string, `scope`), plus the standard `expires_in`.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import parse_qsl, unquote

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Request
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response

from api.body import read_body
from api.responses import JSONBytesResponse
from api.services import Services
from app.access import SCOPES
from app.catalog import ClientRecord
from app.credentials import generate_secret, hash_secret, verify_secret
from app.errors import RequestTooLarge

__all__ = ["jwks", "token"]

_MAX_TOKEN_REQUEST = 16 * 1024
_AUTH_METHODS = ("client_secret_basic", "client_secret_post")
_UNKNOWN_CLIENT_HASH = hash_secret(generate_secret())
_DESCRIPTIONS = {
    "unsupported_grant_type": "grant type not supported",
    "invalid_request": "the token request is missing a required parameter",
    "invalid_client": "invalid client credentials",
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
        return bool(not record.revoked and verify_secret(client_secret, record.secret_hash))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return endpoint == "token" and method in _AUTH_METHODS

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class _ClientCredentialsGrant(ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = list(_AUTH_METHODS)


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
    """One request's authorization server: authlib is synchronous, so the client record is
    fetched from the (asynchronous) catalog first and the grant runs in a worker thread."""

    def __init__(self, services: Services, client: ClientRecord | None, instance_url: str):
        super().__init__(scopes_supported=list(SCOPES))
        self._services = services
        self._client = client
        self._instance_url = instance_url
        self.register_grant(_ClientCredentialsGrant)
        self.register_token_generator("default", self._generate)

    def query_client(self, client_id: str) -> _Client | None:
        if self._client is None or self._client.client_id != client_id:
            return None
        return _Client(self._client)

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        return None  # tokens are self-contained JWTs: nothing to store

    def create_oauth2_request(self, request: _TokenRequest) -> _TokenRequest:
        return request

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        return None

    def handle_response(
        self, status: int, body: Any, headers: list[tuple[str, str]]
    ) -> tuple[int, Any, list[tuple[str, str]]]:
        if isinstance(body, dict) and "error" in body and not body.get("error_description"):
            body["error_description"] = _DESCRIPTIONS.get(body["error"], body["error"])
        return status, body, headers

    def _generate(
        self,
        grant_type: str,
        client: _Client,
        user: object = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        record = client.record
        scopes = tuple(client.get_allowed_scope(scope).split())
        issued = self._services.tokens.issue(record.tenant, record.client_id, scopes)
        issued_at = str(int(issued.issued_at * 1000))
        identity = f"{self._instance_url}/id/{record.tenant}/{record.client_id}"
        return {
            "access_token": issued.access_token,
            "instance_url": self._instance_url,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "scope": " ".join(scopes),
            "expires_in": issued.expires_in,
        }


def _uses_basic(request: Request) -> bool:
    return request.headers.get("authorization", "")[:6].lower() == "basic "


def _client_id(request: Request, form: dict[str, str]) -> str | None:
    authorization = request.headers.get("authorization", "")
    if _uses_basic(request):
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return None
        return unquote(decoded.partition(":")[0])
    return form.get("client_id")


def _oauth_error(status: int, error: str, description: str) -> Response:
    return JSONBytesResponse({"error": error, "error_description": description}, status)


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
    client_id = _client_id(request, form)
    if client_id is None and _uses_basic(request):
        return _oauth_error(401, "invalid_client", "malformed HTTP Basic credentials")
    record = await services.catalog.client(client_id) if client_id else None
    if record is None and client_id:
        # Answer an unknown client as slowly as a known one, so ids cannot be probed by timing.
        await run_in_threadpool(verify_secret, "", _UNKNOWN_CLIENT_HASH)
    instance_url = services.instance_url(request)
    endpoint = _TokenEndpoint(services, record, instance_url)
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
    headers = dict(response_headers)
    if status == 401 and not _uses_basic(request):
        # RFC 6749 §5.2: 401 only when the client authenticated with the Authorization header.
        status = 400
        headers.pop("WWW-Authenticate", None)
    return JSONBytesResponse(payload, status, headers)


async def jwks(request: Request) -> Response:
    services: Services = request.app.state.services
    return JSONBytesResponse(services.tokens.jwks(), headers={"Cache-Control": "max-age=300"})
