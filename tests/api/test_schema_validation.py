"""Publishing against a channel's schema: every violation reported with its JSON path, nothing
of a refused request stored, and the schema id in every stored envelope; natively and over the
Salesforce REST API."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from app.catalog import SchemaVersion
from app.schemas import canonical, new_schema_id
from tests.api._support import Node, bearer, error_code, running_node
from tests.harness.recording_http import recording_http_server

ORDER = "/event/Order__e"
ALL = ["publish", "subscribe"]

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "orderId": {"type": "string"},
        "customer": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku"],
            },
        },
    },
    "required": ["orderId", "customer"],
}
VALID: dict[str, Any] = {"orderId": "o-1", "customer": "c-1", "items": [{"sku": "a", "qty": 1}]}
#: Breaks three rules: orderId is no string, items[1].sku is no string, customer is missing.
INVALID: dict[str, Any] = {"orderId": 5, "items": [{"sku": "a"}, {"sku": 7}]}


async def _tenant_with_schema(node: Node, schema: dict[str, Any] = SCHEMA) -> tuple[str, str]:
    """A token of tenant acme and the schemaId of ORDER's schema."""
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    return token, await _set_schema(node, schema)


async def _set_schema(node: Node, schema: dict[str, Any], *, force: bool = False) -> str:
    response = await node.admin(
        "PUT", f"/tenants/acme/channels{ORDER}", {"schema": schema, "force": force}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["schema"]["schemaId"])


async def test_every_violation_of_one_event_is_listed_with_its_path(node: Node) -> None:
    token, schema_id = await _tenant_with_schema(node)

    refused = await node.publish(token, ORDER, INVALID)
    assert refused.status_code == 400, refused.text
    assert error_code(refused) == "schema_violation"
    body = refused.json()
    violations = body["violations"]
    assert {v["path"] for v in violations} == {"$", "$.orderId", "$.items[1].sku"}
    for violation in violations:
        assert set(violation) == {"path", "message"}, violation  # no `event` outside a batch
        assert violation["message"]
    [missing] = [v for v in violations if v["path"] == "$"]
    assert "customer" in missing["message"]
    assert schema_id in body["message"]

    assert await node.history_events(token, ORDER) == []


async def test_a_batch_with_violations_lists_them_by_event_and_stores_nothing(node: Node) -> None:
    token, _ = await _tenant_with_schema(node)
    batch = [
        {**VALID, "orderId": 1},  # event 0: wrong type
        VALID,
        {"orderId": "o-3", "customer": "c-3", "items": [{"qty": 2}]},  # event 2: no sku
    ]
    refused = await node.http.post("/v1/events" + ORDER, json=batch, headers=bearer(token))
    assert refused.status_code == 400, refused.text
    assert error_code(refused) == "schema_violation"
    violations = refused.json()["violations"]
    assert sorted((v["event"], v["path"]) for v in violations) == [
        (0, "$.orderId"),
        (2, "$.items[0]"),
    ]
    assert all(v["message"] for v in violations)
    assert await node.history_events(token, ORDER) == []

    # The same batch, mended, is stored whole.
    mended = [VALID, VALID, VALID]
    stored = await node.http.post("/v1/events" + ORDER, json=mended, headers=bearer(token))
    assert stored.status_code == 201, stored.text
    assert len(await node.history_events(token, ORDER)) == 3


async def test_a_valid_event_carries_its_schema_id(node: Node) -> None:
    token, schema_id = await _tenant_with_schema(node)
    published = await node.publish(token, ORDER, VALID)
    assert published.status_code == 201, published.text
    [event] = await node.history_events(token, ORDER)
    assert event["schema"] == schema_id
    assert event["payload"] == VALID

    # A channel without a definition carries no schema id.
    assert (await node.publish(token, "/event/Free__e", {"x": 1})).status_code == 201
    [free] = await node.history_events(token, "/event/Free__e")
    assert free["schema"] is None


async def test_events_after_a_forced_change_carry_the_new_schema_id(node: Node) -> None:
    token, old_id = await _tenant_with_schema(node)
    assert (await node.publish(token, ORDER, VALID)).status_code == 201

    stricter = {**SCHEMA, "required": [*SCHEMA["required"], "items"]}
    new_id = await _set_schema(node, stricter, force=True)
    assert new_id != old_id

    # The new schema applies at once: what it refuses is refused.
    without_items = {"orderId": "o-2", "customer": "c-2"}
    refused = await node.publish(token, ORDER, without_items)
    assert refused.status_code == 400, refused.text
    assert [v["path"] for v in refused.json()["violations"]] == ["$"]

    assert (await node.publish(token, ORDER, VALID)).status_code == 201
    events = await node.history_events(token, ORDER)
    assert [event["schema"] for event in events] == [old_id, new_id]


