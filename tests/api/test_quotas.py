"""Tenant quotas and limits: publish rate and burst, event size, channel count, concurrent
subscribers (SSE and Bayeux together) and CORS origins. Each refusal stores nothing and leaves
other tenants alone."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from app.bayeux import codec
from tests.api._support import Node, StreamStart, bearer, error_code, hold_stream, running_node
from tests.fakes import FakeClock

ORDER = "/event/Order__e"
ALL = ["publish", "subscribe"]
RATE_LIMITED = {"publishRate": 0.01, "publishBurst": 2}


def _retry_after(response: httpx.Response | StreamStart) -> int:
    value = response.headers.get("retry-after")
    assert value is not None, response.headers
    assert value.isdigit(), value
    return int(value)


# -- publish rate ----------------------------------------------------------------------------


async def test_a_publish_beyond_the_burst_is_rate_limited_until_the_rate_allows() -> None:
    clock = FakeClock()  # the rate refills only when the test moves time
    async with running_node(clock=clock) as node:
        await node.create_tenant("acme", RATE_LIMITED)
        token = await node.client_token("acme", ALL)
        for n in range(2):
            assert (await node.publish(token, ORDER, {"n": n})).status_code == 201

        limited = await node.publish(token, ORDER, {"n": 2})
        assert limited.status_code == 429, limited.text
        assert error_code(limited) == "rate_limited"
        retry_after = _retry_after(limited)
        assert retry_after >= 1
        assert [e["payload"]["n"] for e in await node.history_events(token, ORDER)] == [0, 1]
        sobject = await node.sobject(token, "Order__e")
        assert sobject.status_code == 429, sobject.text
        assert sobject.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
        assert _retry_after(sobject) >= 1

        # Reading is not publishing.
        assert (await node.window(token, ORDER)).status_code == 200

        # Retry-After is honest: once that much time has passed, one more event is allowed.
        clock.advance(retry_after)
        assert (await node.publish(token, ORDER, {"n": 3})).status_code == 201
        assert (await node.publish(token, ORDER, {"n": 4})).status_code == 429
        assert len(await node.history_events(token, ORDER)) == 3


async def test_a_batch_larger_than_the_burst_is_too_large(node: Node) -> None:
    await node.create_tenant("acme", RATE_LIMITED)
    token = await node.client_token("acme", ALL)
    batch = [{"n": n} for n in range(3)]
    refused = await node.http.post("/v1/events" + ORDER, json=batch, headers=bearer(token))
    assert refused.status_code == 413, refused.text
    assert error_code(refused) == "batch_too_large"
    assert await node.history_events(token, ORDER) == []
    # A batch within the burst is fine.
    within = await node.http.post("/v1/events" + ORDER, json=batch[:2], headers=bearer(token))
    assert within.status_code == 201, within.text


async def test_one_tenants_rate_limit_leaves_other_tenants_alone(node: Node) -> None:
    await node.create_tenant("acme", RATE_LIMITED)
    await node.create_tenant("globex", RATE_LIMITED)
    await node.create_tenant("initech")
    acme = await node.client_token("acme", ALL)
    globex = await node.client_token("globex", ALL)
    initech = await node.client_token("initech", ALL)
    for _ in range(2):
        assert (await node.publish(acme, ORDER)).status_code == 201
    assert (await node.publish(acme, ORDER)).status_code == 429

    # The same quota is a bucket of its own per tenant; a tenant without one has no limit.
    for _ in range(2):
        assert (await node.publish(globex, ORDER)).status_code == 201
    for _ in range(5):
        assert (await node.publish(initech, ORDER)).status_code == 201
    assert len(await node.history_events(initech, ORDER)) == 5


# -- event size ------------------------------------------------------------------------------


def _payload_of(size: int) -> dict[str, Any]:
    """A payload whose compact JSON encoding is exactly `size` bytes."""
    payload = {"d": "x" * (size - len('{"d":""}'))}
    assert len(orjson.dumps(payload)) == size
    return payload


async def test_a_tenants_event_size_narrows_the_servers(node: Node) -> None:
    await node.create_tenant("acme", {"maxEventSize": 50})
    await node.create_tenant("globex")
    acme = await node.client_token("acme", ALL)
    globex = await node.client_token("globex", ALL)
    big, small = _payload_of(100), _payload_of(50)

    refused = await node.publish(acme, ORDER, big)
    assert refused.status_code == 413, refused.text
    assert error_code(refused) == "event_too_large"
    assert await node.history_events(acme, ORDER) == []
    assert (await node.publish(acme, ORDER, small)).status_code == 201

    # The server's own limit would allow it.
    assert (await node.publish(globex, ORDER, big)).status_code == 201


# -- channel count ---------------------------------------------------------------------------


async def test_publishing_to_one_channel_too_many_is_refused(node: Node) -> None:
    await node.create_tenant("acme", {"maxChannels": 2})
    await node.create_tenant("globex", {"maxChannels": 2})
    token = await node.client_token("acme", ALL)
    first, second, third = "/event/One__e", "/event/Two__e", "/event/Three__e"
    assert (await node.publish(token, first)).status_code == 201
    assert (await node.publish(token, second)).status_code == 201

    refused = await node.publish(token, third)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "too_many_channels"
    assert await node.history_events(token, third) == []
    composite = await node.http.post(
        "/services/data/v58.0/sobjects/Three__e", json={"n": 1}, headers=bearer(token)
    )
    assert composite.status_code == 403, composite.text
    assert composite.json()[0]["errorCode"] == "LIMIT_EXCEEDED"

    # The channels it has keep working, and another tenant counts its own.
    assert (await node.publish(token, first)).status_code == 201
    assert (await node.publish(token, second)).status_code == 201
    assert len(await node.history_events(token, first)) == 2
    globex = await node.client_token("globex", ALL)
    assert (await node.publish(globex, third)).status_code == 201


# -- concurrent subscribers ------------------------------------------------------------------


async def test_subscribers_beyond_the_cap_are_refused_until_one_leaves(node: Node) -> None:
    await node.create_tenant("acme", {"maxSubscribers": 1})
    await node.create_tenant("globex", {"maxSubscribers": 1})
    token = await node.client_token("acme", ALL)

    async with hold_stream(node, token, ORDER) as first:
        assert first.status == 200
        assert first.headers["content-type"].startswith("text/event-stream")

        async with hold_stream(node, token, "/event/Other__e") as second:
            assert second.status == 429, second.body
            assert second.error == "too_many_subscribers"
            assert _retry_after(second) >= 1

        handshake = await node.handshake(token)
        assert handshake["successful"] is False, handshake
        assert handshake["ext"]["sfdc"]["failureReason"] == codec.CONCURRENT_LIMIT

        # Another tenant has its own count.
        globex = await node.client_token("globex", ALL)
        assert await node.stream_status(globex, ORDER) == (200, "")

    # The first stream is over (its handling has returned), so its place is free again.
    assert await node.stream_status(token, ORDER) == (200, "")
    # A Bayeux client takes the place now, and then SSE waits for it.
    client_id = await node.bayeux_session(token)
    assert await node.stream_status(token, ORDER) == (429, "too_many_subscribers")
    disconnect = await node.bayeux(token, {"channel": "/meta/disconnect", "clientId": client_id})
    assert disconnect["successful"] is True, disconnect
    assert await node.stream_status(token, ORDER) == (200, "")


async def test_a_cap_of_zero_admits_no_subscriber(node: Node) -> None:
    await node.create_tenant("acme", {"maxSubscribers": 0})
    token = await node.client_token("acme", ALL)
    assert await node.stream_status(token, ORDER) == (429, "too_many_subscribers")
    handshake = await node.handshake(token)
    assert handshake["successful"] is False, handshake
    assert handshake["ext"]["sfdc"]["failureReason"] == codec.CONCURRENT_LIMIT
    assert (await node.publish(token, ORDER)).status_code == 201  # publishing is not capped


# -- CORS origins ----------------------------------------------------------------------------


async def test_a_tenants_origins_refuse_browser_requests_from_elsewhere(node: Node) -> None:
    await node.create_tenant("acme", {"corsOrigins": ["https://app.example.com"]})
    await node.create_tenant("globex")
    token = await node.client_token("acme", ALL)

    def headers(origin: str | None) -> dict[str, str]:
        return {**bearer(token), **({"Origin": origin} if origin else {})}

    url = "/v1/events" + ORDER
    refused = await node.http.post(url, json={"n": 0}, headers=headers("https://evil.example.com"))
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "forbidden"
    read = await node.http.get(url, headers=headers("https://evil.example.com"))
    assert read.status_code == 403, read.text
    async with hold_stream(
        node, token, ORDER, headers={"Origin": "https://evil.example.com"}
    ) as stream:
        assert (stream.status, stream.error) == (403, "forbidden")

    allowed = await node.http.post(url, json={"n": 1}, headers=headers("https://app.example.com"))
    assert allowed.status_code == 201, allowed.text
    no_origin = await node.http.post(url, json={"n": 2}, headers=headers(None))
    assert no_origin.status_code == 201, no_origin.text
    assert [e["payload"]["n"] for e in await node.history_events(token, ORDER)] == [1, 2]

    # A tenant without origins of its own takes any.
    globex = await node.client_token("globex", ALL)
    other = await node.http.post(
        url, json={"n": 1}, headers={**bearer(globex), "Origin": "https://evil.example.com"}
    )
    assert other.status_code == 201, other.text
