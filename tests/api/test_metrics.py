"""`GET /metrics` of an in-process node (memory engine): every value read back from the
Prometheus text exposition after driving the node over REST, the Salesforce API, Bayeux and
SSE. Counters are checked to the exact value the requests imply, labels by tenant and
transport, and channel names only when `REPLAYBUS_METRICS_CHANNEL_LABELS` is on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from api.app import create_app
from app.bayeux import codec
from app.settings import Settings, SettingsError
from tests.api._support import Node, bearer, hold_stream, running_node

X = "/event/Order_Placed__e"
Y = "/event/Low_Ink__e"
ALL = ["publish", "subscribe"]
WAIT_S = 5.0


# -- reading /metrics ------------------------------------------------------------------------


async def scrape(node: Node) -> list[Sample]:
    response = await node.http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples called `name` carrying (at least) `labels`; 0 if there are none
    (a labelled series appears only once it has been used)."""
    return sum(
        sample.value
        for sample in samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def metric(node: Node, name: str, **labels: str) -> float:
    return value(await scrape(node), name, **labels)


async def until_metric(
    node: Node, name: str, wanted: Callable[[float], bool], what: str, **labels: str
) -> float:
    """Scrape until `wanted(value)` holds; fail after WAIT_S."""
    current = 0.0
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                current = await metric(node, name, **labels)
                if wanted(current):
                    return current
                await asyncio.sleep(0.005)  # poll interval; the deadline bounds the wait
    except TimeoutError:
        raise AssertionError(f"{name}{labels}: never {what} (last {current})") from None


# -- requests --------------------------------------------------------------------------------


async def cometd(node: Node, token: str, *messages: dict[str, Any]) -> list[dict[str, Any]]:
    response = await node.http.post("/cometd/58.0", json=list(messages), headers=bearer(token))
    assert response.status_code == 200, response.text
    replies: list[dict[str, Any]] = response.json()
    return replies


def connect(client_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "channel": "/meta/connect",
        "clientId": client_id,
        "connectionType": "long-polling",
        **fields,
    }


def delivered_events(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [reply for reply in replies if not str(reply["channel"]).startswith("/meta/")]


async def subscribe(node: Node, token: str, client_id: str, channel: str, replay: int) -> None:
    [reply] = await cometd(
        node,
        token,
        {
            "channel": "/meta/subscribe",
            "clientId": client_id,
            "subscription": channel,
            "ext": {"replay": {channel: replay}},
        },
    )
    assert reply["successful"] is True, reply


async def publish_many(node: Node, token: str, channel: str, count: int) -> list[int]:
    response = await node.http.post(
        "/v1/events" + channel, json=[{"n": n} for n in range(count)], headers=bearer(token)
    )
    assert response.status_code == 201, response.text
    return [ack["replayId"] for ack in response.json()]


async def within(awaitable: Awaitable[Any]) -> Any:
    async with asyncio.timeout(WAIT_S):
        return await awaitable


# -- publishing ------------------------------------------------------------------------------


async def test_published_events_are_counted_exactly_per_tenant_and_transport() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        await node.create_tenant("beta")
        token = await node.client_token("acme", ALL)
        other = await node.client_token("beta", ALL)
        before = await scrape(node)
        assert value(before, "replaybus_events_published_total") == 0
        assert value(before, "replaybus_publish_duration_seconds_count") == 0

        rest_requests = 0
        for n in range(2):  # two single events
            assert (await node.publish(token, X, {"n": n})).status_code == 201
            rest_requests += 1
        await publish_many(node, token, X, 3)  # one batch of three
        rest_requests += 1
        keyed = {**bearer(token), "Idempotency-Key": "order-7"}
        first = await node.http.post("/v1/events" + X, json={"n": 7}, headers=keyed)
        retried = await node.http.post("/v1/events" + X, json={"n": 7}, headers=keyed)
        rest_requests += 2
        assert first.status_code == retried.status_code == 201
        assert first.json()["duplicate"] is False
        assert retried.json()["duplicate"] is True
        assert retried.json()["replayId"] == first.json()["replayId"]
        refused = await node.http.post("/v1/events" + X, json=[1, 2], headers=bearer(token))
        assert refused.status_code == 400, refused.text  # stores nothing, times nothing
        rest_events = 2 + 3 + 1

        for _ in range(2):
            assert (await node.sobject(token, "Order_Placed__e")).status_code == 201
        composite = await node.http.post(
            "/services/data/v58.0/composite/sobjects",
            json={
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Order_Placed__e"}, "n": 1},
                    {"attributes": {"type": "Order_Placed__e"}, "n": 2},
                ],
            },
            headers=bearer(token),
        )
        assert composite.status_code == 200, composite.text
        assert [result["success"] for result in composite.json()] == [True, True]
        salesforce_events = 2 + 2

        assert (await node.publish(other, X, {"n": 1})).status_code == 201

        samples = await scrape(node)
        published = "replaybus_events_published_total"
        assert value(samples, published, tenant="acme", transport="rest") == rest_events
        assert value(samples, published, tenant="acme", transport="salesforce") == (
            salesforce_events
        )
        assert value(samples, published, tenant="beta", transport="rest") == 1
        assert value(samples, published, tenant="beta", transport="salesforce") == 0
        assert value(samples, published) == rest_events + salesforce_events + 1
        # Every stored history event was counted once, and nothing else was.
        assert len(await node.history_events(token, X)) == rest_events + salesforce_events

        # One observation per acknowledged request (the retried one too: it was validated,
        # looked up in the store and acknowledged), none for the refused request.
        durations = "replaybus_publish_duration_seconds_count"
        assert value(samples, durations, transport="rest") == rest_requests + 1  # + beta's
        assert value(samples, durations, transport="salesforce") == 2 + 1  # sobjects, composite
        assert value(samples, "replaybus_publish_duration_seconds_bucket", le="+Inf") == (
            rest_requests + 1 + 3
        )


async def test_catalog_lookups_hit_the_cache_after_the_first_miss() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        assert (await node.publish(token, X)).status_code == 201

        samples = await scrape(node)
        hits = value(samples, "replaybus_catalog_cache_lookups_total", result="hit")
        misses = value(samples, "replaybus_catalog_cache_lookups_total", result="miss")
        assert hits > 0
        assert misses > 0

        requests = 5
        for _ in range(requests):
            assert (await node.publish(token, X)).status_code == 201
        later = await scrape(node)
        later_hits = value(later, "replaybus_catalog_cache_lookups_total", result="hit")
        later_misses = value(later, "replaybus_catalog_cache_lookups_total", result="miss")

        # The same client, tenant and channel again: every lookup is served from the cache.
        assert later_hits >= hits + requests
        assert later_misses == misses
        assert value(later, "replaybus_catalog_cache_lookups_total", result="stale") == 0

        # A channel not seen before is read from the catalog once, then cached.
        assert (await node.publish(token, Y)).status_code == 201
        assert await metric(node, "replaybus_catalog_cache_lookups_total", result="miss") == (
            later_misses + 1
        )


# -- Bayeux ----------------------------------------------------------------------------------


async def test_bayeux_deliveries_sessions_and_held_connects_are_measured() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        retained = await publish_many(node, token, X, 3)
        client_id = await node.bayeux_session(token)
        await subscribe(node, token, client_id, X, -2)
        assert await metric(node, "replaybus_bayeux_sessions") == 0  # counted from a connect

        first = await cometd(node, token, connect(client_id))
        assert first[-1]["successful"] is True, first
        assert [e["data"]["event"]["replayId"] for e in delivered_events(first)] == retained

        samples = await scrape(node)
        delivered = "replaybus_events_delivered_total"
        assert value(samples, delivered, tenant="acme", transport="bayeux") == len(retained)
        assert value(samples, delivered, transport="sse") == 0
        assert value(samples, "replaybus_bayeux_sessions") == 1
        assert value(samples, "replaybus_bayeux_held_connects") == 0
        lag = "replaybus_delivery_lag_seconds_count"
        assert value(samples, lag, transport="bayeux") == 1  # one reply written
        assert value(samples, "replaybus_replay_reads_total", transport="bayeux") > 0
        assert value(samples, "replaybus_gaps_reported_total") == 0

        # The next connect is held until an event arrives.
        held = asyncio.create_task(cometd(node, token, connect(client_id)))
        try:
            await until_metric(node, "replaybus_bayeux_held_connects", lambda v: v == 1, "1")
            assert not held.done()
            live = await node.publish(token, X, {"n": "live"})
            assert live.status_code == 201
            replies = await within(held)
        finally:
            if not held.done():
                held.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await held
        assert [e["data"]["event"]["replayId"] for e in delivered_events(replies)] == [
            live.json()["replayId"]
        ]
        samples = await scrape(node)
        assert value(samples, "replaybus_bayeux_held_connects") == 0
        assert value(samples, delivered, tenant="acme", transport="bayeux") == len(retained) + 1
        assert value(samples, lag, transport="bayeux") == 2
        assert value(samples, "replaybus_bayeux_sessions") == 1  # the same client

        [bye] = await cometd(node, token, {"channel": "/meta/disconnect", "clientId": client_id})
        assert bye["successful"] is True, bye
        assert await metric(node, "replaybus_bayeux_sessions") == 0


async def test_two_bayeux_clients_count_as_two_sessions() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        clients = [await node.bayeux_session(token) for _ in range(2)]
        for client_id in clients:
            assert (await cometd(node, token, connect(client_id)))[-1]["successful"] is True
        assert await metric(node, "replaybus_bayeux_sessions") == 2

        await cometd(node, token, {"channel": "/meta/disconnect", "clientId": clients[0]})
        assert await metric(node, "replaybus_bayeux_sessions") == 1


async def test_events_evicted_before_a_bayeux_connect_end_the_session_and_count_a_gap() -> None:
    async with running_node(retention_max_count=3) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        [oldest] = await publish_many(node, token, X, 1)
        client_id = await node.bayeux_session(token)
        await subscribe(node, token, client_id, X, -1)
        assert (await cometd(node, token, connect(client_id)))[-1]["successful"] is True

        await publish_many(node, token, X, 5)  # evicts `oldest` and the first two of these
        [reply] = await cometd(node, token, connect(client_id, advice={"timeout": 0}))

        assert reply["successful"] is False, reply
        assert reply["error"] == codec.replay_id_invalid(oldest)
        assert reply["advice"] == {"reconnect": "none", "interval": 0}
        [gap] = reply["ext"]["replaybus"]["gaps"]
        assert gap["requested"] == oldest
        samples = await scrape(node)
        assert value(samples, "replaybus_gaps_reported_total", transport="bayeux") == 1
        assert value(samples, "replaybus_gaps_reported_total", transport="sse") == 0
        assert value(samples, "replaybus_bayeux_sessions") == 0


async def test_reporting_events_evicted_before_a_bayeux_connect_counts_a_gap() -> None:
    async with running_node(retention_max_count=3, bayeux_gap="report") as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        [oldest] = await publish_many(node, token, X, 1)
        client_id = await node.bayeux_session(token)
        await subscribe(node, token, client_id, X, -1)
        assert (await cometd(node, token, connect(client_id)))[-1]["successful"] is True

        published = await publish_many(node, token, X, 5)  # evicts the first three of these
        replies = await cometd(node, token, connect(client_id, advice={"timeout": 0}))

        reply = replies[-1]
        assert reply["successful"] is True, replies
        [gap] = reply["ext"]["replaybus"]["gaps"]
        assert gap["requested"] == oldest
        assert [e["data"]["event"]["replayId"] for e in delivered_events(replies)] == published[2:]
        samples = await scrape(node)
        assert value(samples, "replaybus_gaps_reported_total", transport="bayeux") == 1
        assert value(samples, "replaybus_gaps_reported_total", transport="sse") == 0


async def test_a_bayeux_replay_below_the_window_is_refused_without_counting_a_gap() -> None:
    async with running_node(retention_max_count=3) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        published = await publish_many(node, token, X, 5)
        client_id = await node.bayeux_session(token)

        [reply] = await cometd(
            node,
            token,
            {
                "channel": "/meta/subscribe",
                "clientId": client_id,
                "subscription": X,
                "ext": {"replay": {X: published[0]}},
            },
        )

        assert reply["successful"] is False
        assert reply["error"] == codec.replay_id_invalid(published[0])
        assert await metric(node, "replaybus_gaps_reported_total") == 0


# -- SSE (held open straight on the ASGI app) ------------------------------------------------


async def test_an_sse_resume_below_the_window_reports_a_gap_and_counts_the_stream() -> None:
    async with running_node(retention_max_count=3) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        published = await publish_many(node, token, X, 5)

        resume = {"Last-Event-ID": str(published[0])}
        async with hold_stream(node, token, X, headers=resume) as start:
            assert start.status == 200, start.error
            await until_metric(
                node, "replaybus_gaps_reported_total", lambda v: v == 1, "1", transport="sse"
            )
            await until_metric(
                node,
                "replaybus_events_delivered_total",
                lambda v: v == 3,
                "3",
                tenant="acme",
                transport="sse",
            )
            samples = await scrape(node)
            assert value(samples, "replaybus_sse_streams") == 1
            assert value(samples, "replaybus_replay_reads_total", transport="sse") > 0
            assert value(samples, "replaybus_gaps_reported_total", transport="bayeux") == 0
        assert await metric(node, "replaybus_sse_streams") == 0


# -- channel labels --------------------------------------------------------------------------


async def test_channel_labels_name_the_channel_of_published_events_when_enabled() -> None:
    async with running_node(metrics_channel_labels=True) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        await publish_many(node, token, X, 2)
        assert (await node.publish(token, Y)).status_code == 201
        assert (await node.sobject(token, "Low_Ink__e")).status_code == 201

        samples = await scrape(node)
        published = "replaybus_events_published_total"
        assert value(samples, published, tenant="acme", transport="rest", channel=X) == 2
        assert value(samples, published, tenant="acme", transport="rest", channel=Y) == 1
        assert value(samples, published, tenant="acme", transport="salesforce", channel=Y) == 1
        assert value(samples, published, tenant="acme", transport="salesforce", channel=X) == 0
        labelled = {sample.name for sample in samples if "channel" in sample.labels}
        assert labelled == {published}


async def test_no_series_has_a_channel_label_by_default() -> None:
    async with running_node() as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)
        await publish_many(node, token, X, 2)
        assert (await node.sobject(token, "Low_Ink__e")).status_code == 201
        client_id = await node.bayeux_session(token)
        await subscribe(node, token, client_id, X, -2)
        assert len(delivered_events(await cometd(node, token, connect(client_id)))) == 2

        samples = await scrape(node)
        assert value(samples, "replaybus_events_published_total", tenant="acme") == 3
        assert value(samples, "replaybus_events_delivered_total", tenant="acme") == 2
        assert [sample for sample in samples if "channel" in sample.labels] == []
        response = await node.http.get("/metrics")
        assert X not in response.text
        assert "channel=" not in response.text


