"""The token endpoint and JWKS, as Salesforce-style clients use them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from tests.e2e.server import RunningServer, run_server

TOKEN_PATHS = ["/services/oauth2/token", "/v1/oauth/token"]


@pytest.mark.parametrize("path", TOKEN_PATHS)
def test_client_credentials_in_form_body_gets_a_salesforce_shaped_token(
    server: RunningServer, path: str
) -> None:
    response = httpx.post(
        server.base_url + path,
        data={
            "grant_type": "client_credentials",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["instance_url"] == server.base_url
    assert body["id"] == f"{server.base_url}/id/default/{server.client_id}"
    assert body["issued_at"].isdigit()
    assert body["scope"] == "publish subscribe admin"
    assert "signature" not in body
    assert body["expires_in"] == 3600


def test_client_credentials_with_http_basic_and_a_narrowed_scope(server: RunningServer) -> None:
    response = httpx.post(
        server.base_url + "/services/oauth2/token",
        data={"grant_type": "client_credentials", "scope": "subscribe"},
        auth=(server.client_id, server.client_secret),
    )
    assert response.status_code == 200
    assert response.json()["scope"] == "subscribe"


def test_token_verifies_against_the_published_jwks(server: RunningServer) -> None:
    keys = KeySet.import_key_set(httpx.get(server.base_url + "/.well-known/jwks.json").json())
    claims = jwt.decode(server.token(), keys).claims
    assert claims["tid"] == "default"
    assert claims["sub"] == server.client_id
    assert claims["exp"] > claims["iat"]


@pytest.mark.parametrize(
    ("form", "auth", "status", "error"),
    [
        (
            {
                "grant_type": "client_credentials",
                "client_id": "e2e-client",
                "client_secret": "wrong",
            },
            None,
            400,
            "invalid_client",
        ),
        ({"grant_type": "client_credentials"}, ("e2e-client", "wrong"), 401, "invalid_client"),
        (
            {"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
            None,
            400,
            "invalid_client",
        ),
        (
            {"grant_type": "authorization_code", "code": "c", "redirect_uri": "https://x"},
            None,
            400,
            "unsupported_grant_type",
        ),
        ({}, None, 400, "unsupported_grant_type"),
    ],
    ids=["wrong secret", "wrong basic secret", "unknown client", "unsupported grant", "no grant"],
)
def test_token_errors_are_json_with_error_and_description(
    server: RunningServer,
    form: dict[str, str],
    auth: tuple[str, str] | None,
    status: int,
    error: str,
) -> None:
    response = httpx.post(server.base_url + "/services/oauth2/token", data=form, auth=auth)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert body["error_description"]


def test_malformed_basic_credentials_are_refused_not_crashed(server: RunningServer) -> None:
    response = httpx.post(
        server.base_url + "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic " + base64.b64encode(b"\xff:\xff").decode()},
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.fixture(scope="module")
def assertion_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def user_server(assertion_key: rsa.RSAPrivateKey) -> Iterator[RunningServer]:
    public_pem = (
        assertion_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    env = {
        "REPLAYBUS_BOOTSTRAP_USERNAME": "integration@example.test",
        "REPLAYBUS_BOOTSTRAP_PASSWORD": "correct horse",
        "REPLAYBUS_BOOTSTRAP_CLIENT_JWT_KEY": public_pem,
    }
    with run_server(env) as server:
        yield server


def _password_grant(server: RunningServer, password: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": server.client_id,
            "client_secret": server.client_secret,
            "username": "integration@example.test",
            "password": password,
        },
    )


def _expected_signature(server: RunningServer, body: dict[str, str]) -> str:
    message = (body["id"] + body["issued_at"]).encode()
    digest = hmac.new(server.client_secret.encode(), message, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def test_line_35_password_grant_names_the_user_and_signs_the_response(
    user_server: RunningServer,
) -> None:
    response = _password_grant(user_server, "correct horse")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == f"{user_server.base_url}/id/default/integration@example.test"
    assert body["token_type"] == "Bearer"
    assert body["signature"] == _expected_signature(user_server, body)
    assert body["refresh_token"]
    published = httpx.post(
        f"{user_server.base_url}/v1/events/event/Who__e",
        json={},
        headers={"Authorization": f"Bearer {body['access_token']}"},
    )
    assert published.status_code == 201


def test_line_36_wrong_password_is_an_invalid_grant_json_error(user_server: RunningServer) -> None:
    response = _password_grant(user_server, "wrong")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] in ("invalid_grant", "invalid_request")
    assert body["error_description"]


def _refresh(server: RunningServer, refresh_token: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": server.client_id,
            "client_secret": server.client_secret,
        },
    )


def test_line_35_refresh_token_grant_issues_a_new_access_token(user_server: RunningServer) -> None:
    refresh_token = _password_grant(user_server, "correct horse").json()["refresh_token"]
    response = _refresh(user_server, refresh_token)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].endswith("/default/integration@example.test")
    assert body["signature"] == _expected_signature(user_server, body)
    assert body["refresh_token"] not in ("", refresh_token)  # rotated
    # A refresh token is never an access token.
    refused = httpx.get(
        user_server.base_url + "/v1/channels/event/X__e",
        headers={"Authorization": f"Bearer {refresh_token}"},
    )
    assert refused.status_code == 401


def test_refresh_grant_with_garbage_is_refused(user_server: RunningServer) -> None:
    response = httpx.post(
        user_server.base_url + "/services/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": "nope",
            "client_id": user_server.client_id,
            "client_secret": user_server.client_secret,
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def _assertion(
    key: rsa.RSAPrivateKey,
    issuer: str,
    subject: str,
    audience: str,
    lifetime: int = 180,
    assertion_id: str | None = "fresh",
) -> str:
    """A signed assertion; `assertion_id` "fresh" gives it a new `jti`, None none at all."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    claims = {"iss": issuer, "sub": subject, "aud": audience, "exp": int(time.time()) + lifetime}
    if assertion_id is not None:
        claims["jti"] = uuid.uuid4().hex if assertion_id == "fresh" else assertion_id
    return jwt.encode({"alg": "RS256"}, claims, RSAKey.import_key(pem))