async def test_a_salesforce_sobject_violating_the_schema_is_refused(node: Node) -> None:
    token, schema_id = await _tenant_with_schema(node)
    refused = await node.http.post(
        "/services/data/v58.0/sobjects/Order__e", json=INVALID, headers=bearer(token)
    )
    assert refused.status_code == 400, refused.text
    errors = refused.json()
    assert isinstance(errors, list)
    [error] = errors
    assert error["errorCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "$.orderId" in error["message"]
    assert await node.history_events(token, ORDER) == []

    accepted = await node.http.post(
        "/services/data/v58.0/sobjects/Order__e", json=VALID, headers=bearer(token)
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["success"] is True
    [event] = await node.history_events(token, ORDER)
    assert event["schema"] == schema_id


def _record(fields: dict[str, Any]) -> dict[str, Any]:
    return {"attributes": {"type": "Order__e"}, **fields}


async def test_a_composite_request_stores_only_the_valid_records(node: Node) -> None:
    token, schema_id = await _tenant_with_schema(node)
    first, second = {**VALID, "orderId": "o-1"}, {**VALID, "orderId": "o-2"}
    records = [_record(first), _record(INVALID), _record(second)]

    response = await node.http.post(
        "/services/data/v58.0/composite/sobjects",
        json={"allOrNone": False, "records": records},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    results = response.json()
    assert [result["success"] for result in results] == [True, False, True]
    [failure] = results[1]["errors"]
    assert failure["statusCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert "$.orderId" in failure["message"]

    events = await node.history_events(token, ORDER)
    assert [event["payload"]["orderId"] for event in events] == ["o-1", "o-2"]
    assert [event["uuid"] for event in events] == [results[0]["id"], results[2]["id"]]
    assert all(event["schema"] == schema_id for event in events)


async def test_an_all_or_none_composite_with_a_violation_stores_nothing(node: Node) -> None:
    token, _ = await _tenant_with_schema(node)
    response = await node.http.post(
        "/services/data/v58.0/composite/sobjects",
        json={"allOrNone": True, "records": [_record(VALID), _record(INVALID)]},
        headers=bearer(token),
    )
    assert response.status_code == 200, response.text
    results = response.json()
    assert [result["success"] for result in results] == [False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[1]["errors"][0]["statusCode"] == "FIELD_INTEGRITY_EXCEPTION"
    assert await node.history_events(token, ORDER) == []


# -- what validating may cost -------------------------------------------------------------------


async def test_a_pattern_that_backtracks_in_python_answers_at_once(node: Node) -> None:
    # Python's re takes about 2^50 steps for this payload (it doubles per "a"; 2^30 already
    # take over a minute), and the whole node stalls meanwhile: the per-test timeout fails it.
    token, _ = await _tenant_with_schema(
        node, {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}}}
    )

    refused = await node.publish(token, ORDER, {"code": "a" * 50 + "!"})
    assert refused.status_code == 400, refused.text
    assert [v["path"] for v in refused.json()["violations"]] == ["$.code"]
    assert (await node.publish(token, ORDER, {"code": "a" * 50})).status_code == 201


#: jsonschema alone validates it (`dependentRequired` is not in the compiled path's draft):
#: one step per keyword and per item, so 600 items cost some 1200 steps.
COSTLY: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "integer"}}},
    "dependentRequired": {},
}


async def test_a_publish_costing_more_than_the_budget_is_refused_and_nothing_stored() -> None:
    async with running_node(max_validation_steps=1000) as node:
        token, _ = await _tenant_with_schema(node, COSTLY)
        payload = {"items": list(range(600))}

        refused = await node.publish(token, ORDER, payload)
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "validation_too_costly"
        assert "1000 steps" in refused.json()["message"]

        salesforce = await node.http.post(
            "/services/data/v58.0/sobjects/Order__e", json=payload, headers=bearer(token)
        )
        assert salesforce.status_code == 400, salesforce.text
        assert salesforce.json()[0]["errorCode"] == "LIMIT_EXCEEDED"

        # Half of it fits, but not twice in one request: a batch shares one budget.
        half = {"items": list(range(300))}
        assert (await node.publish(token, ORDER, half)).status_code == 201
        batch = await node.http.post("/v1/events" + ORDER, json=[half, half], headers=bearer(token))
        assert batch.status_code == 400, batch.text
        assert error_code(batch) == "validation_too_costly"
        composite = await node.http.post(
            "/services/data/v58.0/composite/sobjects",
            json={"allOrNone": False, "records": [_record(half), _record(half)]},
            headers=bearer(token),
        )
        assert composite.status_code == 200, composite.text
        assert [result["success"] for result in composite.json()] == [True, False]
        assert composite.json()[1]["errors"][0]["statusCode"] == "LIMIT_EXCEEDED"

        assert len(await node.history_events(token, ORDER)) == 2