@pytest.mark.parametrize(
    ("client_host", "allowed", "status"),
    [
        ("10.1.2.3", None, 200),  # a pod address: an in-cluster scraper
        ("127.0.0.1", None, 200),
        ("203.0.113.7", None, 403),  # a public address, as forwarded by the ingress
        ("203.0.113.7", "203.0.113.0/24", 200),
        ("203.0.113.7", "*", 200),
    ],
)
async def test_metrics_answer_only_the_allowed_networks(
    client_host: str, allowed: str | None, status: int
) -> None:
    settings = Settings(bootstrap_client_id="c", bootstrap_client_secret="s", access_log=False)
    if allowed is not None:
        settings = settings.replace(metrics_allowed_networks=allowed)
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app, client=(client_host, 4321))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://replaybus") as client,
    ):
        answer = await client.get("/metrics")

    assert answer.status_code == status
    if status == 403:
        assert answer.json()["error"] == "forbidden"
    else:
        assert "replaybus_sse_streams" in answer.text


def test_an_unparseable_metrics_network_is_refused_naming_the_setting() -> None:
    with pytest.raises(SettingsError, match="REPLAYBUS_METRICS_ALLOWED_NETWORKS"):
        Settings.from_env({"REPLAYBUS_METRICS_ALLOWED_NETWORKS": "10.0.0.0/8,not-a-network"})
