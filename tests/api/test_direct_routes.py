"""The publish routes answered by `DirectRoutes` answer exactly as the router would."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.direct_routes import DirectRoutes
from api.errors import exception_handlers
from api.responses import JSONBytesResponse
from app import errors
from tests.api._support import Node, bearer, error_code, running_node

_PATH = "/v1/events/{channel:path}"
#: Whether each request reached its endpoint through the router (which marks the scope).
_ROUTED: list[bool] = []


def _raising(error: Exception) -> Callable[[Request], object]:
    async def endpoint(request: Request) -> Response:
        _ROUTED.append("router" in request.scope)
        raise error

    return endpoint


async def _created(request: Request) -> Response:
    _ROUTED.append("router" in request.scope)
    return JSONBytesResponse({"channel": "/" + request.path_params["channel"]}, 201)


def _app(endpoint: Callable[[Request], object], *, direct: bool) -> Starlette:
    route = Route(_PATH, endpoint, methods=["POST"])
    middleware = [Middleware(DirectRoutes, routes=[route], handlers=exception_handlers)]
    return Starlette(
        routes=[route],
        middleware=middleware if direct else [],
        exception_handlers=exception_handlers,
    )


async def _answer(app: Starlette, method: str = "POST") -> tuple[int, list[tuple[str, str]], bytes]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.request(method, "/v1/events/event/Order__e", content=b"{}")
    return response.status_code, list(response.headers.multi_items()), response.content


@pytest.mark.parametrize(
    "endpoint",
    [
        _created,
        _raising(errors.TokenMissing("an access token is required")),
        _raising(errors.QuotaExceeded("over the quota", retry_after=2.5)),
        _raising(errors.Overloaded("too busy", retry_after=3.0)),
        _raising(errors.RequestTimeout("the body did not arrive")),
        _raising(HTTPException(418, "short and stout")),
        _raising(RuntimeError("a bug")),
    ],
    ids=["created", "401", "429", "503", "408", "http-exception", "unexpected"],
)
async def test_a_direct_route_answers_byte_for_byte_as_the_router(
    endpoint: Callable[[Request], object],
) -> None:
    _ROUTED.clear()
    routed = await _answer(_app(endpoint, direct=False))
    direct = await _answer(_app(endpoint, direct=True))

    assert _ROUTED == [True, False]
    assert direct == routed


async def test_another_method_on_a_direct_route_goes_to_the_router() -> None:
    assert await _answer(_app(_created, direct=True), "PUT") == await _answer(
        _app(_created, direct=False), "PUT"
    )


async def test_a_cached_token_of_a_revoked_client_is_refused(node: Node) -> None:
    await node.create_tenant("acme")
    issued = await node.create_client("acme", ["publish"])
    token = await node.token(issued["clientId"], issued["clientSecret"])
    first = await node.publish(token, "/event/Order__e")
    revoked = await node.admin("POST", f"/tenants/acme/clients/{issued['clientId']}/revoke")
    assert (first.status_code, revoked.status_code) == (201, 200), revoked.text

    refused = await node.publish(token, "/event/Order__e")

    assert (refused.status_code, error_code(refused)) == (401, "invalid_token")
    assert refused.headers["www-authenticate"] == 'Bearer realm="replaybus"'


async def test_publish_refusals_on_the_direct_route_keep_their_json_errors() -> None:
    async with running_node(max_request_size=64) as node:
        await node.create_tenant("acme")
        token = await node.client_token("acme", ["publish"])
        missing = await node.http.post("/v1/events/event/Order__e", json={"n": 1})
        too_large = await node.http.post(
            "/v1/events/event/Order__e", json={"text": "x" * 100}, headers=bearer(token)
        )
        malformed = await node.http.post(
            "/v1/events/event/Order__e", content=b"{", headers=bearer(token)
        )
        closed = await node.http.post(
            "/v1/events/meta/handshake", json={"n": 1}, headers=bearer(token)
        )

    assert (missing.status_code, error_code(missing)) == (401, "missing_token")
    assert missing.headers["www-authenticate"] == 'Bearer realm="replaybus"'
    assert (too_large.status_code, error_code(too_large)) == (413, "request_too_large")
    assert (malformed.status_code, error_code(malformed)) == (400, "malformed_json")
    assert (closed.status_code, error_code(closed)) == (403, "channel_not_publishable")
