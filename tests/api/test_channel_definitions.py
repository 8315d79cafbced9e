"""Channel definitions over the admin API (description, owner, retention, a versioned JSON
Schema whose changes must stay backward compatible unless forced) and the schema lookups
(`GET /v1/channels/{channel}/schema` and Salesforce's `eventSchema/{schemaId}`)."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api._support import Node, bearer, error_code, running_node
from tests.harness.recording_http import recording_http_server

ORDER = "/event/Order__e"
INVOICE = "/event/Invoice__e"
ALL = ["publish", "subscribe"]

#: Version 1: an order id and a free-form total; nothing else allowed.
SCHEMA_V1: dict[str, Any] = {
    "type": "object",
    "properties": {"orderId": {"type": "string"}, "total": {"type": "number"}},
    "required": ["orderId"],
    "additionalProperties": False,
}
#: Compatible with v1: one more optional property (payloads v1 accepted could not carry it).
SCHEMA_V2: dict[str, Any] = {
    **SCHEMA_V1,
    "properties": {**SCHEMA_V1["properties"], "note": {"type": "string"}},
}
#: Breaking against v2: a new required property.
SCHEMA_V3: dict[str, Any] = {
    **SCHEMA_V2,
    "properties": {**SCHEMA_V2["properties"], "customer": {"type": "string"}},
    "required": ["orderId", "customer"],
}


def _channel_path(tenant: str, channel: str) -> str:
    return f"/tenants/{tenant}/channels{channel}"


async def _define(
    node: Node,
    channel: str,
    body: dict[str, Any],
    tenant: str = "acme",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await node.admin("PUT", _channel_path(tenant, channel), body, headers=headers)


async def _defined(node: Node, channel: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await _define(node, channel, body)
    assert response.status_code == 200, response.text
    content: dict[str, Any] = response.json()
    return content


async def _shown(node: Node, channel: str, tenant: str = "acme") -> dict[str, Any]:
    response = await node.admin("GET", _channel_path(tenant, channel))
    assert response.status_code == 200, response.text
    content: dict[str, Any] = response.json()
    return content


# -- defining and versioning -------------------------------------------------------------------


async def test_a_definition_with_a_schema_starts_at_version_1(node: Node) -> None:
    await node.create_tenant("acme")
    defined = await _defined(
        node, ORDER, {"description": "Placed orders", "owner": "team-orders", "schema": SCHEMA_V1}
    )
    assert defined["channel"] == ORDER
    assert defined["description"] == "Placed orders"
    assert defined["owner"] == "team-orders"
    assert defined["newVersion"] is True
    assert defined["forcedProblems"] == []
    schema = defined["schema"]
    assert schema["version"] == 1
    assert schema["channel"] == ORDER
    assert schema["schema"] == SCHEMA_V1
    assert isinstance(schema["schemaId"], str)
    assert schema["schemaId"]

    shown = await _shown(node, ORDER)
    assert shown["description"] == "Placed orders"
    assert shown["owner"] == "team-orders"
    assert shown["schema"]["schemaId"] == schema["schemaId"]
    assert [v["version"] for v in shown["versions"]] == [1]


async def test_schema_changes_are_versioned_and_breaking_ones_need_force(node: Node) -> None:
    await node.create_tenant("acme")
    first = await _defined(node, ORDER, {"schema": SCHEMA_V1, "description": "v1"})
    v1_id = first["schema"]["schemaId"]

    # The same schema again (its keys in another order) is no new version.
    reordered = dict(reversed(list(SCHEMA_V1.items())))
    same = await _defined(node, ORDER, {"schema": reordered})
    assert same["newVersion"] is False
    assert same["schema"]["version"] == 1
    assert same["schema"]["schemaId"] == v1_id

    # A compatible change: one more optional property.
    second = await _defined(node, ORDER, {"schema": SCHEMA_V2})
    assert second["newVersion"] is True
    assert second["forcedProblems"] == []
    assert second["schema"]["version"] == 2
    v2_id = second["schema"]["schemaId"]
    assert v2_id != v1_id

    # A breaking change is refused, naming the property, and changes nothing at all.
    refused = await _define(node, ORDER, {"schema": SCHEMA_V3, "description": "changed"})
    assert refused.status_code == 409, refused.text
    assert error_code(refused) == "incompatible_schema"
    problems = refused.json()["problems"]
    assert isinstance(problems, list)
    assert problems
    assert any("customer" in problem for problem in problems), problems
    unchanged = await _shown(node, ORDER)
    assert unchanged["schema"]["version"] == 2
    assert unchanged["schema"]["schemaId"] == v2_id
    assert unchanged["schema"]["schema"] == SCHEMA_V2
    assert unchanged["description"] == "v1"
    assert [v["version"] for v in unchanged["versions"]] == [1, 2]

    # Forced, it becomes version 3 and the answer lists what was overridden.
    forced = await _defined(node, ORDER, {"schema": SCHEMA_V3, "force": True})
    assert forced["newVersion"] is True
    assert forced["schema"]["version"] == 3
    assert forced["forcedProblems"]
    assert any("customer" in problem for problem in forced["forcedProblems"])
    v3_id = forced["schema"]["schemaId"]

    shown = await _shown(node, ORDER)
    assert shown["schema"]["schemaId"] == v3_id
    assert shown["schema"]["schema"] == SCHEMA_V3
    # Oldest first.
    assert [(v["schemaId"], v["version"]) for v in shown["versions"]] == [
        (v1_id, 1),
        (v2_id, 2),
        (v3_id, 3),
    ]
    created = [v["createdUs"] for v in shown["versions"]]
    assert created == sorted(created)


async def test_a_change_without_a_schema_keeps_the_current_schema(node: Node) -> None:
    await node.create_tenant("acme")
    first = await _defined(node, ORDER, {"schema": SCHEMA_V1})
    described = await _defined(node, ORDER, {"description": "now described"})
    assert described["newVersion"] is False
    assert described["description"] == "now described"
    assert described["schema"]["schemaId"] == first["schema"]["schemaId"]


async def test_a_null_schema_removes_it_and_everything_publishes(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    await _defined(node, ORDER, {"schema": SCHEMA_V1, "owner": "team-orders"})
    refused = await node.publish(token, ORDER, {"anything": True})
    assert refused.status_code == 400, refused.text

    removed = await _defined(node, ORDER, {"schema": None})
    assert removed["schema"] is None
    assert removed["owner"] == "team-orders"  # the rest of the definition stays
    assert (await _shown(node, ORDER))["schema"] is None

    published = await node.publish(token, ORDER, {"anything": True})
    assert published.status_code == 201, published.text
    [event] = await node.history_events(token, ORDER)
    assert event["payload"] == {"anything": True}
    assert event["schema"] is None


async def test_an_invalid_schema_document_is_refused_naming_the_problem(node: Node) -> None:
    await node.create_tenant("acme")
    await _defined(node, ORDER, {"schema": SCHEMA_V1})

    bad_type = await _define(node, ORDER, {"schema": {"type": "nonsense"}})
    assert bad_type.status_code == 400, bad_type.text
    assert error_code(bad_type) == "invalid_body"
    assert "type" in bad_type.json()["message"]
    assert "nonsense" in bad_type.json()["message"]

    nested = await _define(
        node, ORDER, {"schema": {"properties": {"total": {"minimum": "zero"}}}, "force": True}
    )
    assert nested.status_code == 400, nested.text
    assert error_code(nested) == "invalid_body"
    assert "minimum" in nested.json()["message"]

    not_a_schema = await _define(node, ORDER, {"schema": "a string"})
    assert not_a_schema.status_code == 400, not_a_schema.text
    assert error_code(not_a_schema) == "invalid_body"
    assert "schema" in not_a_schema.json()["message"]

    draft_7 = await _define(
        node, ORDER, {"schema": {"$schema": "http://json-schema.org/draft-07/schema#"}}
    )
    assert draft_7.status_code == 400, draft_7.text
    assert "draft-07" in draft_7.json()["message"]

    # Nothing of that was saved.
    shown = await _shown(node, ORDER)
    assert shown["schema"]["version"] == 1
    assert shown["schema"]["schema"] == SCHEMA_V1
    assert [v["version"] for v in shown["versions"]] == [1]


async def test_a_schema_referring_outside_itself_is_refused_and_nothing_is_fetched(
    node: Node,
) -> None:
    await node.create_tenant("acme")
    with recording_http_server() as server:
        for schema, where in (
            ({"properties": {"a": {"$ref": f"{server.url}a.json"}}}, "properties/a/$ref"),
            ({"$ref": "file:///dev/zero"}, "at $ref"),
            ({"items": {"$dynamicRef": f"{server.url}b.json#meta"}}, "items/$dynamicRef"),
            ({"$defs": {"a": {"$id": f"{server.url}c.json"}}}, "$defs/a/$id"),
        ):
            refused = await _define(node, ORDER, {"schema": schema})
            assert refused.status_code == 400, refused.text
            assert error_code(refused) == "invalid_body"
            assert where in refused.json()["message"], refused.text

        assert server.paths == []
    missing = await node.admin("GET", _channel_path("acme", ORDER))
    assert missing.status_code == 404, missing.text


async def test_schemas_whose_validation_would_not_end_or_explode_are_refused(node: Node) -> None:
    await node.create_tenant("acme")
    loop = {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/a"}]}}, "$ref": "#/$defs/a"}
    doubling: dict[str, Any] = {"$defs": {"d0": {"type": "string"}}}
    for n in range(1, 40):
        doubling["$defs"][f"d{n}"] = {"anyOf": [{"$ref": f"#/$defs/d{n - 1}"}] * 2}
    doubling["$ref"] = "#/$defs/d39"
    backtracking = {"properties": {"code": {"type": "string", "pattern": "^(?=a)(a+)+$"}}}

    for schema, fragment in (
        (loop, "would never end"),
        (doubling, "expands to more than 5000 subschemas"),
        (backtracking, "lookahead"),
    ):
        refused = await _define(node, ORDER, {"schema": schema})
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "invalid_body"
        assert fragment in refused.json()["message"], refused.text

    # A recursive schema going into the payload, and a pattern RE2 runs, are fine.
    tree = {
        "$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}},
        "$ref": "#/$defs/n",
        "properties": {"code": {"type": "string", "pattern": "^(a+)+$"}},
    }
    await _defined(node, ORDER, {"schema": tree})


async def test_the_schema_limits_are_the_nodes_settings() -> None:
    async with running_node(
        max_schema_size=2048, max_schema_depth=6, max_schema_subschemas=20
    ) as node:
        await node.create_tenant("acme")
        deep: Any = {"type": "string"}
        for _ in range(6):
            deep = {"items": deep}
        for schema, fragment in (
            ({"description": "x" * 3000}, "the limit is 2048"),
            (deep, "deeper than 6 levels"),
            ({"$defs": {f"d{n}": {} for n in range(20)}}, "21 subschemas; the limit is 20"),
        ):
            refused = await _define(node, ORDER, {"schema": schema})
            assert refused.status_code == 400, refused.text
            assert fragment in refused.json()["message"], refused.text


async def test_unknown_fields_and_bad_values_are_refused(node: Node) -> None:
    await node.create_tenant("acme")
    unknown = await _define(node, ORDER, {"description": "x", "colour": "blue"})
    assert unknown.status_code == 400, unknown.text
    assert error_code(unknown) == "invalid_body"
    assert "colour" in unknown.json()["message"]

    for body in (
        {"force": "yes"},
        {"description": 7},
        {"owner": "x" * 1001},
        {"retention": {"maxCount": 0}},
        {"retention": {"forever": True}},
    ):
        response = await _define(node, ORDER, body)
        assert response.status_code == 400, (body, response.text)
        assert error_code(response) == "invalid_body", body

    not_an_object = await node.admin("PUT", _channel_path("acme", ORDER), ["schema"])
    assert not_an_object.status_code == 400, not_an_object.text

    # None of that created a definition.
    missing = await node.admin("GET", _channel_path("acme", ORDER))
    assert missing.status_code == 404, missing.text


async def test_bad_channel_names_are_refused_as_the_error_table_says(node: Node) -> None:
    await node.create_tenant("acme")
    # A name breaking the grammar, or a wildcard where a channel is needed: 422.
    for channel in ("/event/Bad!Name", "/event/Order*", "/event/**"):
        response = await _define(node, channel, {"description": "x"})
        assert response.status_code == 422, (channel, response.text)
        assert error_code(response) == "invalid_channel", channel
    # A valid name outside /event/<Name>: 403.
    for channel in ("/topic/Order__e", "/event", "/meta/handshake"):
        response = await _define(node, channel, {"description": "x"})
        assert response.status_code == 403, (channel, response.text)
        assert error_code(response) == "channel_not_publishable", channel
    listed = await node.admin("GET", "/tenants/acme/channels")
    assert listed.json() == {"channels": []}


async def test_definitions_are_listed_shown_and_deleted(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    await _defined(node, ORDER, {"description": "orders", "schema": SCHEMA_V1})
    await _defined(node, INVOICE, {"owner": "billing", "retention": {"maxCount": 10}})

    listed = await node.admin("GET", "/tenants/acme/channels")
    assert listed.status_code == 200, listed.text
    channels = {entry["channel"]: entry for entry in listed.json()["channels"]}
    assert set(channels) == {ORDER, INVOICE}
    assert channels[ORDER]["description"] == "orders"
    assert channels[ORDER]["schema"]["version"] == 1
    assert channels[INVOICE]["owner"] == "billing"
    assert channels[INVOICE]["schema"] is None
    assert channels[INVOICE]["retention"] == {"maxAge": None, "maxCount": 10}
    # Another tenant's list is its own.
    other = await node.admin("GET", "/tenants/globex/channels")
    assert other.json() == {"channels": []}

    shown = await _shown(node, INVOICE)
    assert shown["versions"] == []

    deleted = await node.admin("DELETE", _channel_path("acme", ORDER))
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"channel": ORDER, "deleted": True}
    gone = await node.admin("GET", _channel_path("acme", ORDER))
    assert gone.status_code == 404, gone.text
    assert error_code(gone) == "not_found"
    again = await node.admin("DELETE", _channel_path("acme", ORDER))
    assert again.status_code == 404, again.text
    remaining = await node.admin("GET", "/tenants/acme/channels")
    assert [entry["channel"] for entry in remaining.json()["channels"]] == [INVOICE]

    # Defined again, its schema history starts over.
    redefined = await _defined(node, ORDER, {"schema": SCHEMA_V2})
    assert redefined["schema"]["version"] == 1


async def test_unknown_tenants_and_channels_are_not_found(node: Node) -> None:
    await node.create_tenant("acme")
    for method, path, body in (
        ("PUT", _channel_path("nobody", ORDER), {"description": "x"}),
        ("GET", _channel_path("nobody", ORDER), None),
        ("GET", "/tenants/nobody/channels", None),
        ("GET", _channel_path("acme", ORDER), None),
        ("DELETE", _channel_path("acme", ORDER), None),
    ):
        response = await node.admin(method, path, body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "not_found"


async def test_a_tenant_admin_defines_its_own_channels_only(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    admin = bearer(await node.client_token("acme", ["admin"]))

    own = await _define(node, ORDER, {"schema": SCHEMA_V1}, headers=admin)
    assert own.status_code == 200, own.text
    assert own.json()["schema"]["version"] == 1
    shown = await node.admin("GET", _channel_path("acme", ORDER), headers=admin)
    assert shown.status_code == 200, shown.text
    listed = await node.admin("GET", "/tenants/acme/channels", headers=admin)
    assert [entry["channel"] for entry in listed.json()["channels"]] == [ORDER]

    # Another tenant's channels look absent, whatever the operation.
    await _defined_for(node, "globex", ORDER)
    for method, path, body in (
        ("PUT", _channel_path("globex", ORDER), {"description": "hijacked"}),
        ("PUT", _channel_path("globex", INVOICE), {"description": "new"}),
        ("GET", _channel_path("globex", ORDER), None),
        ("GET", "/tenants/globex/channels", None),
        ("DELETE", _channel_path("globex", ORDER), None),
    ):
        response = await node.admin(method, path, body, headers=admin)
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "not_found"
    untouched = await _shown(node, ORDER, tenant="globex")
    assert untouched["description"] == "globex orders"
    assert (await node.admin("GET", _channel_path("globex", INVOICE))).status_code == 404

    # Without the admin scope there is no administration at all.
    publisher = bearer(await node.client_token("acme", ALL))
    refused = await _define(node, INVOICE, {"description": "x"}, headers=publisher)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "insufficient_scope"

    deleted = await node.admin("DELETE", _channel_path("acme", ORDER), headers=admin)
    assert deleted.status_code == 200, deleted.text


async def _defined_for(node: Node, tenant: str, channel: str) -> None:
    response = await _define(node, channel, {"description": f"{tenant} orders"}, tenant=tenant)
    assert response.status_code == 200, response.text


# -- schema lookups --------------------------------------------------------------------------


async def test_the_channel_schema_is_served_at_its_current_version(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    await _defined(node, ORDER, {"schema": SCHEMA_V1})
    second = await _defined(node, ORDER, {"schema": SCHEMA_V2})

    response = await node.http.get("/v1/channels/event/Order__e/schema", headers=bearer(token))
    assert response.status_code == 200, response.text
    assert response.json() == {
        "schemaId": second["schema"]["schemaId"],
        "channel": ORDER,
        "version": 2,
        "schema": SCHEMA_V2,
    }

    # A subscriber or a publisher alone may read it too.
    for scopes in (["subscribe"], ["publish:/event/Order*"]):
        narrow = await node.client_token("acme", scopes)
        allowed = await node.http.get("/v1/channels/event/Order__e/schema", headers=bearer(narrow))
        assert allowed.status_code == 200, (scopes, allowed.text)


async def test_a_channel_without_a_schema_has_none_to_serve(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    await _defined(node, INVOICE, {"description": "no schema"})
    for path in ("/v1/channels/event/Invoice__e/schema", "/v1/channels/event/Nothing__e/schema"):
        response = await node.http.get(path, headers=bearer(token))
        assert response.status_code == 404, (path, response.text)
        assert error_code(response) == "not_found"


async def test_salesforce_event_schema_serves_only_the_tenants_own_schemas(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    acme = await node.client_token("acme", ALL)
    globex = await node.client_token("globex", ALL)
    first = await _defined(node, ORDER, {"schema": SCHEMA_V1})
    await _defined(node, ORDER, {"schema": SCHEMA_V2})
    v1_id = first["schema"]["schemaId"]

    url = f"/services/data/v58.0/event/eventSchema/{v1_id}"
    own = await node.http.get(url, headers=bearer(acme))
    assert own.status_code == 200, own.text
    assert own.json()["schemaId"] == v1_id
    assert own.json()["version"] == 1  # an older version stays resolvable
    assert own.json()["schema"] == SCHEMA_V1

    foreign = await node.http.get(url, headers=bearer(globex))
    assert foreign.status_code == 404, foreign.text
    [error] = foreign.json()
    assert error["errorCode"] == "NOT_FOUND"

    for unknown in ("AAAAAAAAAAAAAAAAAAAAAA", "not.an.id"):
        response = await node.http.get(
            f"/services/data/v58.0/event/eventSchema/{unknown}", headers=bearer(acme)
        )
        assert response.status_code == 404, (unknown, response.text)
        [error] = response.json()
        assert error["errorCode"] == "NOT_FOUND"

    anonymous = await node.http.get(url)
    assert anonymous.status_code == 401, anonymous.text
    assert anonymous.json()[0]["errorCode"] == "INVALID_SESSION_ID"


async def test_a_channel_named_event_schema_is_served_its_window(node: Node) -> None:
    """`/v1/channels/event/schema` is the window of the channel `/event/schema`, not a schema
    lookup of a channel `/event`."""
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    for n in range(2):
        assert (await node.publish(token, "/event/schema", {"n": n})).status_code == 201

    window = await node.http.get("/v1/channels/event/schema", headers=bearer(token))
    assert window.status_code == 200, window.text
    assert window.json()["channel"] == "/event/schema"
    assert window.json()["count"] == 2
    assert "retention" in window.json()

    # Its own schema, once it has one, is one level further down.
    defined = await _defined(node, "/event/schema", {"schema": {"type": "object"}})
    lookup = await node.http.get("/v1/channels/event/schema/schema", headers=bearer(token))
    assert lookup.status_code == 200, lookup.text
    assert lookup.json()["schemaId"] == defined["schema"]["schemaId"]
    assert lookup.json()["channel"] == "/event/schema"
