"""A tenant that requires defined channels (`requireDefinedChannels`), on every transport; and
retention overrides, per channel definition, then tenant, then server."""

from __future__ import annotations

from typing import Any

from app.bayeux import codec
from tests.api._support import Node, bearer, error_code, running_node
from tests.fakes import FakeClock

ORDER = "/event/Order__e"
UNDEFINED = "/event/Undefined__e"
ALL = ["publish", "subscribe"]


async def _define(node: Node, channel: str, body: dict[str, Any], tenant: str = "acme") -> None:
    response = await node.admin("PUT", f"/tenants/{tenant}/channels{channel}", body)
    assert response.status_code == 200, response.text


async def _strict_tenant(node: Node) -> str:
    """A token of tenant acme, which requires definitions and has ORDER defined."""
    await node.create_tenant("acme", {"requireDefinedChannels": True})
    await _define(node, ORDER, {"description": "orders"})
    return await node.client_token("acme", ALL)


# -- requireDefinedChannels ------------------------------------------------------------------


async def test_publishing_to_an_undefined_channel_is_refused(node: Node) -> None:
    token = await _strict_tenant(node)

    refused = await node.publish(token, UNDEFINED)
    assert refused.status_code == 404, refused.text
    assert error_code(refused) == "unknown_channel"
    batch = await node.http.post("/v1/events" + UNDEFINED, json=[{"n": 1}], headers=bearer(token))
    assert batch.status_code == 404, batch.text
    assert error_code(batch) == "unknown_channel"
    sobject = await node.sobject(token, "Undefined__e")
    assert sobject.status_code == 404, sobject.text
    assert sobject.json()[0]["errorCode"] == "NOT_FOUND"

    assert (await node.publish(token, ORDER)).status_code == 201
    assert (await node.sobject(token, "Order__e")).status_code == 201
    assert len(await node.history_events(token, ORDER)) == 2


async def test_reading_an_undefined_channel_is_refused(node: Node) -> None:
    token = await _strict_tenant(node)
    for response in (await node.history(token, UNDEFINED), await node.window(token, UNDEFINED)):
        assert response.status_code == 404, response.text
        assert error_code(response) == "unknown_channel"
    assert (await node.history(token, ORDER)).status_code == 200
    assert (await node.window(token, ORDER)).status_code == 200


async def test_sse_on_an_undefined_channel_is_refused_but_wildcards_are_not(node: Node) -> None:
    token = await _strict_tenant(node)
    assert await node.stream_status(token, UNDEFINED) == (404, "unknown_channel")
    assert await node.stream_status(token, ORDER) == (200, "")
    assert await node.stream_status(token, "/event/*") == (200, "")
    assert await node.stream_status(token, "/event/**") == (200, "")


async def test_bayeux_subscriptions_to_undefined_channels_fail(node: Node) -> None:
    token = await _strict_tenant(node)
    client_id = await node.bayeux_session(token)

    refused = await node.subscribe(token, client_id, UNDEFINED)
    assert refused["successful"] is False, refused
    assert refused["error"] == codec.channel_does_not_exist(UNDEFINED)

    accepted = await node.subscribe(token, client_id, ORDER)
    assert accepted["successful"] is True, accepted
    wildcard = await node.subscribe(token, client_id, "/event/*")
    assert wildcard["successful"] is True, wildcard


async def test_defining_or_deleting_a_channel_takes_effect_at_once(node: Node) -> None:
    token = await _strict_tenant(node)
    assert (await node.publish(token, UNDEFINED)).status_code == 404  # now cached as undefined

    await _define(node, UNDEFINED, {"description": "defined after all"})
    assert (await node.publish(token, UNDEFINED)).status_code == 201
    assert await node.stream_status(token, UNDEFINED) == (200, "")

    deleted = await node.admin("DELETE", f"/tenants/acme/channels{UNDEFINED}")
    assert deleted.status_code == 200, deleted.text
    refused = await node.publish(token, UNDEFINED)
    assert refused.status_code == 404, refused.text
    assert error_code(refused) == "unknown_channel"


