"""Native REST publish, history and channel window against a real server."""

from __future__ import annotations

import httpx

from tests.e2e.server import RunningServer
from tests.e2e.sse import channel_name, publish


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_batch_publish_is_stored_in_order_and_answered_as_an_array(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    async with httpx.AsyncClient() as client:
        acks = await publish(client, server.base_url, token, channel, [{"n": n} for n in range(5)])
        history = (
            await client.get(f"{server.base_url}/v1/events{channel}", headers=_auth(token))
        ).json()
    assert [ack["replayId"] for ack in acks] == sorted(ack["replayId"] for ack in acks)
    assert [e["payload"]["n"] for e in history["events"]] == list(range(5))
    assert [e["uuid"] for e in history["events"]] == [ack["uuid"] for ack in acks]


async def test_retried_publish_with_idempotency_key_returns_original_and_stores_nothing(
    server: RunningServer, token: str
) -> None:
    channel = channel_name()
    url = f"{server.base_url}/v1/events{channel}"
    headers = {**_auth(token), "Idempotency-Key": "order-42"}
    async with httpx.AsyncClient() as client:
        first = await client.post(url, json={"order": 42}, headers=headers)
        again = await client.post(url, json={"order": 42}, headers=headers)
        window = (
            await client.get(f"{server.base_url}/v1/channels{channel}", headers=_auth(token))
        ).json()
    assert first.status_code == again.status_code == 201
    assert again.json()["replayId"] == first.json()["replayId"]
    assert again.json()["uuid"] == first.json()["uuid"]
    assert first.json()["duplicate"] is False
    assert again.json()["duplicate"] is True
    assert window["count"] == 1


async def test_history_pages_with_after_and_limit(server: RunningServer, token: str) -> None:
    channel = channel_name()
    url = f"{server.base_url}/v1/events{channel}"
    async with httpx.AsyncClient() as client:
        unused = await client.get(f"{server.base_url}/v1/channels{channel}", headers=_auth(token))
        acks = await publish(client, server.base_url, token, channel, [{"n": n} for n in range(7)])
        ids = [ack["replayId"] for ack in acks]
        seen: list[int] = []
        after = -2
        while True:
            page = (
                await client.get(url, params={"after": after, "limit": 3}, headers=_auth(token))
            ).json()
            if not page["events"]:
                break
            seen.extend(e["replayId"] for e in page["events"])
            after = page["next"]
        newest = (await client.get(url, params={"after": -1}, headers=_auth(token))).json()
    assert seen == ids
    assert newest["events"] == []
    assert page["window"] == {
        "earliest": ids[0],
        "latest": ids[-1],
        "lowWaterMark": unused.json()["lowWaterMark"],  # nothing evicted: still the birth mark
        "count": 7,
    }
    assert "gap" not in page


async def test_channel_window_of_an_unused_channel_is_empty(
    server: RunningServer, token: str
) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{server.base_url}/v1/channels{channel_name()}", headers=_auth(token)
        )
    body = response.json()
    assert response.status_code == 200
    assert body["earliest"] is None
    # Both at the store's birth mark: the position a new subscriber is given resumes exactly.
    assert body["latest"] == body["lowWaterMark"] > 0
    assert body["count"] == 0
    assert body["retention"] == {"maxAgeSeconds": 259200.0, "maxCount": 100000}


async def test_same_channel_name_in_another_token_scope_is_not_readable_without_subscribe(
    server: RunningServer,
) -> None:
    publish_only = server.token(scope="publish")
    async with httpx.AsyncClient() as client:
        response = await client.get(
            f"{server.base_url}/v1/events{channel_name()}", headers=_auth(publish_only)
        )
    assert response.status_code == 403
    assert response.json()["error"] == "insufficient_scope"


def test_health_and_readiness(server: RunningServer) -> None:
    assert httpx.get(server.base_url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.base_url + "/readyz").json()
    assert ready["status"] == "ready"
    assert isinstance(ready["heldConnects"], int)