def _order(number: int, items: int, note: int) -> dict[str, Any]:
    """A valid ORDER payload with `items` line items and a note of `note` characters."""
    lines = [{"sku": f"sku-{n}", "qty": n} for n in range(items)]
    return {"orderId": f"o-{number}", "customer": "c-1", "items": lines, "note": "x" * note}


#: Requests of 1000 events of 10 KB are more than the default request size: 16 MiB here.
LARGE_REQUESTS = 16 * 1024 * 1024


async def test_a_full_batch_of_ordinary_events_fits_the_default_validation_budget() -> None:
    async with running_node(max_request_size=LARGE_REQUESTS) as node:
        token, _ = await _tenant_with_schema(node)
        batch = [_order(n, items=20, note=9_500) for n in range(1000)]
        assert all(10_000 < len(orjson.dumps(event)) < 11_000 for event in batch)

        stored = await node.http.post("/v1/events" + ORDER, json=batch, headers=bearer(token))
        assert stored.status_code == 201, stored.text[:500]
        assert len(stored.json()) == 1000
        assert (await node.window(token, ORDER)).json()["count"] == 1000


async def test_a_full_composite_of_ordinary_records_fits_the_default_validation_budget() -> None:
    async with running_node(max_request_size=LARGE_REQUESTS) as node:
        token, _ = await _tenant_with_schema(node)
        records = [_record(_order(n, items=100, note=38_000)) for n in range(200)]

        stored = await node.http.post(
            "/services/data/v58.0/composite/sobjects",
            json={"allOrNone": True, "records": records},
            headers=bearer(token),
        )
        assert stored.status_code == 200, stored.text[:500]
        assert all(result["success"] for result in stored.json()), stored.text[:500]
        assert (await node.window(token, ORDER)).json()["count"] == 200


async def test_a_batch_costlier_than_the_default_budget_is_still_refused() -> None:
    async with running_node(max_request_size=LARGE_REQUESTS) as node:
        token, _ = await _tenant_with_schema(node)
        costly = [_order(n, items=2_000, note=0) for n in range(100)]  # 200,000 line items

        refused = await node.http.post("/v1/events" + ORDER, json=costly, headers=bearer(token))
        assert refused.status_code == 400, refused.text[:500]
        assert error_code(refused) == "validation_too_costly"
        assert (await node.publish(token, ORDER, costly[0])).status_code == 201
        assert (await node.window(token, ORDER)).json()["count"] == 1


async def test_a_stored_schema_referring_outside_itself_refuses_publishes_and_fetches_nothing(
    node: Node,
) -> None:
    token, _ = await _tenant_with_schema(node)
    services = node.app.state.services
    with recording_http_server() as server:
        # As if written straight into the catalog by an older version (or by hand).
        text = canonical({"type": "object", "properties": {"orderId": {"$ref": server.url}}})
        stored = SchemaVersion(
            new_schema_id("acme", ORDER, 2, text), "acme", ORDER, 2, text, created_us=1
        )
        definition = await services.catalog.channel("acme", ORDER)
        await services.catalog.save_channel(dataclasses.replace(definition, schema=stored), stored)
        services.directory.forget(channel=("acme", ORDER))

        refused = await node.publish(token, ORDER, VALID)
        assert refused.status_code == 409, refused.text
        assert error_code(refused) == "unusable_schema"
        assert stored.schema_id in refused.json()["message"]
        assert server.url in refused.json()["message"]

        salesforce = await node.http.post(
            "/services/data/v58.0/sobjects/Order__e", json=VALID, headers=bearer(token)
        )
        assert salesforce.status_code == 400, salesforce.text
        assert salesforce.json()[0]["errorCode"] == "CANNOT_INSERT_UPDATE_ACTIVATE_ENTITY"

        assert server.paths == []
    assert await node.history_events(token, ORDER) == []
