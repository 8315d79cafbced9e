"""A tenant deleted on one node while another node still has it cached: two nodes on one Redis
and one PostgreSQL catalog. The other node may go on serving the deleted tenant for up to its
catalog cache TTL, and what it writes meanwhile must never reach a tenant created later under
the same id: the id is refused (409 + Retry-After) until no node can still serve the old
tenant, then every leftover key of the id is dropped before the new tenant exists.

The cache TTL is far longer than the few requests node B serves the deleted tenant with take,
so B certainly still has it cached then; the rest of the id (`app.admin.tenant_id_reuse_delay`)
follows from the same settings, kept short elsewhere."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from app.admin import tenant_id_reuse_delay
from app.settings import Settings
from storage.redis import keys
from tests.e2e.server import RunningServer, client_of, fresh_catalog_database, run_server
from tests.e2e.sse import channel_name
from tests.harness.postgres import RunningPostgres
from tests.harness.redis import RunningRedis

OPERATOR_KEY = "deletion-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
#: Node B's window for serving the deleted tenant is the cache TTL; every other bound that
#: adds to the id's rest is short.
TIMING = {
    "REPLAYBUS_CATALOG_CACHE_TTL": "10s",
    "REPLAYBUS_CATALOG_MAX_STALE": "0s",
    "REPLAYBUS_BAYEUX_TIMEOUT": "1s",
    "REPLAYBUS_DATABASE_POOL_TIMEOUT": "1s",
    "REPLAYBUS_DATABASE_COMMAND_TIMEOUT": "1s",
    "REPLAYBUS_REDIS_POOL_TIMEOUT": "1s",
    "REPLAYBUS_REDIS_COMMAND_TIMEOUT": "1s",
}
REUSE_DELAY_S = tenant_id_reuse_delay(Settings.from_env(TIMING))


@pytest.fixture(scope="module")
def nodes(
    postgres_server: RunningPostgres, redis_server: RunningRedis, signing_key_pem: str
) -> Iterator[tuple[RunningServer, RunningServer]]:
    shared = {
        "REPLAYBUS_REDIS_URL": redis_server.url,
        "REPLAYBUS_SIGNING_KEY": signing_key_pem,
        "REPLAYBUS_DATABASE_URL": fresh_catalog_database(postgres_server, "deletion"),
        "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
        **TIMING,
    }
    with run_server(shared) as node_a, run_server(shared) as node_b:
        yield node_a, node_b


def _create_tenant(node: RunningServer, tenant: str) -> httpx.Response:
    return httpx.post(
        f"{node.base_url}/v1/admin/tenants", json={"tenantId": tenant}, headers=OPERATOR
    )


def _token(node: RunningServer, tenant: str) -> dict[str, str]:
    return client_of(node.base_url, OPERATOR_KEY, tenant, ["publish", "subscribe"]).bearer


def _handshake(node: RunningServer, headers: dict[str, str]) -> httpx.Response:
    message = {
        "channel": "/meta/handshake",
        "version": "1.0",
        "supportedConnectionTypes": ["long-polling"],
    }
    return httpx.post(f"{node.base_url}/cometd/58.0", json=[message], headers=headers)


def _keys_of(redis_server: RunningRedis, tenant: str, session: str) -> list[bytes]:
    """The tenant's keys in Redis, and the Bayeux session's."""
    with redis.Redis.from_url(redis_server.url) as client:
        found = list(client.scan_iter(keys.tenant_pattern(tenant)))
        return found + [key for key in [keys.session_key(session).encode()] if client.exists(key)]


def test_a_tenant_created_again_never_sees_what_a_stale_node_wrote_for_the_deleted_one(
    nodes: tuple[RunningServer, RunningServer], redis_server: RunningRedis
) -> None:
    node_a, node_b = nodes
    tenant = f"t{uuid.uuid4().hex[:10]}"
    channel = channel_name()
    assert _create_tenant(node_a, tenant).status_code == 201
    old = _token(node_a, tenant)
    url_on_b = f"{node_b.base_url}/v1/events{channel}"
    assert httpx.post(url_on_b, json={"n": 0}, headers=old).status_code == 201  # B caches it

    deleted = httpx.delete(f"{node_a.base_url}/v1/admin/tenants/{tenant}", headers=OPERATOR)
    # Node B still has the tenant cached: it keeps serving the deleted tenant for a while.
    stale_publish = httpx.post(url_on_b, json={"n": 1}, headers=old)
    stale_handshake = _handshake(node_b, old)
    session = stale_handshake.json()[0]["clientId"]
    leftovers = _keys_of(redis_server, tenant, session)
    too_soon = _create_tenant(node_a, tenant)

    give_up = time.monotonic() + REUSE_DELAY_S + 30
    created = too_soon
    while created.status_code == 409 and time.monotonic() < give_up:
        time.sleep(0.2)  # the id's rest is the other nodes' cache time: nothing to await but it
        created = _create_tenant(node_a, tenant)
    swept = _keys_of(redis_server, tenant, session)
    new = _token(node_b, tenant)
    history = httpx.get(url_on_b, headers=new)
    window = httpx.get(f"{node_b.base_url}/v1/channels{channel}", headers=new)

    assert deleted.status_code == 200, deleted.text
    assert stale_publish.status_code == 201, stale_publish.text
    assert stale_handshake.json()[0]["successful"] is True, stale_handshake.text
    assert keys.session_key(session).encode() in leftovers
    assert len(leftovers) > 1  # and what node B stored of its publish after the deletion
    assert too_soon.status_code == 409, too_soon.text
    assert too_soon.json()["error"] == "tenant_recently_deleted"
    assert 1 <= int(too_soon.headers["Retry-After"]) <= REUSE_DELAY_S
    assert created.status_code == 201, created.text
    assert swept == []
    assert history.status_code == 200, history.text
    assert history.json()["events"] == []
    assert window.json()["count"] == 0
    # An unused channel's window: nothing of what the stale node stored, ids and all.
    assert window.json()["latest"] == window.json()["lowWaterMark"]
    assert window.json()["latest"] < stale_publish.json()["replayId"]
