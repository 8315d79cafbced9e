"""Single-use credentials are single use on every node: two nodes sharing one Redis (and one
signing key and public URL) refuse a refresh token or an assertion the other one has taken, and
a refresh token revoked on one."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.e2e.server import RunningServer, run_server
from tests.harness.redis import RunningRedis

PUBLIC_URL = "http://events.test"
USER = "single-use@example.test"
PASSWORD = "single use password"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


@pytest.fixture(scope="module")
def assertion_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def nodes(
    redis_server: RunningRedis, signing_key_pem: str, assertion_key: ec.EllipticCurvePrivateKey
) -> Iterator[tuple[RunningServer, RunningServer]]:
    public_pem = (
        assertion_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    shared = {
        "REPLAYBUS_REDIS_URL": redis_server.url,
        "REPLAYBUS_SIGNING_KEY": signing_key_pem,
        "REPLAYBUS_PUBLIC_URL": PUBLIC_URL,
        "REPLAYBUS_BOOTSTRAP_USERNAME": USER,
        "REPLAYBUS_BOOTSTRAP_PASSWORD": PASSWORD,
        "REPLAYBUS_BOOTSTRAP_CLIENT_JWT_KEY": public_pem,
    }
    with run_server(shared) as node_a, run_server(shared) as node_b:
        yield node_a, node_b


def _refresh_token(node: RunningServer) -> str:
    granted = node.token_response(grant_type="password", username=USER, password=PASSWORD)
    assert granted.status_code == 200, granted.text
    return str(granted.json()["refresh_token"])


def test_a_refresh_token_used_on_one_node_is_refused_on_the_other(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    node_a, node_b = nodes
    refresh_token = _refresh_token(node_a)

    used = node_a.token_response(grant_type="refresh_token", refresh_token=refresh_token)
    replayed = node_b.token_response(grant_type="refresh_token", refresh_token=refresh_token)
    successor = node_b.token_response(
        grant_type="refresh_token", refresh_token=used.json()["refresh_token"]
    )

    assert used.status_code == 200, used.text
    assert replayed.status_code == 400, replayed.text
    assert replayed.json()["error"] == "invalid_grant"
    assert successor.status_code == 200, successor.text


def test_a_refresh_token_revoked_on_one_node_is_refused_on_the_other(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    node_a, node_b = nodes
    refresh_token = _refresh_token(node_a)

    revoked = httpx.post(node_b.base_url + "/services/oauth2/revoke", data={"token": refresh_token})
    refused = node_a.token_response(grant_type="refresh_token", refresh_token=refresh_token)

    assert revoked.status_code == 200, revoked.text
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"] == "invalid_grant"


def test_an_assertion_used_on_one_node_is_refused_on_the_other(
    nodes: tuple[RunningServer, RunningServer], assertion_key: ec.EllipticCurvePrivateKey
) -> None:
    node_a, node_b = nodes
    pem = assertion_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    claims = {
        "iss": node_a.client_id,
        "sub": USER,
        "aud": PUBLIC_URL,
        "exp": int(time.time()) + 120,
        "jti": uuid.uuid4().hex,
    }
    assertion = jwt.encode({"alg": "ES256"}, claims, ECKey.import_key(pem))
    form = {"grant_type": JWT_BEARER, "assertion": assertion}

    first = httpx.post(node_a.base_url + "/services/oauth2/token", data=form)
    replayed = httpx.post(node_b.base_url + "/services/oauth2/token", data=form)

    assert first.status_code == 200, first.text
    assert replayed.status_code == 400, replayed.text
    assert replayed.json()["error_description"] == "this assertion was already used or revoked"
