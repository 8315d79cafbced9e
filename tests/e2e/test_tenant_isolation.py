"""Two tenants on one real server, both using the channel `/event/Order_Placed__e`.

The README promises that the tenant comes only from the access token, so two tenants can both
use `/event/Order_Placed__e` and never see each other's events. Here two tenants are created
over the admin API (the operator key), each with one client (`publish` and `subscribe`) whose
token comes from the client-credentials grant. Every URL is the same for both tenants; only the
token differs.

Each tenant publishes its own orders, alternating native REST (`POST /v1/events/...`) and
Salesforce REST (`POST /services/data/v58.0/sobjects/Order_Placed__e`), interleaved with the
other tenant's: A0, B0, A1, B1, ... So an event leaking from one tenant to the other would land
among the receiver's own events and show in the exact, ordered list every subscriber must get.

Subscribers, per tenant, on every transport: an SSE stream (`/v1/stream`, replayId -1, and the
wildcard `/event/*`), the official CometD JavaScript client under Node (`bayeux_node`) and the
Python aiosfstream-ng client (`bayeux_python`). Then history, the channel window and replay from
-2 on all three transports; then tenant A's token handed tenant B's positions, idempotency key,
schema id and admin URLs: it only ever reaches A's data.

Waits are for an expected count of events with a deadline; nothing sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosfstream_ng.replay import ReplayMarker, ReplayOption
from httpx_sse import aconnect_sse

from tests.e2e.bayeux_node import (
    NodeRun,
    events,
    install_node_packages,
    is_subscribe_reply,
    node_script,
)
from tests.e2e.bayeux_publish import API_VERSION
from tests.e2e.bayeux_python import ClientCredentials, StreamingClient, receive
from tests.e2e.server import RunningServer, run_server
from tests.e2e.sse import dispatched, publish

OPERATOR_KEY = "isolation-operator-key-0123456789"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
EVENT_TYPE = "Order_Placed__e"
CHANNEL = f"/event/{EVENT_TYPE}"
ROUNDS = 6  # orders per tenant in each test
DEADLINE = 10.0  # seconds any one subscriber may take (the Node script gives up by itself)
WAIT = DEADLINE + 5.0  # how long a test waits for a Node script's output and exit
BAYEUX_STAMPS = ("CreatedDate", "CreatedById")  # the fields the Bayeux payload adds


@dataclass(frozen=True)
class Tenant:
    """A tenant and its one client. `server` is the running server as seen with this client's
    credentials, so `server.token()` and `ClientCredentials(server)` authenticate as it."""

    name: str
    server: RunningServer
    token: str

    @property
    def client_id(self) -> str:
        return self.server.client_id

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def url(self, path: str) -> str:
        return self.server.base_url + path


@dataclass(frozen=True)
class Order:
    """One event as every reader can identify it: its uuid and the payload as published."""

    uuid: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Seen:
    """What one subscriber or read got: the orders in order, and their ReplayIds."""

    orders: list[Order]
    replay_ids: list[int]


def _seen(pairs: list[tuple[int, Order]]) -> Seen:
    return Seen([order for _, order in pairs], [replay_id for replay_id, _ in pairs])


def _admin(server: RunningServer, path: str, body: object) -> dict[str, Any]:
    response = httpx.post(f"{server.base_url}/v1/admin{path}", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _create_tenant(server: RunningServer, name: str) -> Tenant:
    created = _admin(server, "/tenants", {"tenantId": name})
    assert created["tenantId"] == name
    issued = _admin(server, f"/tenants/{name}/clients", {"scopes": ["publish", "subscribe"]})
    assert issued["tenantId"] == name
    assert sorted(issued["scopes"]) == ["publish", "subscribe"]
    own = dataclasses.replace(
        server, client_id=issued["clientId"], client_secret=issued["clientSecret"]
    )
    return Tenant(name, own, own.token())


@pytest.fixture(scope="module")
def isolated(signing_key_pem: str) -> Iterator[RunningServer]:
    """One server on embedded defaults (in-memory engine and catalog) with an operator key."""
    with run_server(
        {"REPLAYBUS_OPERATOR_KEY": OPERATOR_KEY, "REPLAYBUS_SIGNING_KEY": signing_key_pem}
    ) as running:
        yield running


@pytest.fixture
def tenants(isolated: RunningServer) -> tuple[Tenant, Tenant]:
    """Two fresh tenants per test, so no test sees another test's orders."""
    suffix = uuid.uuid4().hex[:8]
    return _create_tenant(isolated, f"alpha-{suffix}"), _create_tenant(isolated, f"beta-{suffix}")


