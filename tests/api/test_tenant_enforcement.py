"""What administration changes mean on every surface: revocation, suspension, narrowed scopes
and isolation between tenants, over REST, SSE, the Salesforce REST API and Bayeux.

The node caches tenants and clients for the longest TTL there is (`CACHE_TTL`), and each test
warms that cache before the change, so "at once" below holds only because the admin service
forgets, on its own node, what it has just changed.
"""

from __future__ import annotations

from app.bayeux import codec
from tests.api._support import (
    CACHE_TTL,
    TENANT_ID_REUSE_DELAY,
    Node,
    bearer,
    error_code,
    running_node,
)
from tests.fakes import FakeClock

ORDER = "/event/Order__e"
ORDER_PLACED = "/event/Order_Placed__e"
INVOICE = "/event/Invoice__e"
ALL = ["publish", "subscribe"]


# -- revocation ------------------------------------------------------------------------------


async def test_revoking_a_client_ends_its_issued_tokens_at_once(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ALL, client_id="svc")
    token = await node.token("svc", issued["clientSecret"])
    assert (await node.publish(token, ORDER)).status_code == 201
    assert len(await node.history_events(token, ORDER)) == 1
    assert await node.stream_status(token, ORDER) == (200, "")

    revoked = await node.admin("POST", "/tenants/acme/clients/svc/revoke")
    assert revoked.status_code == 200, revoked.text

    for response in (
        await node.publish(token, ORDER),
        await node.history(token, ORDER),
        await node.window(token, ORDER),
    ):
        assert response.status_code == 401, response.text
        assert error_code(response) == "invalid_token"
    assert await node.stream_status(token, ORDER) == (401, "invalid_token")
    denied = await node.handshake(token)
    assert denied["successful"] is False
    assert denied["ext"]["sfdc"]["failureReason"] == codec.AUTHENTICATION_INVALID

    refused = await node.token_response("svc", issued["clientSecret"])
    assert refused.status_code in (400, 401), refused.text
    assert "access_token" not in refused.json()


async def test_revoking_one_client_leaves_the_tenants_other_clients_alone(node: Node) -> None:
    await node.create_tenant("acme")
    doomed = await node.create_client("acme", ALL, client_id="doomed")
    doomed_token = await node.token("doomed", doomed["clientSecret"])
    survivor = await node.client_token("acme", ALL)
    assert (await node.publish(doomed_token, ORDER)).status_code == 201

    await node.admin("POST", "/tenants/acme/clients/doomed/revoke")
    assert (await node.publish(doomed_token, ORDER)).status_code == 401
    assert (await node.publish(survivor, ORDER)).status_code == 201
    assert len(await node.history_events(survivor, ORDER)) == 2


async def test_a_client_created_again_under_a_deleted_tenants_id_works_at_once() -> None:
    """The operator deletes a tenant and, once its id may be used again, provisions it again
    with the same client id; the new client's token works on this node at once (nothing stale
    of the old one remains)."""
    clock = FakeClock()
    async with running_node(clock=clock) as node:
        await node.create_tenant("acme")
        first = await node.create_client("acme", ALL, client_id="svc")
        old_token = await node.token("svc", first["clientSecret"])
        assert (await node.publish(old_token, ORDER)).status_code == 201
        assert (await node.admin("DELETE", "/tenants/acme")).status_code == 200
        assert (await node.publish(old_token, ORDER)).status_code == 401

        clock.advance(TENANT_ID_REUSE_DELAY)
        await node.create_tenant("acme")
        second = await node.create_client("acme", ALL, client_id="svc")
        new_token = await node.token("svc", second["clientSecret"])
        published = await node.publish(new_token, ORDER)
        assert published.status_code == 201, published.text
        assert len(await node.history_events(new_token, ORDER)) == 1


# -- suspension ------------------------------------------------------------------------------


async def _assert_works(node: Node, token: str, client_id: str, secret: str) -> None:
    assert (await node.publish(token, ORDER)).status_code == 201
    assert (await node.history(token, ORDER)).status_code == 200
    assert (await node.window(token, ORDER)).status_code == 200
    assert await node.stream_status(token, ORDER) == (200, "")
    sobject = await node.sobject(token, "Order__e")
    assert sobject.status_code == 201, sobject.text
    assert sobject.json()["success"] is True
    assert (await node.handshake(token))["successful"] is True
    assert (await node.token_response(client_id, secret)).status_code == 200


