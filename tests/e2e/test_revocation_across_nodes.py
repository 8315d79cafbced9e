"""Revocations and suspensions made on one node reach another within the catalog cache TTL:
two nodes sharing one Redis, one PostgreSQL catalog and one signing key."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.server import (
    RunningServer,
    fresh_catalog_database,
    run_server,
    tenant_with_client,
)
from tests.e2e.sse import channel_name
from tests.harness.postgres import RunningPostgres
from tests.harness.redis import RunningRedis

OPERATOR_KEY = "nodes-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
DEADLINE = 10.0


@pytest.fixture(scope="module")
def nodes(
    postgres_server: RunningPostgres, redis_server: RunningRedis, signing_key_pem: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    shared = {
        "REPLAYBUS_REDIS_URL": redis_server.url,
        "REPLAYBUS_SIGNING_KEY": signing_key_pem,
        "REPLAYBUS_DATABASE_URL": fresh_catalog_database(postgres_server, "nodes"),
        "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
        "REPLAYBUS_CATALOG_CACHE_TTL": "1s",
    }
    with run_server(shared) as node_a, run_server(shared) as node_b:
        yield node_a, node_b


def _admin(node: RunningServer, path: str, body: object = None) -> httpx.Response:
    response = httpx.post(f"{node.base_url}/v1/admin{path}", json=body, headers=OPERATOR)
    assert response.status_code in (200, 201), response.text
    return response


def _token_request(node: RunningServer, client_id: str, secret: str) -> httpx.Response:
    return httpx.post(
        f"{node.base_url}/v1/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )


def _publisher(node: RunningServer, token: str) -> Callable[[], httpx.Response]:
    url = f"{node.base_url}/v1/events{channel_name()}"
    headers = {"Authorization": f"Bearer {token}"}
    return lambda: httpx.post(url, json={"n": 1}, headers=headers)


def _eventually(publish: Callable[[], httpx.Response], status: int) -> httpx.Response:
    """Publish until the answer has `status` (the other node's cache expiring), or the
    deadline passes: the last answer either way."""
    give_up = time.monotonic() + DEADLINE
    response = publish()
    while response.status_code != status and time.monotonic() < give_up:
        response = publish()
    return response


def test_a_client_revoked_on_one_node_is_refused_on_the_other(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    node_a, node_b = nodes
    client = tenant_with_client(node_a.base_url, OPERATOR_KEY, ["publish"])
    publish_on_b = _publisher(node_b, client.token)
    accepted = publish_on_b()
    assert accepted.status_code == 201, accepted.text

    revoked = _admin(node_a, f"/tenants/{client.tenant}/clients/{client.client_id}/revoke")
    refused = _eventually(publish_on_b, 401)
    new_token_on_b = _token_request(node_b, client.client_id, client.client_secret)

    assert revoked.json()["revoked"] is True
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_token"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert publish_on_b().status_code == 401  # and it stays refused
    assert new_token_on_b.status_code == 400, new_token_on_b.text
    assert new_token_on_b.json()["error"] == "invalid_client"


def test_a_tenant_suspended_on_one_node_is_refused_on_the_other_until_resumed(
    nodes: tuple[RunningServer, RunningServer],
) -> None:
    node_a, node_b = nodes
    client = tenant_with_client(node_a.base_url, OPERATOR_KEY, ["publish"])
    publish_on_b = _publisher(node_b, client.token)
    accepted = publish_on_b()
    assert accepted.status_code == 201, accepted.text

    suspended = _admin(node_a, f"/tenants/{client.tenant}/suspend")
    refused = _eventually(publish_on_b, 403)
    new_token_on_b = _token_request(node_b, client.client_id, client.client_secret)
    resumed = _admin(node_a, f"/tenants/{client.tenant}/resume")
    accepted_again = _eventually(publish_on_b, 201)
    new_token_after = _token_request(node_b, client.client_id, client.client_secret)

    assert suspended.json()["suspended"] is True
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "tenant_suspended"
    assert resumed.json()["suspended"] is False
    assert new_token_on_b.status_code == 400, new_token_on_b.text
    assert new_token_on_b.json()["error"] == "invalid_grant"
    assert accepted_again.status_code == 201, accepted_again.text
    assert new_token_after.status_code == 200, new_token_after.text
