"""The token endpoint and JWKS, as Salesforce-style clients use them."""

from __future__ import annotations

import base64

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.e2e.server import RunningServer

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
            {"grant_type": "password", "username": "u", "password": "p"},
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