async def test_suspension_refuses_the_tenant_everywhere_and_resume_heals(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    acme = await node.create_client("acme", ALL, client_id="acme-svc")
    globex = await node.create_client("globex", ALL, client_id="globex-svc")
    acme_token = await node.token("acme-svc", acme["clientSecret"])
    globex_token = await node.token("globex-svc", globex["clientSecret"])
    await _assert_works(node, acme_token, "acme-svc", acme["clientSecret"])
    await _assert_works(node, globex_token, "globex-svc", globex["clientSecret"])
    session = await node.bayeux_session(acme_token)

    await node.set_suspended("acme", True)

    for response in (
        await node.publish(acme_token, ORDER),
        await node.history(acme_token, ORDER),
        await node.window(acme_token, ORDER),
    ):
        assert response.status_code == 403, response.text
        assert error_code(response) == "tenant_suspended"
    assert await node.stream_status(acme_token, ORDER) == (403, "tenant_suspended")

    sobject = await node.sobject(acme_token, "Order__e")
    assert sobject.status_code == 403, sobject.text
    [error] = sobject.json()
    assert error["errorCode"] == "ORG_LOCKED"

    handshake = await node.handshake(acme_token)
    assert handshake["successful"] is False
    reasons = {
        handshake.get("error"),
        handshake.get("ext", {}).get("sfdc", {}).get("failureReason"),
    }
    assert codec.TENANT_SUSPENDED in reasons, handshake
    # A Bayeux session opened before the suspension is refused too.
    subscribe = await node.subscribe(acme_token, session, ORDER)
    assert subscribe["successful"] is False
    assert subscribe["error"] == codec.TENANT_SUSPENDED

    token = await node.token_response("acme-svc", acme["clientSecret"])
    assert token.status_code == 400, token.text
    assert token.json()["error"] == "invalid_grant"
    assert "access_token" not in token.json()

    # Another tenant carries on meanwhile.
    await _assert_works(node, globex_token, "globex-svc", globex["clientSecret"])

    await node.set_suspended("acme", False)
    await _assert_works(node, acme_token, "acme-svc", acme["clientSecret"])
    assert (await node.subscribe(acme_token, session, ORDER))["successful"] is True
    # Two events before the suspension and two after it; none while it lasted.
    assert len(await node.history_events(acme_token, ORDER)) == 4


# -- narrowed scopes -------------------------------------------------------------------------


async def test_narrowed_publish_and_history_cover_only_their_pattern(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ["publish:/event/Order*", "subscribe:/event/Order*"])

    assert (await node.publish(token, ORDER_PLACED)).status_code == 201
    refused = await node.publish(token, INVOICE)
    assert refused.status_code == 403, refused.text
    assert error_code(refused) == "insufficient_scope"
    sobject = await node.sobject(token, "Invoice__e")
    assert sobject.status_code == 403, sobject.text
    assert sobject.json()[0]["errorCode"] == "INSUFFICIENT_ACCESS"

    assert len(await node.history_events(token, ORDER_PLACED)) == 1
    for response in (await node.history(token, INVOICE), await node.window(token, INVOICE)):
        assert response.status_code == 403, response.text
        assert error_code(response) == "insufficient_scope"

    # Nothing reached the refused channel.
    everything = await node.client_token("acme", ALL)
    assert await node.history_events(everything, INVOICE) == []


async def test_narrowed_subscribe_scope_limits_sse_streams(node: Node) -> None:
    await node.create_tenant("acme")
    narrow = await node.client_token("acme", ["publish:/event/Order*", "subscribe:/event/Order*"])
    broad = await node.client_token("acme", ["subscribe:/event/**"])

    assert await node.stream_status(narrow, ORDER_PLACED) == (200, "")
    assert await node.stream_status(narrow, INVOICE) == (403, "insufficient_scope")
    # A wildcard could deliver channels the pattern does not cover.
    assert await node.stream_status(narrow, "/event/*") == (403, "insufficient_scope")
    assert await node.stream_status(broad, "/event/*") == (200, "")
    assert await node.stream_status(broad, INVOICE) == (200, "")


async def test_narrowed_subscribe_scope_limits_bayeux_subscriptions(node: Node) -> None:
    await node.create_tenant("acme")
    token = await node.client_token("acme", ["subscribe:/event/Order*"])
    client_id = await node.bayeux_session(token)

    refused = await node.subscribe(token, client_id, INVOICE)
    assert refused["successful"] is False, refused
    assert refused["error"] == codec.subscription_not_permitted(INVOICE)
    wildcard = await node.subscribe(token, client_id, "/event/*")
    assert wildcard["successful"] is False, wildcard
    assert wildcard["error"] == codec.subscription_not_permitted("/event/*")

    accepted = await node.subscribe(token, client_id, ORDER_PLACED)
    assert accepted["successful"] is True, accepted
    assert accepted["subscription"] == ORDER_PLACED


# -- isolation -------------------------------------------------------------------------------


async def test_tenants_sharing_a_channel_name_see_only_their_own_events(node: Node) -> None:
    await node.create_tenant("acme")
    await node.create_tenant("globex")
    acme = await node.client_token("acme", ALL)
    globex = await node.client_token("globex", ALL)

    for n in range(2):
        assert (await node.publish(acme, ORDER, {"from": "acme", "n": n})).status_code == 201
    assert await node.history_events(globex, ORDER) == []
    assert (await node.window(globex, ORDER)).json()["count"] == 0

    assert (await node.publish(globex, ORDER, {"from": "globex"})).status_code == 201
    acme_events = await node.history_events(acme, ORDER)
    globex_events = await node.history_events(globex, ORDER)
    assert [e["payload"]["from"] for e in acme_events] == ["acme", "acme"]
    assert [e["payload"]["from"] for e in globex_events] == ["globex"]
    assert (await node.window(acme, ORDER)).json()["count"] == 2


async def test_tokens_issued_before_a_tenants_deletion_stay_dead_when_it_is_recreated() -> None:
    """Deleting a tenant ends its tokens. Re-creating the tenant and a client under the same id
    must not bring them back, with the scopes the deleted client had, once caches refresh."""
    clock = FakeClock()
    async with running_node(clock=clock) as node:
        await node.create_tenant("acme")
        first = await node.create_client("acme", ["publish", "subscribe", "admin"], "svc")
        old_token = await node.token("svc", first["clientSecret"])
        assert (await node.publish(old_token, ORDER)).status_code == 201
        assert (await node.admin("DELETE", "/tenants/acme")).status_code == 200

        clock.advance(TENANT_ID_REUSE_DELAY)
        await node.create_tenant("acme")
        await node.create_client("acme", ["subscribe"], "svc")
        clock.advance(CACHE_TTL + 1)  # every cached entry is re-read; the token is still unexpired

        published = await node.publish(old_token, ORDER)
        assert published.status_code == 401, published.text
        assert error_code(published) == "invalid_token"
        administered = await node.admin("GET", "/tenants/acme/clients", headers=bearer(old_token))
        assert administered.status_code == 401, administered.text
