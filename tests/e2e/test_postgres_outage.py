"""A PostgreSQL outage under a running node, stopped or silent (paused: connections accepted and
never answered): what the node has read of tenants and clients keeps publishing, streaming and
token requests going, admin changes fail clearly, and all heals when it is back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from httpx_sse import aconnect_sse

from tests.e2e.server import fresh_catalog_database, run_server
from tests.e2e.sse import channel_name, dispatched
from tests.harness.postgres import running_postgres
from tests.harness.tcp_proxy import tcp_proxy

OPERATOR_KEY = "outage-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
CACHE_TTL = 1.0
#: Long enough after the stop for every cached entry to have gone stale and failed a re-read.
OUTAGE_SPAN = 3 * CACHE_TTL
DEADLINE = 15.0
#: Short bounds on every catalog call, so a silent database is noticed quickly.
FAST_TIMEOUTS = {
    "REPLAYBUS_DATABASE_CONNECT_TIMEOUT": "500ms",
    "REPLAYBUS_DATABASE_COMMAND_TIMEOUT": "500ms",
    "REPLAYBUS_DATABASE_POOL_TIMEOUT": "500ms",
}


async def _create_tenant(client: httpx.AsyncClient, base_url: str) -> httpx.Response:
    return await client.post(
        f"{base_url}/v1/admin/tenants",
        json={"tenantId": f"t{uuid.uuid4().hex[:10]}"},
        headers=OPERATOR,
    )


async def _create_client(client: httpx.AsyncClient, base_url: str, tenant: str) -> httpx.Response:
    return await client.post(
        f"{base_url}/v1/admin/tenants/{tenant}/clients",
        json={"scopes": ["publish", "subscribe"]},
        headers=OPERATOR,
    )


async def _token_request(
    client: httpx.AsyncClient, base_url: str, client_id: str, secret: str
) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return await client.post(f"{base_url}/v1/oauth/token", data=form)


async def _next_id(events: AsyncIterator[Any]) -> int:
    async with asyncio.timeout(10):
        return int((await anext(events)).id)


def _unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["error"] == "catalog_unavailable"
    assert "catalog database" in body["message"]
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize("outage", ["stopped", "silent"])
async def test_a_postgres_outage_keeps_known_tenants_working_and_heals(outage: str) -> None:
    with running_postgres() as postgres, tcp_proxy(postgres.port) as proxy:
        url = fresh_catalog_database(postgres, "outage")
        if outage == "silent":
            url = url.replace(f":{postgres.port}/", f":{proxy.port}/")
            begin, end = proxy.silence, proxy.restore
        else:
            begin, end = postgres.stop, postgres.start
        env = {
            "REPLAYBUS_DATABASE_URL": url,
            "REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY,
            "REPLAYBUS_CATALOG_CACHE_TTL": "1s",
            **FAST_TIMEOUTS,
        }
        with run_server(env) as server:
            base = server.base_url
            async with httpx.AsyncClient(timeout=DEADLINE) as client:
                created = await _create_tenant(client, base)
                assert created.status_code == 201, created.text
                tenant = created.json()["tenantId"]
                issued = await _create_client(client, base, tenant)
                assert issued.status_code == 201, issued.text
                client_id, secret = issued.json()["clientId"], issued.json()["clientSecret"]
                granted = await _token_request(client, base, client_id, secret)
                assert granted.status_code == 200, granted.text
                headers = {"Authorization": f"Bearer {granted.json()['access_token']}"}
                # A valid token of a client this node's hot path has not looked up yet.
                unseen = {"Authorization": f"Bearer {server.token()}"}
                # A client that never asked this node for anything.
                stranger = await _create_client(client, base, tenant)
                assert stranger.status_code == 201, stranger.text
                channel = channel_name()
                publish_url = f"{base}/v1/events{channel}"
                stream_url = f"{base}/v1/stream{channel}"

                async with aconnect_sse(client, "GET", stream_url, headers=headers) as first:
                    first_events = dispatched(first)
                    before = await client.post(publish_url, json={"n": 0}, headers=headers)
                    assert before.status_code == 201, before.text
                    assert await _next_id(first_events) == before.json()["replayId"]

                    await asyncio.to_thread(begin)

                    # Publish (each one delivered before the next) until well past the TTL,
                    # so the node has had to fall back on what it cached.
                    stopped_at = time.monotonic()
                    during: list[int] = []
                    while time.monotonic() - stopped_at < OUTAGE_SPAN:
                        ack = await client.post(
                            publish_url, json={"n": len(during) + 1}, headers=headers
                        )
                        assert ack.status_code == 201, ack.text
                        during.append(ack.json()["replayId"])
                        assert await _next_id(first_events) == during[-1]

                    async with aconnect_sse(client, "GET", stream_url, headers=headers) as second:
                        assert second.response.status_code == 200
                        second_events = dispatched(second)
                        live = await client.post(publish_url, json={"n": -1}, headers=headers)
                        assert live.status_code == 201, live.text
                        assert await _next_id(second_events) == live.json()["replayId"]
                        assert await _next_id(first_events) == live.json()["replayId"]

                    new_tenant = await _create_tenant(client, base)
                    new_client = await _create_client(client, base, tenant)
                    token_while_down = await _token_request(client, base, client_id, secret)
                    salesforce_token_while_down = await client.post(
                        f"{base}/services/oauth2/token",
                        data={
                            "grant_type": "client_credentials",
                            "client_id": client_id,
                            "client_secret": secret,
                        },
                    )
                    unseen_publish = await client.post(publish_url, json={"n": 0}, headers=unseen)
                    stranger_token = await _token_request(
                        client, base, stranger.json()["clientId"], stranger.json()["clientSecret"]
                    )
                    listed = await client.get(f"{base}/v1/admin/tenants", headers=OPERATOR)

                    await asyncio.to_thread(end)

                    # The pool reconnects by itself: retry the admin write until it does.
                    healed = await _create_tenant(client, base)
                    give_up = time.monotonic() + DEADLINE
                    while healed.status_code == 503 and time.monotonic() < give_up:
                        healed = await _create_tenant(client, base)
                    assert healed.status_code == 201, healed.text
                    healed_client = await _create_client(client, base, tenant)
                    token_after = await _token_request(client, base, client_id, secret)
                    after = await client.post(publish_url, json={"n": -2}, headers=headers)
                    assert after.status_code == 201, after.text
                    assert await _next_id(first_events) == after.json()["replayId"]

    assert len(during) >= 2
    _unavailable(new_tenant)
    _unavailable(new_client)
    _unavailable(listed)
    _unavailable(unseen_publish)
    # A client this node has seen still gets tokens, on both token endpoints, from the cache.
    assert token_while_down.status_code == 200, token_while_down.text
    assert salesforce_token_while_down.status_code == 200, salesforce_token_while_down.text
    assert token_while_down.json()["access_token"]
    # One it has never seen cannot be checked: an OAuth-shaped 503, never a hang or a 401.
    assert stranger_token.status_code == 503, stranger_token.text
    assert stranger_token.json()["error"] == "temporarily_unavailable"
    assert stranger_token.headers["Retry-After"] == "1"
    assert healed_client.status_code == 201, healed_client.text
    assert token_after.status_code == 200, token_after.text
