"""Publishing edges: composite `allOrNone` stores all or nothing (the channel quota included;
across several types only with an Idempotency-Key, which makes a retry complete the request),
idempotency keys belong to the client that chose them, and Salesforce's `eventSchema` lookup
needs what reading a channel's schema needs elsewhere."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.api._support import Node, bearer, error_code

ALL = ["publish", "subscribe"]
COMPOSITE = "/services/data/v58.0/composite/sobjects"
ONE, TWO = "/event/One__e", "/event/Two__e"


def _records(*types: str) -> list[dict[str, Any]]:
    return [{"attributes": {"type": kind}, "n": n} for n, kind in enumerate(types)]


async def _composite(
    node: Node, token: str, all_or_none: bool, *types: str, key: str | None = None
) -> httpx.Response:
    """A composite request; with `allOrNone` over several types, with a fresh Idempotency-Key
    unless `key` names one (they need one)."""
    body = {"allOrNone": all_or_none, "records": _records(*types)}
    headers = bearer(token)
    if all_or_none and len(set(types)) > 1:
        headers["Idempotency-Key"] = key or uuid.uuid4().hex
    return await node.http.post(COMPOSITE, json=body, headers=headers)


async def _stored(node: Node, token: str, channel: str) -> int:
    return len(await node.history_events(token, channel))


# -- composite all or none -------------------------------------------------------------------


async def test_all_or_none_over_the_channel_quota_stores_nothing(node: Node) -> None:
    await node.create_tenant("acme", {"maxChannels": 1})
    token = await node.client_token("acme", ALL)

    response = await _composite(node, token, True, "One__e", "Two__e", "One__e")

    assert response.status_code == 200, response.text
    results = response.json()
    assert [result["success"] for result in results] == [False, False, False]
    codes = [result["errors"][0]["statusCode"] for result in results]
    rolled_back = "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert codes == [rolled_back, "LIMIT_EXCEEDED", rolled_back]
    assert await _stored(node, token, ONE) == 0
    assert await _stored(node, token, TWO) == 0

    # The retry that fits stores everything once.
    retried = await _composite(node, token, True, "One__e", "One__e")
    assert [result["success"] for result in retried.json()] == [True, True]
    assert await _stored(node, token, ONE) == 2


async def test_without_all_or_none_the_records_within_the_quota_are_stored(node: Node) -> None:
    await node.create_tenant("acme", {"maxChannels": 1})
    token = await node.client_token("acme", ALL)

    response = await _composite(node, token, False, "One__e", "Two__e", "One__e")

    assert response.status_code == 200, response.text
    results = response.json()
    assert [result["success"] for result in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "LIMIT_EXCEEDED"
    assert await _stored(node, token, ONE) == 2
    assert await _stored(node, token, TWO) == 0


async def test_all_or_none_over_the_publish_rate_stores_nothing(node: Node) -> None:
    await node.create_tenant("acme", {"publishRate": 0.001, "publishBurst": 2})
    token = await node.client_token("acme", ALL)
    assert (await node.publish(token, ONE)).status_code == 201  # one of the two left

    response = await _composite(node, token, True, "One__e", "Two__e")

    assert response.status_code == 429, response.text
    assert response.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert await _stored(node, token, ONE) == 1
    assert await _stored(node, token, TWO) == 0


async def test_all_or_none_over_several_types_without_an_idempotency_key_is_refused(
    node: Node,
) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    body = {"allOrNone": True, "records": _records("One__e", "Two__e")}

    response = await node.http.post(COMPOSITE, json=body, headers=bearer(token))
    one_type = await _composite(node, token, True, "One__e", "One__e")

    assert response.status_code == 400, response.text
    [error] = response.json()
    assert error["errorCode"] == "INVALID_INPUT"
    assert "needs an Idempotency-Key header" in error["message"]
    assert await _stored(node, token, TWO) == 0
    assert one_type.status_code == 200, one_type.text  # one type is one atomic step: no key
    assert await _stored(node, token, ONE) == 2


async def test_all_or_none_with_an_untyped_record_stores_nothing(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    body = {"allOrNone": True, "records": [*_records("One__e"), {"n": 1}]}

    response = await node.http.post(COMPOSITE, json=body, headers=bearer(token))

    assert response.status_code == 200, response.text
    codes = [result["errors"][0]["statusCode"] for result in response.json()]
    assert codes == ["ALL_OR_NONE_OPERATION_ROLLED_BACK", "INVALID_TYPE"]
    assert await _stored(node, token, ONE) == 0


# -- idempotency keys per client -------------------------------------------------------------


async def test_two_clients_using_one_idempotency_key_get_their_own_events(node: Node) -> None:
    await node.create_tenant("acme")
    first = await node.client_token("acme", ALL)
    second = await node.client_token("acme", ALL)

    acks = []
    for token, n in ((first, 1), (second, 2), (first, 1), (second, 2)):
        headers = {**bearer(token), "Idempotency-Key": "order-7"}
        response = await node.http.post("/v1/events" + ONE, json={"n": n}, headers=headers)
        assert response.status_code == 201, response.text
        acks.append(response.json())

    assert [ack["duplicate"] for ack in acks] == [False, False, True, True]
    assert acks[0]["replayId"] != acks[1]["replayId"]
    assert acks[2]["replayId"] == acks[0]["replayId"]
    assert acks[3]["replayId"] == acks[1]["replayId"]
    events = await node.history_events(first, ONE)
    assert [event["payload"] for event in events] == [{"n": 1}, {"n": 2}]


# -- eventSchema -----------------------------------------------------------------------------


SCHEMA = {"type": "object", "properties": {"orderId": {"type": "string"}}}


async def test_event_schema_needs_a_scope_that_reads_the_channels_schema(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    defined = await node.admin("PUT", f"/tenants/acme/channels{ONE}", {"schema": SCHEMA})
    assert defined.status_code == 200, defined.text
    url = f"/services/data/v58.0/event/eventSchema/{defined.json()['schema']['schemaId']}"

    for scopes in (["subscribe:/event/One__e"], ["publish:/event/One*"], ["subscribe"]):
        token = await node.client_token("acme", scopes)
        allowed = await node.http.get(url, headers=bearer(token))
        assert allowed.status_code == 200, (scopes, allowed.text)
        assert allowed.json()["schema"] == SCHEMA

    for scopes in (["subscribe:/event/Two__e"], ["publish:/event/Two__e"], ["admin"]):
        token = await node.client_token("acme", scopes)
        refused = await node.http.get(url, headers=bearer(token))
        assert refused.status_code == 403, (scopes, refused.text)
        assert refused.json()[0]["errorCode"] == "INSUFFICIENT_ACCESS"
        # The same as the native lookup of the channel's schema.
        native = await node.http.get("/v1/channels/event/One__e/schema", headers=bearer(token))
        assert native.status_code == 403, (scopes, native.text)
        assert error_code(native) == "insufficient_scope"

    # Another tenant's schema looks absent, whatever the scopes.
    foreign = await node.http.get(url, headers=bearer(await node.client_token("globex", ALL)))
    assert foreign.status_code == 404, foreign.text
    assert foreign.json()[0]["errorCode"] == "NOT_FOUND"
