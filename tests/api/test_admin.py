"""`/v1/admin`: tenants (operator only) and clients (operator, or the tenant's `admin` scope)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.api._support import TENANT_ID_REUSE_DELAY, Node, bearer, error_code, running_node
from tests.fakes import FakeClock

ORDER = "/event/Order__e"


# -- tenants, as the operator ----------------------------------------------------------------


async def test_operator_creates_a_tenant_and_a_duplicate_is_a_conflict(node: Node) -> None:
    created = await node.admin(
        "POST", "/tenants", {"tenantId": "acme", "settings": {"retentionMaxCount": 10}}
    )
    assert created.status_code == 201, created.text
    assert created.json() == {
        "tenantId": "acme",
        "suspended": False,
        "settings": {"retentionMaxCount": 10},
    }

    again = await node.admin("POST", "/tenants", {"tenantId": "acme"})
    assert again.status_code == 409, again.text
    assert error_code(again) == "conflict"
    assert "acme" in again.json()["message"]


async def test_a_tenant_without_settings_shows_an_empty_settings_object(node: Node) -> None:
    created = await node.admin("POST", "/tenants", {"tenantId": "plain"})
    assert created.status_code == 201, created.text
    assert created.json() == {"tenantId": "plain", "suspended": False, "settings": {}}


async def test_tenant_ids_outside_the_safe_alphabet_are_refused(node: Node) -> None:
    for bad in ("", "a b", "a/b", "x" * 65, 42, None):
        response = await node.admin("POST", "/tenants", {"tenantId": bad})
        assert response.status_code == 400, (bad, response.text)
        assert error_code(response) == "invalid_body"
        assert "tenantId" in response.json()["message"]
    listed = await node.admin("GET", "/tenants")
    assert [t["tenantId"] for t in listed.json()["tenants"]] == ["default"]


async def test_bad_tenant_settings_are_refused_naming_the_field(node: Node) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"retentionMaxCount": 0}, "retentionMaxCount"),
        ({"retentionMaxCount": "ten"}, "retentionMaxCount"),
        ({"publishRate": -1}, "publishRate"),
        ({"corsOrigins": ["not an origin"]}, "corsOrigins"),
        ({"requireDefinedChannels": "yes"}, "requireDefinedChannels"),
        ({"noSuchSetting": 1}, "noSuchSetting"),
    ]
    for settings, field in cases:
        response = await node.admin("POST", "/tenants", {"tenantId": "acme", "settings": settings})
        assert response.status_code == 400, (settings, response.text)
        assert error_code(response) == "invalid_body"
        assert field in response.json()["message"], (settings, response.json())
    # Nothing was created by the refused requests.
    assert (await node.admin("GET", "/tenants/acme")).status_code == 404


async def test_operator_lists_and_shows_tenants(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex", {"maxChannels": 5})

    listed = await node.admin("GET", "/tenants")
    assert listed.status_code == 200, listed.text
    tenants = {t["tenantId"]: t for t in listed.json()["tenants"]}
    assert set(tenants) == {"default", "acme", "globex"}
    assert tenants["globex"] == {
        "tenantId": "globex",
        "suspended": False,
        "settings": {"maxChannels": 5},
    }

    shown = await node.admin("GET", "/tenants/globex")
    assert shown.status_code == 200, shown.text
    assert shown.json() == tenants["globex"]


async def test_patch_changes_settings_and_null_restores_the_default(node: Node) -> None:
    await node.create_tenant("acme", {"retentionMaxCount": 10, "maxChannels": 3})

    patched = await node.admin(
        "PATCH", "/tenants/acme", {"settings": {"retentionMaxCount": None, "publishBurst": 7}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["settings"] == {"maxChannels": 3, "publishBurst": 7}
    shown = await node.admin("GET", "/tenants/acme")
    assert shown.json()["settings"] == {"maxChannels": 3, "publishBurst": 7}

    bad = await node.admin("PATCH", "/tenants/acme", {"settings": {"maxChannels": 0}})
    assert bad.status_code == 400, bad.text
    assert "maxChannels" in bad.json()["message"]
    not_settings = await node.admin("PATCH", "/tenants/acme", {"suspended": True})
    assert not_settings.status_code == 400, not_settings.text
    unchanged = await node.admin("GET", "/tenants/acme")
    assert unchanged.json() == {
        "tenantId": "acme",
        "suspended": False,
        "settings": {"maxChannels": 3, "publishBurst": 7},
    }


async def test_suspend_and_resume_show_in_the_tenant(node: Node) -> None:
    await node.create_tenant("acme")
    suspended = await node.admin("POST", "/tenants/acme/suspend")
    assert suspended.status_code == 200, suspended.text
    assert suspended.json() == {"tenantId": "acme", "suspended": True, "settings": {}}
    assert (await node.admin("GET", "/tenants/acme")).json()["suspended"] is True

    resumed = await node.admin("POST", "/tenants/acme/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["suspended"] is False
    assert (await node.admin("GET", "/tenants/acme")).json()["suspended"] is False


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def clocked_node(clock: FakeClock) -> AsyncIterator[Node]:
    """A node whose time moves only when the test moves `clock`."""
    async with running_node(clock=clock) as node:
        yield node


async def test_delete_drops_the_tenant_its_clients_and_its_events(
    clocked_node: Node, clock: FakeClock
) -> None:
    node = clocked_node
    await node.create_tenant("acme")
    old_token = await node.client_token("acme", ["publish", "subscribe"])
    for n in range(3):
        assert (await node.publish(old_token, ORDER, {"n": n})).status_code == 201
    assert (await node.publish(old_token, "/event/Invoice__e")).status_code == 201

    deleted = await node.admin("DELETE", "/tenants/acme")
    assert deleted.status_code == 200, deleted.text
    assert deleted.json() == {"tenantId": "acme", "deleted": True, "droppedChannels": 2}

    assert (await node.admin("GET", "/tenants/acme")).status_code == 404
    gone = await node.history(old_token, ORDER)
    assert gone.status_code == 401, gone.text
    assert error_code(gone) == "invalid_token"

    # The id rests while other nodes may still serve the deleted tenant from their caches.
    too_soon = await node.admin("POST", "/tenants", {"tenantId": "acme"})
    assert too_soon.status_code == 409, too_soon.text
    assert error_code(too_soon) == "tenant_recently_deleted"
    assert int(too_soon.headers["Retry-After"]) == TENANT_ID_REUSE_DELAY
    clock.advance(TENANT_ID_REUSE_DELAY)

    # A tenant created again under the same id starts empty.
    await node.create_tenant("acme")
    fresh = await node.client_token("acme", ["publish", "subscribe"])
    assert await node.history_events(fresh, ORDER) == []
    assert await node.history_events(fresh, "/event/Invoice__e") == []
    assert len((await node.admin("GET", "/tenants/acme/clients")).json()["clients"]) == 1
    assert (await node.window(fresh, ORDER)).json()["count"] == 0


async def test_unknown_tenants_are_not_found(node: Node) -> None:
    cases: list[tuple[str, str, object]] = [
        ("GET", "/tenants/nope", None),
        ("PATCH", "/tenants/nope", {"settings": {}}),
        ("DELETE", "/tenants/nope", None),
        ("POST", "/tenants/nope/suspend", None),
        ("POST", "/tenants/nope/resume", None),
        ("GET", "/tenants/nope/clients", None),
        ("POST", "/tenants/nope/clients", {"scopes": ["publish"]}),
        ("GET", "/tenants/nope/clients/someone", None),
        ("POST", "/tenants/nope/clients/someone/rotate", None),
        ("POST", "/tenants/nope/clients/someone/revoke", None),
        # A known tenant's unknown client.
        ("GET", "/tenants/default/clients/someone", None),
        ("POST", "/tenants/default/clients/someone/rotate", None),
        ("POST", "/tenants/default/clients/someone/revoke", None),
    ]
    for method, path, body in cases:
        response = await node.admin(method, path, body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "not_found"


# -- clients, as the operator ----------------------------------------------------------------


async def test_a_created_client_gets_a_token_and_publishes(node: Node) -> None:
    await node.create_tenant("acme")
    created = await node.admin(
        "POST",
        "/tenants/acme/clients",
        {"scopes": ["publish", "subscribe"], "clientId": "orders-svc"},
    )
    assert created.status_code == 201, created.text
    issued = created.json()
    secret = issued.pop("clientSecret")
    assert isinstance(secret, str)
    assert len(secret) >= 32
    assert issued == {
        "clientId": "orders-svc",
        "tenantId": "acme",
        "scopes": ["publish", "subscribe"],
        "revoked": False,
        "jwtBearer": False,
    }

    token = await node.token("orders-svc", secret)
    published = await node.publish(token, ORDER, {"Amount__c": 5})
    assert published.status_code == 201, published.text
    [event] = await node.history_events(token, ORDER)
    assert event["payload"]["Amount__c"] == 5


async def test_a_generated_client_id_is_returned(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["subscribe"])
    assert isinstance(issued["clientId"], str)
    assert issued["clientId"]
    assert issued["tenantId"] == "acme"
    assert issued["scopes"] == ["subscribe"]


async def test_lists_and_shows_never_include_the_secret(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["publish"], client_id="svc")
    secret = issued["clientSecret"]

    listed = await node.admin("GET", "/tenants/acme/clients")
    assert listed.status_code == 200, listed.text
    assert listed.json() == {
        "clients": [
            {
                "clientId": "svc",
                "tenantId": "acme",
                "scopes": ["publish"],
                "revoked": False,
                "jwtBearer": False,
            }
        ]
    }
    shown = await node.admin("GET", "/tenants/acme/clients/svc")
    assert shown.status_code == 200, shown.text
    assert shown.json() == listed.json()["clients"][0]
    for response in (listed, shown):
        assert secret not in response.text
        assert "clientSecret" not in response.text
        assert "scrypt" not in response.text


async def test_a_duplicate_client_id_is_a_conflict(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_client("acme", ["publish"], client_id="svc")
    again = await node.admin(
        "POST", "/tenants/acme/clients", {"scopes": ["publish"], "clientId": "svc"}
    )
    assert again.status_code == 409, again.text
    assert error_code(again) == "conflict"


async def test_rotation_refuses_the_old_secret_and_accepts_the_new(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["publish", "subscribe"], client_id="svc")
    old_secret = issued["clientSecret"]
    old_token = await node.token("svc", old_secret)

    rotated = await node.admin("POST", "/tenants/acme/clients/svc/rotate")
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["clientSecret"]
    assert new_secret != old_secret
    assert rotated.json()["clientId"] == "svc"
    assert rotated.json()["revoked"] is False

    refused = await node.token_response("svc", old_secret)
    assert refused.status_code in (400, 401), refused.text
    assert "access_token" not in refused.json()
    assert refused.json()["error"] == "invalid_client"

    new_token = await node.token("svc", new_secret)
    assert (await node.publish(new_token, ORDER)).status_code == 201
    # Tokens issued before the rotation stay valid until they expire (revoke to end them).
    assert (await node.publish(old_token, ORDER)).status_code == 201


async def test_rotating_a_revoked_client_is_a_conflict(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["publish"], client_id="svc")
    revoked = await node.admin("POST", "/tenants/acme/clients/svc/revoke")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True
    assert (await node.admin("GET", "/tenants/acme/clients/svc")).json()["revoked"] is True

    rotate = await node.admin("POST", "/tenants/acme/clients/svc/rotate")
    assert rotate.status_code == 409, rotate.text
    assert error_code(rotate) == "conflict"
    # The revoked client's secret still gets nothing.
    refused = await node.token_response("svc", issued["clientSecret"])
    assert refused.status_code in (400, 401), refused.text
    assert "access_token" not in refused.json()


async def test_invalid_scopes_are_refused(node: Node) -> None:
    await node.create_tenant("acme")
    for scopes in (
        ["write"],
        ["publish:event/Order*"],
        ["admin:/event/X"],
        ["publish:/event/***"],
        [],
        "publish",
        None,
        [1],
    ):
        response = await node.admin("POST", "/tenants/acme/clients", {"scopes": scopes})
        assert response.status_code == 400, (scopes, response.text)
        assert error_code(response) == "invalid_body"
    assert (await node.admin("GET", "/tenants/acme/clients")).json() == {"clients": []}


# -- a tenant's own administrator ------------------------------------------------------------


async def _tenant_admin(node: Node) -> tuple[dict[str, str], str]:
    """Tenants acme (with an `admin` client, whose headers are returned) and globex (with a
    client whose id is returned)."""
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    token = await node.client_token("acme", ["admin"])
    other = await node.create_client("globex", ["publish"])
    return bearer(token), str(other["clientId"])


async def test_tenant_admin_manages_its_own_clients(node: Node) -> None:
    headers, _ = await _tenant_admin(node)

    created = await node.admin(
        "POST", "/tenants/acme/clients", {"scopes": ["publish:/event/Order*"]}, headers
    )
    assert created.status_code == 201, created.text
    assert created.json()["tenantId"] == "acme"
    client_id = created.json()["clientId"]
    token = await node.token(client_id, created.json()["clientSecret"])
    assert (await node.publish(token, "/event/Order_Placed__e")).status_code == 201

    listed = await node.admin("GET", "/tenants/acme/clients", headers=headers)
    assert listed.status_code == 200, listed.text
    assert client_id in {c["clientId"] for c in listed.json()["clients"]}
    assert {c["tenantId"] for c in listed.json()["clients"]} == {"acme"}

    shown = await node.admin("GET", f"/tenants/acme/clients/{client_id}", headers=headers)
    assert shown.status_code == 200, shown.text

    revoked = await node.admin("POST", f"/tenants/acme/clients/{client_id}/revoke", headers=headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked"] is True
    assert (await node.publish(token, "/event/Order_Placed__e")).status_code == 401

    shown_self = await node.admin("GET", "/tenants/acme", headers=headers)
    assert shown_self.status_code == 200, shown_self.text
    assert shown_self.json()["tenantId"] == "acme"


async def test_another_tenants_resources_look_absent_to_a_tenant_admin(node: Node) -> None:
    headers, other_client = await _tenant_admin(node)
    for method, path, body in [
        ("GET", "/tenants/globex", None),
        ("GET", "/tenants/globex/clients", None),
        ("POST", "/tenants/globex/clients", {"scopes": ["publish"]}),
        ("GET", f"/tenants/globex/clients/{other_client}", None),
        ("POST", f"/tenants/globex/clients/{other_client}/rotate", None),
        ("POST", f"/tenants/globex/clients/{other_client}/revoke", None),
        # Globex's client through acme's own path is no better.
        ("GET", f"/tenants/acme/clients/{other_client}", None),
        ("POST", f"/tenants/acme/clients/{other_client}/rotate", None),
        ("POST", f"/tenants/acme/clients/{other_client}/revoke", None),
    ]:
        response = await node.admin(method, path, body, headers)
        assert response.status_code == 404, (method, path, response.text)
        assert error_code(response) == "not_found"

    untouched = await node.admin("GET", f"/tenants/globex/clients/{other_client}")
    assert untouched.json()["revoked"] is False
    assert len((await node.admin("GET", "/tenants/globex/clients")).json()["clients"]) == 1


async def test_tenant_admin_cannot_manage_tenants(node: Node) -> None:
    headers, _ = await _tenant_admin(node)
    for method, path, body in [
        ("POST", "/tenants", {"tenantId": "initech"}),
        ("POST", "/tenants/acme/suspend", None),
        ("POST", "/tenants/acme/resume", None),
        ("PATCH", "/tenants/acme", {"settings": {"maxChannels": 1}}),
        ("DELETE", "/tenants/acme", None),
        ("POST", "/tenants/globex/suspend", None),
        ("DELETE", "/tenants/globex", None),
    ]:
        response = await node.admin(method, path, body, headers)
        assert response.status_code == 403, (method, path, response.text)
        assert error_code(response) == "forbidden"

    tenants = (await node.admin("GET", "/tenants")).json()["tenants"]
    assert {t["tenantId"]: t["suspended"] for t in tenants} == {
        "default": False,
        "acme": False,
        "globex": False,
    }
    assert (await node.admin("GET", "/tenants/acme")).json()["settings"] == {}


async def test_tenant_admin_lists_only_its_own_tenant(node: Node) -> None:
    headers, _ = await _tenant_admin(node)
    listed = await node.admin("GET", "/tenants", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [t["tenantId"] for t in listed.json()["tenants"]] == ["acme"]


async def test_a_suspended_tenants_admin_is_refused(node: Node) -> None:
    headers, _ = await _tenant_admin(node)
    assert (await node.admin("GET", "/tenants", headers=headers)).status_code == 200
    await node.set_suspended("acme", True)
    response = await node.admin("GET", "/tenants/acme/clients", headers=headers)
    assert response.status_code == 403, response.text
    assert error_code(response) == "tenant_suspended"


# -- who may call /v1/admin at all -------------------------------------------------------------


async def test_a_token_without_admin_scope_is_refused(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ["publish", "subscribe"])
    for method, path in [("GET", "/tenants"), ("GET", "/tenants/acme/clients")]:
        response = await node.admin(method, path, headers=bearer(token))
        assert response.status_code == 403, (path, response.text)
        assert error_code(response) == "insufficient_scope"


async def test_no_credential_is_unauthenticated(node: Node) -> None:
    for method, path in [
        ("GET", "/tenants"),
        ("POST", "/tenants"),
        ("GET", "/tenants/default/clients"),
    ]:
        response = await node.admin(method, path, {"tenantId": "x"}, headers={})
        assert response.status_code == 401, (path, response.text)
        assert error_code(response) == "missing_token"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_a_wrong_operator_key_is_unauthenticated(node: Node) -> None:
    for key in ("p" * 24, "o" * 23, "o" * 25):
        response = await node.admin("POST", "/tenants", {"tenantId": "x"}, headers=bearer(key))
        assert response.status_code == 401, (key, response.text)
        assert error_code(response) == "invalid_token"
    assert (await node.admin("GET", "/tenants/x")).status_code == 404