async def test_only_the_requiring_tenant_is_restricted(node: Node) -> None:
    await _strict_tenant(node)
    await node.create_tenant("globex")
    globex = await node.client_token("globex", ALL)
    assert (await node.publish(globex, UNDEFINED)).status_code == 201
    assert await node.stream_status(globex, UNDEFINED) == (200, "")
    client_id = await node.bayeux_session(globex)
    assert (await node.subscribe(globex, client_id, UNDEFINED))["successful"] is True


async def test_turning_the_requirement_on_applies_at_once(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ALL)
    assert (await node.publish(token, UNDEFINED)).status_code == 201

    updated = await node.admin(
        "PATCH", "/tenants/acme", {"settings": {"requireDefinedChannels": True}}
    )
    assert updated.status_code == 200, updated.text
    refused = await node.publish(token, UNDEFINED)
    assert refused.status_code == 404, refused.text
    assert error_code(refused) == "unknown_channel"


# -- retention overrides ---------------------------------------------------------------------


def _retention(window: dict[str, Any]) -> tuple[float, int]:
    retention = window["retention"]
    return float(retention["maxAgeSeconds"]), int(retention["maxCount"])


async def _retention_node_tokens(node: Node) -> tuple[str, str]:
    """Tokens of acme (its own retention) and globex (none), and channels of acme with and
    without retention in their definitions."""
    await node.create_tenant("acme", {"retentionMaxAge": 3600, "retentionMaxCount": 50})
    await node.create_tenant("globex")
    await _define(node, "/event/Short__e", {"retention": {"maxAge": 60, "maxCount": 2}})
    await _define(node, "/event/Counted__e", {"retention": {"maxCount": 7}})
    await _define(node, "/event/Plain__e", {"description": "no retention of its own"})
    return await node.client_token("acme", ALL), await node.client_token("globex", ALL)


async def _assert_windows(node: Node, expected: dict[tuple[str, str], tuple[float, int]]) -> None:
    for (token, channel), retention in expected.items():
        response = await node.window(token, channel)
        assert response.status_code == 200, response.text
        assert _retention(response.json()) == retention, channel


async def test_the_window_reports_the_tenants_retention_else_the_servers() -> None:
    async with running_node(retention_max_age=7200.0, retention_max_count=500) as node:
        acme, globex = await _retention_node_tokens(node)
        await _assert_windows(
            node,
            {
                (acme, "/event/Plain__e"): (3600.0, 50),
                (acme, "/event/Undefined__e"): (3600.0, 50),
                (globex, "/event/Short__e"): (7200.0, 500),  # acme's definition is acme's
                (globex, "/event/Undefined__e"): (7200.0, 500),
            },
        )


async def test_the_window_reports_the_definitions_retention_where_it_is_set() -> None:
    async with running_node(retention_max_age=7200.0, retention_max_count=500) as node:
        acme, _ = await _retention_node_tokens(node)
        await _assert_windows(
            node,
            {
                (acme, "/event/Short__e"): (60.0, 2),
                # What the definition leaves unset comes from the tenant.
                (acme, "/event/Counted__e"): (3600.0, 7),
            },
        )


async def test_a_definitions_age_retention_expires_events() -> None:
    clock = FakeClock()
    async with running_node(clock=clock) as node:
        acme, _ = await _retention_node_tokens(node)
        for channel in ("/event/Short__e", "/event/Plain__e"):
            assert (await node.publish(acme, channel)).status_code == 201
        clock.advance(61)
        assert await node.history_events(acme, "/event/Short__e") == []
        assert len(await node.history_events(acme, "/event/Plain__e")) == 1


async def test_a_definitions_count_retention_trims_the_channel(node: Node) -> None:
    await node.create_tenant("acme", {"retentionMaxCount": 100})
    token = await node.client_token("acme", ALL)
    await _define(node, ORDER, {"retention": {"maxCount": 2}})
    for n in range(3):
        assert (await node.publish(token, ORDER, {"n": n})).status_code == 201
    events = await node.history_events(token, ORDER)
    assert [event["payload"]["n"] for event in events] == [1, 2]
    window = (await node.window(token, ORDER)).json()
    assert window["count"] == 2

    # Another channel of the tenant keeps the tenant's retention.
    for n in range(3):
        assert (await node.publish(token, "/event/Other__e", {"n": n})).status_code == 201
    assert len(await node.history_events(token, "/event/Other__e")) == 3
