"""The operator's limits bound what tenants set: a channel definition keeps events no longer
than its tenant (whose own retention, else the server's, is the bound), and tenant settings stay
within the server's maxima. A bound lowered later clamps what was saved before, where it is
used."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api._support import Node, bearer, error_code, running_node

ALL = ["publish", "subscribe"]
ORDER = "/event/Order__e"
HOUR = 3600.0


async def _define(
    node: Node, retention: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await node.admin(
        "PUT", f"/tenants/acme/channels{ORDER}", {"retention": retention}, headers
    )


async def _window_retention(node: Node, token: str) -> tuple[float, int]:
    response = await node.window(token, ORDER)
    assert response.status_code == 200, response.text
    retention = response.json()["retention"]
    return float(retention["maxAgeSeconds"]), int(retention["maxCount"])


# -- channel definitions within their tenant -------------------------------------------------


@pytest.mark.parametrize(
    ("retention", "named"),
    [
        (
            {"maxAge": 2 * HOUR},
            "retention.maxAge 7200 s exceeds the retention of tenant acme (3600 s)",
        ),
        ({"maxCount": 51}, "retention.maxCount 51 exceeds the retention of tenant acme (50 events"),
        ({"maxAge": 60, "maxCount": 10_000}, "retention.maxCount 10,000 exceeds"),
    ],
)
async def test_a_tenant_admin_cannot_define_a_channel_keeping_more_than_its_tenant(
    node: Node, retention: dict[str, Any], named: str
) -> None:
    await node.create_tenant("acme", {"retentionMaxAge": HOUR, "retentionMaxCount": 50})
    tenant_admin = bearer(await node.client_token("acme", ["admin", *ALL]))

    for headers in (tenant_admin, None):  # nor can the operator, for the tenant
        refused = await _define(node, retention, headers)
        assert refused.status_code == 400, refused.text
        assert error_code(refused) == "invalid_body"
        assert named in refused.json()["message"]
    assert (await node.admin("GET", f"/tenants/acme/channels{ORDER}")).status_code == 404


async def test_without_its_own_retention_a_tenant_is_bound_by_the_servers() -> None:
    async with running_node(retention_max_age=HOUR, retention_max_count=500) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ALL)

        refused = await _define(node, {"maxAge": HOUR + 1, "maxCount": 500})
        assert refused.status_code == 400, refused.text
        assert "(3600 s)" in refused.json()["message"]
        assert (await _define(node, {"maxCount": 501})).status_code == 400

        accepted = await _define(node, {"maxAge": HOUR, "maxCount": 500})
        assert accepted.status_code == 200, accepted.text
        assert await _window_retention(node, token) == (HOUR, 500)


async def test_a_definition_within_its_tenant_is_saved_and_applied(node: Node) -> None:
    await node.create_tenant("acme", {"retentionMaxAge": HOUR, "retentionMaxCount": 50})
    token = await node.client_token("acme", ["admin", *ALL])

    response = await _define(node, {"maxAge": 60, "maxCount": 5}, bearer(token))

    assert response.status_code == 200, response.text
    assert await _window_retention(node, token) == (60.0, 5)


async def test_a_tenant_retention_lowered_later_clamps_existing_definitions(node: Node) -> None:
    await node.create_tenant("acme", {"retentionMaxAge": HOUR, "retentionMaxCount": 50})
    token = await node.client_token("acme", ALL)
    assert (await _define(node, {"maxAge": HOUR, "maxCount": 40})).status_code == 200

    lowered = await node.admin(
        "PATCH", "/tenants/acme", {"settings": {"retentionMaxAge": 60, "retentionMaxCount": 3}}
    )
    assert lowered.status_code == 200, lowered.text

    assert await _window_retention(node, token) == (60.0, 3)
    for n in range(5):
        assert (await node.publish(token, ORDER, {"n": n})).status_code == 201
    assert [e["payload"]["n"] for e in await node.history_events(token, ORDER)] == [2, 3, 4]
    # The definition keeps what was saved; a change that leaves retention alone still works.
    shown = (await node.admin("GET", f"/tenants/acme/channels{ORDER}")).json()
    assert shown["retention"] == {"maxAge": HOUR, "maxCount": 40}
    described = await node.admin("PUT", f"/tenants/acme/channels{ORDER}", {"description": "orders"})
    assert described.status_code == 200, described.text


# -- tenant settings within the server's maxima ----------------------------------------------


async def test_a_tenants_event_size_cannot_exceed_the_servers() -> None:
    async with running_node(max_event_size=4096) as node:
        created = await node.admin(
            "POST", "/tenants", {"tenantId": "acme", "settings": {"maxEventSize": 4097}}
        )
        assert created.status_code == 400, created.text
        assert "REPLAYBUS_MAX_EVENT_SIZE (4,096 bytes)" in created.json()["message"]
        assert (await node.admin("GET", "/tenants/acme")).status_code == 404

        await node.create_tenant("acme", {"maxEventSize": 4096})
        updated = await node.admin("PATCH", "/tenants/acme", {"settings": {"maxEventSize": 5000}})
        assert updated.status_code == 400, updated.text
        assert error_code(updated) == "invalid_body"
        shown = (await node.admin("GET", "/tenants/acme")).json()
        assert shown["settings"]["maxEventSize"] == 4096


async def test_a_tenants_origins_must_be_among_the_servers() -> None:
    async with running_node(cors_allowed_origins="https://a.example, https://b.example") as node:
        refused = await node.admin(
            "POST",
            "/tenants",
            {"tenantId": "acme", "settings": {"corsOrigins": ["https://evil.example"]}},
        )
        assert refused.status_code == 400, refused.text
        assert "https://evil.example" in refused.json()["message"]

        await node.create_tenant("acme", {"corsOrigins": ["https://a.example"]})
    async with running_node(cors_allowed_origins="*") as node:
        await node.create_tenant("acme", {"corsOrigins": ["https://anything.example"]})