@pytest.mark.parametrize("audience", ["server", "token endpoint"])
def test_line_35_jwt_bearer_grant_accepts_a_signed_assertion(
    user_server: RunningServer, assertion_key: rsa.RSAPrivateKey, audience: str
) -> None:
    audience = user_server.base_url + ("" if audience == "server" else "/services/oauth2/token")
    assertion = _assertion(
        assertion_key, user_server.client_id, "integration@example.test", audience
    )
    response = httpx.post(
        user_server.base_url + "/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"].endswith("/default/integration@example.test")
    assert "refresh_token" not in body


@pytest.mark.parametrize(
    "case",
    [
        "other key",
        "expired",
        "valid for an hour",
        "wrong audience",
        "salesforce audience",
        "unknown user",
        "unknown issuer",
        "no jti",
    ],
)
def test_jwt_bearer_grant_refuses_bad_assertions(
    user_server: RunningServer, assertion_key: rsa.RSAPrivateKey, case: str
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    audiences = {
        "wrong audience": "https://elsewhere.test",
        "salesforce audience": "https://login.salesforce.com",
    }
    lifetimes = {"expired": -10, "valid for an hour": 3600}
    assertion = _assertion(
        other if case == "other key" else assertion_key,
        "nobody" if case == "unknown issuer" else user_server.client_id,
        "ghost@example.test" if case == "unknown user" else "integration@example.test",
        audiences.get(case, user_server.base_url),
        lifetime=lifetimes.get(case, 180),
        assertion_id=None if case == "no jti" else "fresh",
    )
    response = httpx.post(
        user_server.base_url + "/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_grant", "invalid_client", "unauthorized_client")
    assert response.json()["error_description"]


def _jwt_grant(server: RunningServer, assertion: str, **headers: str) -> httpx.Response:
    return httpx.post(
        server.base_url + "/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
        headers=headers,
    )


def test_an_assertion_is_accepted_once(
    user_server: RunningServer, assertion_key: rsa.RSAPrivateKey
) -> None:
    assertion = _assertion(
        assertion_key, user_server.client_id, "integration@example.test", user_server.base_url
    )

    first, replayed = _jwt_grant(user_server, assertion), _jwt_grant(user_server, assertion)

    assert first.status_code == 200, first.text
    assert replayed.status_code == 400, replayed.text
    assert replayed.json() == {
        "error": "invalid_grant",
        "error_description": "this assertion was already used or revoked",
    }


def test_the_accepted_audience_never_comes_from_the_host_header(
    user_server: RunningServer, assertion_key: rsa.RSAPrivateKey
) -> None:
    """Without REPLAYBUS_PUBLIC_URL the audience is the address the connection reached: an
    assertion made out to another host is refused even when the request names that host."""
    port = user_server.base_url.rsplit(":", 1)[1]
    elsewhere = f"http://localhost:{port}"
    assertion = _assertion(
        assertion_key, user_server.client_id, "integration@example.test", elsewhere
    )

    response = _jwt_grant(user_server, assertion, host=f"localhost:{port}")

    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_grant"


def test_a_refresh_token_works_once_and_its_successor_once(user_server: RunningServer) -> None:
    first = _password_grant(user_server, "correct horse").json()["refresh_token"]

    used = _refresh(user_server, first)
    replayed = _refresh(user_server, first)
    second = used.json()["refresh_token"]
    next_use = _refresh(user_server, second)
    second_replayed = _refresh(user_server, second)

    assert used.status_code == 200, used.text
    assert replayed.status_code == 400, replayed.text
    assert replayed.json() == {
        "error": "invalid_grant",
        "error_description": "this refresh token was already used or revoked",
    }
    assert next_use.status_code == 200, next_use.text
    assert second_replayed.status_code == 400
    # A rotated refresh token ends when the first one would have.
    keys = KeySet.import_key_set(httpx.get(user_server.base_url + "/.well-known/jwks.json").json())
    expiries = {jwt.decode(t, keys).claims["exp"] for t in (first, second)}
    assert len(expiries) == 1


def _revoke(server: RunningServer, token: str) -> httpx.Response:
    return httpx.post(server.base_url + "/services/oauth2/revoke", data={"token": token})


def test_a_revoked_refresh_token_is_refused(user_server: RunningServer) -> None:
    refresh_token = _password_grant(user_server, "correct horse").json()["refresh_token"]

    revoked = _revoke(user_server, refresh_token)
    again = _revoke(user_server, refresh_token)
    refused = _refresh(user_server, refresh_token)

    assert (revoked.status_code, revoked.content) == (200, b"")
    assert again.status_code == 200  # revoking is idempotent
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"


def test_revoking_an_access_token_says_it_is_not_supported(server: RunningServer) -> None:
    access_token = server.token()

    refused = _revoke(server, access_token)
    still_valid = httpx.get(
        server.base_url + "/v1/channels/event/Revoke__e",
        headers={"Authorization": f"Bearer {access_token}"},
    )

    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "unsupported_token_type"
    assert "revoke the client" in refused.json()["error_description"]
    assert still_valid.status_code == 200


@pytest.mark.parametrize(
    ("form", "status"), [({"token": "not-a-token"}, 200), ({}, 400), ({"token": ""}, 400)]
)
def test_revoking_garbage_is_harmless_and_a_missing_token_is_an_error(
    server: RunningServer, form: dict[str, str], status: int
) -> None:
    response = httpx.post(server.base_url + "/services/oauth2/revoke", data=form)

    assert response.status_code == status, response.text
    if status == 400:
        assert response.json()["error"] == "invalid_request"
