"""Publishing edges: idempotency keys belong to the client that chose them, and Salesforce's
`eventSchema` lookup needs what reading a channel's schema needs elsewhere."""

from __future__ import annotations

from tests.api._support import Node, bearer, error_code

ALL = ["publish", "subscribe"]
ONE, TWO = "/event/One__e", "/event/Two__e"


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