@pytest.fixture(scope="module")
def node_dir() -> Path:
    return install_node_packages()


# Publishing ------------------------------------------------------------------------------------


def _payload(tenant: Tenant, number: int) -> dict[str, Any]:
    return {
        "Order_Number__c": f"{tenant.name}-{number}",
        "Tenant__c": tenant.name,
        "Seq__c": number,
    }


async def _publish_rest(http: httpx.AsyncClient, tenant: Tenant, payload: object) -> Order:
    ack = await publish(http, tenant.server.base_url, tenant.token, CHANNEL, payload)
    assert ack["channel"] == CHANNEL
    assert ack["duplicate"] is False
    assert isinstance(payload, dict)
    return Order(ack["uuid"], payload)


async def _publish_sobject(http: httpx.AsyncClient, tenant: Tenant, payload: object) -> Order:
    response = await http.post(
        tenant.url(f"/services/data/v{API_VERSION}/sobjects/{EVENT_TYPE}"),
        json=payload,
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["success"] is True, result
    assert isinstance(payload, dict)
    return Order(result["id"], payload)


async def publish_orders(
    http: httpx.AsyncClient, tenants: tuple[Tenant, Tenant], rounds: int = ROUNDS
) -> dict[str, list[Order]]:
    """`rounds` orders per tenant, interleaved (A0, B0, A1, B1, ...), one request each: even
    numbers over native REST, odd ones as a Salesforce sObject. Each tenant's orders in order."""
    sent: dict[str, list[Order]] = {tenant.name: [] for tenant in tenants}
    for number in range(rounds):
        for tenant in tenants:
            via = _publish_rest if number % 2 == 0 else _publish_sobject
            sent[tenant.name].append(await via(http, tenant, _payload(tenant, number)))
    return sent


# Reading ---------------------------------------------------------------------------------------


def _from_envelope(envelope: dict[str, Any], channel: str = CHANNEL) -> tuple[int, Order]:
    """An SSE / history envelope: `{"channel","replayId","uuid","createdDate","schema",...}`."""
    assert envelope["channel"] == channel, envelope
    return int(envelope["replayId"]), Order(envelope["uuid"], envelope["payload"])


def _from_bayeux(message: dict[str, Any], tenant: Tenant) -> tuple[int, Order]:
    """A delivered Bayeux message. Its payload carries `CreatedDate` and `CreatedById` (the
    publishing client, which must be the receiving tenant's own) besides the published fields."""
    assert message["channel"] == CHANNEL, message
    data = message["data"]
    payload = dict(data["payload"])
    assert payload.pop("CreatedById") == tenant.client_id, message
    assert isinstance(payload.pop("CreatedDate"), str), message
    return int(data["event"]["replayId"]), Order(data["event"]["EventUuid"], payload)


Reader = Callable[[], Awaitable[Seen]]


async def open_sse(
    stack: AsyncExitStack,
    http: httpx.AsyncClient,
    tenant: Tenant,
    count: int,
    *,
    path: str = CHANNEL,
    replay: int | None = None,
    last_event_id: int | None = None,
) -> Reader:
    """An SSE stream, open (so subscribed) on return; the reader takes the next `count` events."""
    params = {} if replay is None else {"replayId": str(replay)}
    headers = dict(tenant.headers)
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    source = await stack.enter_async_context(
        aconnect_sse(http, "GET", tenant.url(f"/v1/stream{path}"), params=params, headers=headers)
    )
    assert source.response.status_code == 200, await source.response.aread()

    async def read() -> Seen:
        got: list[tuple[int, Order]] = []
        try:
            async with asyncio.timeout(DEADLINE):
                async for message in dispatched(source):
                    assert message.event == "message", message
                    got.append(_from_envelope(message.json()))
                    if len(got) == count:
                        break
        except TimeoutError:
            raise AssertionError(f"{tenant.name} SSE {path}: {len(got)} of {count}") from None
        return _seen(got)

    return read


def _cometd_js(
    node_dir: Path, tenant: Tenant, replay: int, count: int
) -> AbstractAsyncContextManager[NodeRun]:
    arguments = [
        f"--url={tenant.server.base_url}",
        f"--channel={CHANNEL}",
        f"--replay={replay}",
        f"--count={count}",
        f"--version={API_VERSION}",
        f"--deadline-ms={int(DEADLINE * 1000)}",
    ]
    return node_script("subscriber.mjs", arguments, tenant.token, node_dir)


async def open_cometd_js(
    stack: AsyncExitStack, node_dir: Path, tenant: Tenant, replay: int, count: int
) -> Reader:
    """The CometD JavaScript client, subscribed on return; the reader waits for it to exit by
    itself after `count` events."""
    run = await stack.enter_async_context(_cometd_js(node_dir, tenant, replay, count))
    reply = await run.wait_for(is_subscribe_reply, WAIT)
    assert reply["message"]["successful"] is True, run.describe()

    async def read() -> Seen:
        records = await run.finish(WAIT)
        assert run.returncode == 0, run.describe()
        [done] = [record for record in records if record["type"] == "done"]
        assert done["reason"] == "count", run.describe()
        return _seen([_from_bayeux(message, tenant) for message in events(records)])

    return read


async def open_aiosfstream(
    stack: AsyncExitStack,
    tenant: Tenant,
    replay: ReplayOption | dict[str, ReplayMarker],
    count: int,
) -> Reader:
    """aiosfstream-ng authenticated as the tenant's client, subscribed on return; the reader
    takes the next `count` messages."""
    auth = ClientCredentials(tenant.server)
    client = StreamingClient(auth, replay=replay)
    # What `async with client` does (its `__aexit__` is typed too narrowly for AsyncExitStack):
    # open, and close on the way out whether or not the open succeeded.
    stack.push_async_callback(client.close)
    async with asyncio.timeout(DEADLINE):
        await client.open()
        await client.subscribe(CHANNEL)
    [subscribe] = auth.replies("/meta/subscribe")
    assert subscribe["successful"] is True, subscribe

    async def read() -> Seen:
        try:
            messages = await receive(client, count, DEADLINE)
        except TimeoutError:
            raise AssertionError(f"{tenant.name} aiosfstream: fewer than {count}") from None
        return _seen([_from_bayeux(message, tenant) for message in messages])

    return read


async def history(
    http: httpx.AsyncClient, tenant: Tenant, after: int | None = None
) -> dict[str, Any]:
    params = {} if after is None else {"after": str(after)}
    response = await http.get(
        tenant.url(f"/v1/events{CHANNEL}"), params=params, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def _history_seen(page: dict[str, Any]) -> Seen:
    return _seen([_from_envelope(envelope) for envelope in page["events"]])


def _assert_seen(
    seen: dict[tuple[str, str], Seen], expected: dict[tuple[str, str], list[Order]]
) -> None:
    """Every reader got exactly its expected orders, in order, with increasing ReplayIds. One
    comparison of everything, so a failure shows every reader at once."""
    assert {key: value.orders for key, value in seen.items()} == expected
    for key, value in seen.items():
        assert value.replay_ids == sorted(set(value.replay_ids)), key


# Tests -----------------------------------------------------------------------------------------


async def test_live_subscribers_on_every_transport_get_exactly_their_own_tenants_orders(
    node_dir: Path, tenants: tuple[Tenant, Tenant]
) -> None:
    readers: dict[tuple[str, str], Reader] = {}
    async with httpx.AsyncClient(timeout=30) as http, AsyncExitStack() as stack:
        for tenant in tenants:
            readers[tenant.name, "sse"] = await open_sse(stack, http, tenant, ROUNDS, replay=-1)
            readers[tenant.name, "sse /event/*"] = await open_sse(
                stack, http, tenant, ROUNDS, path="/event/*"
            )
            readers[tenant.name, "cometd-js"] = await open_cometd_js(
                stack, node_dir, tenant, -1, ROUNDS
            )
            readers[tenant.name, "aiosfstream"] = await open_aiosfstream(
                stack, tenant, ReplayOption.NEW_EVENTS, ROUNDS
            )
        # Every subscription is in place: publish both tenants' orders, interleaved.
        sent = await publish_orders(http, tenants)
        seen = dict(
            zip(readers, await asyncio.gather(*(read() for read in readers.values())), strict=True)
        )

    _assert_seen(seen, {(name, transport): sent[name] for name, transport in readers})


async def test_history_window_and_replay_from_the_oldest_show_only_own_orders(
    node_dir: Path, tenants: tuple[Tenant, Tenant]
) -> None:
    readers: dict[tuple[str, str], Reader] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        sent = await publish_orders(http, tenants)
        pages = {tenant.name: await history(http, tenant) for tenant in tenants}
        windows = {}
        for tenant in tenants:
            response = await http.get(tenant.url(f"/v1/channels{CHANNEL}"), headers=tenant.headers)
            assert response.status_code == 200, response.text
            windows[tenant.name] = response.json()
        async with AsyncExitStack() as stack:
            for tenant in tenants:
                readers[tenant.name, "sse -2"] = await open_sse(
                    stack, http, tenant, ROUNDS, replay=-2
                )
                readers[tenant.name, "cometd-js -2"] = await open_cometd_js(
                    stack, node_dir, tenant, -2, ROUNDS
                )
                readers[tenant.name, "aiosfstream -2"] = await open_aiosfstream(
                    stack, tenant, ReplayOption.ALL_EVENTS, ROUNDS
                )
            seen = dict(
                zip(
                    readers,
                    await asyncio.gather(*(read() for read in readers.values())),
                    strict=True,
                )
            )

    for tenant in tenants:
        seen[tenant.name, "history"] = _history_seen(pages[tenant.name])
    _assert_seen(seen, {(name, reader): sent[name] for name, reader in seen})
    for tenant in tenants:
        ids = seen[tenant.name, "history"].replay_ids
        assert "gap" not in pages[tenant.name]
        history_window = dict(pages[tenant.name]["window"])
        assert history_window.pop("lowWaterMark") < ids[0]  # nothing evicted
        assert history_window == {"earliest": ids[0], "latest": ids[-1], "count": ROUNDS}
        window = windows[tenant.name]
        assert window["channel"] == CHANNEL
        assert (window["earliest"], window["latest"], window["count"]) == (ids[0], ids[-1], ROUNDS)
        # Every reader of the tenant saw the same ReplayIds as its history.
        for (name, reader), value in seen.items():
            if name == tenant.name:
                assert value.replay_ids == ids, (name, reader)


async def test_the_other_tenants_replay_id_resumes_only_own_orders_on_every_transport(
    node_dir: Path, tenants: tuple[Tenant, Tenant]
) -> None:
    """Tenant A's token given a ReplayId that tenant B's channel assigned: as a position in A's
    own channel it resumes exactly A's orders after it, never B's."""
    a, b = tenants
    readers: dict[tuple[str, str], Reader] = {}
    async with httpx.AsyncClient(timeout=30) as http:
        sent = await publish_orders(http, tenants)
        a_history = _history_seen(await history(http, a))
        b_ids = _history_seen(await history(http, b)).replay_ids
        assert a_history.orders == sent[a.name]
        a_ids = a_history.replay_ids
        # B's id from the middle of the interleaving, inside A's window: a valid position there.
        position = b_ids[ROUNDS // 2]
        assert a_ids[0] <= position <= a_ids[-1], (a_ids, b_ids)
        rest = [
            order
            for replay_id, order in zip(a_ids, a_history.orders, strict=True)
            if replay_id > position
        ]
        assert rest, (a_ids, position)

        page = await history(http, a, after=position)
        marker = ReplayMarker(date="2026-01-01T00:00:00.000Z", replay_id=position)
        async with AsyncExitStack() as stack:
            readers[a.name, "sse Last-Event-ID"] = await open_sse(
                stack, http, a, len(rest), last_event_id=position
            )
            readers[a.name, "cometd-js"] = await open_cometd_js(
                stack, node_dir, a, position, len(rest)
            )
            readers[a.name, "aiosfstream"] = await open_aiosfstream(
                stack, a, {CHANNEL: marker}, len(rest)
            )
            seen = dict(
                zip(
                    readers,
                    await asyncio.gather(*(read() for read in readers.values())),
                    strict=True,
                )
            )

    assert "gap" not in page, page
    seen[a.name, "history after"] = _history_seen(page)
    _assert_seen(seen, dict.fromkeys(seen, rest))


async def test_the_same_idempotency_key_in_two_tenants_is_two_events(
    tenants: tuple[Tenant, Tenant],
) -> None:
    a, b = tenants
    async with httpx.AsyncClient(timeout=30) as http:
        acks = {}
        for tenant in (b, a):
            response = await http.post(
                tenant.url(f"/v1/events{CHANNEL}"),
                json=_payload(tenant, 0),
                headers={**tenant.headers, "Idempotency-Key": "order-0001"},
            )
            assert response.status_code == 201, response.text
            acks[tenant.name] = response.json()
        pages = {tenant.name: await history(http, tenant) for tenant in tenants}

    # A's retry-looking request is A's first: a new event, not B's acknowledgement.
    assert acks[a.name]["duplicate"] is False
    assert acks[a.name]["uuid"] != acks[b.name]["uuid"]
    for tenant in tenants:
        assert _history_seen(pages[tenant.name]).orders == [
            Order(acks[tenant.name]["uuid"], _payload(tenant, 0))
        ]


async def test_the_other_tenants_schema_and_administration_are_out_of_reach(
    tenants: tuple[Tenant, Tenant],
) -> None:
    """B declares a schema on its `/event/Order_Placed__e`; A's token neither sees it (by
    channel or by id) nor is held to it, and cannot use the admin API on B."""
    a, b = tenants
    schema = {
        "type": "object",
        "required": ["Order_Number__c"],
        "properties": {"Order_Number__c": {"type": "string"}},
    }
    async with httpx.AsyncClient(timeout=30) as http:
        defined = await http.put(
            b.url(f"/v1/admin/tenants/{b.name}/channels{CHANNEL}"),
            json={"description": "B's orders", "schema": schema},
            headers=OPERATOR,
        )
        assert defined.status_code == 200, defined.text
        schema_id = defined.json()["schema"]["schemaId"]
        own_schema = await http.get(b.url(f"/v1/channels{CHANNEL}/schema"), headers=b.headers)
        b_by_id = await http.get(
            b.url(f"/services/data/v{API_VERSION}/event/eventSchema/{schema_id}"),
            headers=b.headers,
        )
        a_schema = await http.get(a.url(f"/v1/channels{CHANNEL}/schema"), headers=a.headers)
        a_by_id = await http.get(
            a.url(f"/services/data/v{API_VERSION}/event/eventSchema/{schema_id}"),
            headers=a.headers,
        )
        # A payload B's schema refuses is fine in A's channel of the same name.
        a_free = await _publish_rest(http, a, {"Seq__c": 1})
        b_refused = await http.post(
            b.url(f"/v1/events{CHANNEL}"), json={"Seq__c": 1}, headers=b.headers
        )
        b_order = await _publish_rest(http, b, _payload(b, 0))
        pages = {tenant.name: await history(http, tenant) for tenant in tenants}
        admin = {
            path: await http.get(a.url(path), headers=a.headers)
            for path in (
                "/v1/admin/tenants",
                f"/v1/admin/tenants/{b.name}",
                f"/v1/admin/tenants/{b.name}/clients",
                f"/v1/admin/tenants/{b.name}/channels",
                f"/v1/admin/tenants/{b.name}/channels{CHANNEL}",
            )
        }

    assert own_schema.status_code == 200, own_schema.text
    assert own_schema.json()["schemaId"] == schema_id
    assert b_by_id.status_code == 200, b_by_id.text
    assert a_schema.status_code == 404, a_schema.text
    assert a_by_id.status_code == 404, a_by_id.text
    assert b_refused.status_code == 400, b_refused.text
    assert [(e["uuid"], e["schema"]) for e in pages[a.name]["events"]] == [(a_free.uuid, None)]
    assert [(e["uuid"], e["schema"]) for e in pages[b.name]["events"]] == [
        (b_order.uuid, schema_id)
    ]
    for path, response in admin.items():
        assert response.status_code == 403, (path, response.text)
        assert b.client_id not in response.text, path
