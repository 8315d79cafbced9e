"""`GET /openapi.json` describes exactly the app's `/v1` routes, every status each can answer,
and is self-contained."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import orjson
from starlette.routing import Route

from api import openapi
from api.errors import HTTP_ERRORS
from api.openapi import UNDOCUMENTED_ERRORS, route_errors
from tests.api._support import Node, StreamStart, bearer, hold_stream

_CONVERTER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*):[A-Za-z_]+\}")
_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


async def _document(node: Node) -> dict[str, Any]:
    response = await node.http.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    document = orjson.loads(response.content)  # strict JSON
    assert isinstance(document, dict)
    return document


def _v1_routes(node: Node) -> dict[str, set[str]]:
    """Each `/v1` path of the app (with `{x:path}` written `{x}`) and its methods."""
    routes: dict[str, set[str]] = {}
    for route in node.app.routes:
        if not isinstance(route, Route) or not route.path.startswith("/v1"):
            continue
        assert route.methods is not None, route.path
        path = _CONVERTER.sub(r"{\1}", route.path)
        # Starlette answers HEAD for every GET route by itself.
        implicit = {"head"} if "GET" in route.methods else set()
        methods = {method.lower() for method in route.methods} - implicit
        routes.setdefault(path, set()).update(methods)
    return routes


async def test_the_document_is_openapi_3_1(node: Node) -> None:
    document = await _document(node)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["title"]
    assert document["info"]["version"]
    assert isinstance(document["paths"], dict)


async def test_every_v1_route_is_described_with_its_methods(node: Node) -> None:
    document = await _document(node)
    routes = _v1_routes(node)
    assert "/v1/admin/tenants/{tenant}/clients/{client}/rotate" in routes  # the walk finds them
    described = {
        path: {key for key in item if key in _METHODS} for path, item in document["paths"].items()
    }
    missing = {path: methods for path, methods in routes.items() if path not in described}
    assert missing == {}, f"routes the document does not describe: {missing}"
    for path, methods in routes.items():
        assert described[path] == methods, (path, described[path], methods)


async def test_every_described_path_is_a_real_route(node: Node) -> None:
    document = await _document(node)
    routes = _v1_routes(node)
    invented = sorted(set(document["paths"]) - set(routes))
    assert invented == [], f"paths the app does not serve: {invented}"


async def test_path_parameters_match_the_path_template(node: Node) -> None:
    document = await _document(node)
    for path, item in document["paths"].items():
        in_template = set(re.findall(r"\{([^}]+)\}", path))
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == in_template, (path, method, declared)
            assert operation["responses"], (path, method)


def _refs(value: object) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "$ref":
                assert isinstance(item, str), item
                yield item
            else:
                yield from _refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _refs(item)


def _resolve(document: dict[str, Any], ref: str) -> object:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    target: object = document
    for raw in ref[2:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        assert isinstance(target, dict), ref
        assert part in target, f"{ref} does not resolve ({part!r} is missing)"
        target = target[part]
    return target


async def test_every_ref_resolves_inside_the_document(node: Node) -> None:
    document = await _document(node)
    refs = set(_refs(document))
    assert "#/components/schemas/Error" in refs
    for ref in refs:
        assert isinstance(_resolve(document, ref), dict), ref


# -- every status a route answers is one its operation lists -----------------------------------

_SCHEMA = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
_ALL_SCOPES = ["publish", "subscribe", "admin"]


def _documented(document: dict[str, Any], method: str, path: str, status: int, code: str) -> str:
    """ "" when the operation lists `status` with `code`, else what is missing."""
    operations = route_errors(document)
    assert (method, path) in operations, (method, path)
    statuses = operations[(method, path)]
    if status not in statuses:
        return f"{method} {path} answered {status} {code}: the document lists {sorted(statuses)}"
    if statuses[status] and code not in statuses[status]:
        return f"{method} {path} answered {status} {code}: only {sorted(statuses[status])} listed"
    return ""


async def _refusals(node: Node) -> list[tuple[str, str, httpx.Response | StreamStart]]:
    """A tour of refusals, one or more per operation: (method, documented path, response)."""
    await node.create_tenant("acme")
    await node.create_tenant(
        "strict", {"requireDefinedChannels": True, "maxSubscribers": 0, "maxChannels": 1}
    )
    await node.create_tenant("slow", {"publishRate": 0.01, "publishBurst": 1})
    token = await node.client_token("acme", _ALL_SCOPES)
    reader = await node.client_token("acme", ["subscribe"])
    strict = await node.client_token("strict", _ALL_SCOPES)
    slow = await node.client_token("slow", ["publish"])
    auth, http = bearer(token), node.http
    defined = await node.admin("PUT", "/tenants/acme/channels/event/Typed__e", {"schema": _SCHEMA})
    assert defined.status_code == 200, defined.text
    await node.admin("PUT", "/tenants/strict/channels/event/Known__e", {})
    assert (await node.publish(strict, "/event/Known__e")).status_code == 201
    assert (await node.publish(slow, "/event/A__e")).status_code == 201

    events, channels, admin = "/v1/events/{channel}", "/v1/channels/{channel}", "/v1/admin"
    tour: list[tuple[str, str, httpx.Response | StreamStart]] = []

    async def post(path: str, url: str, **kwargs: Any) -> None:
        tour.append(("POST", path, await http.post(url, **kwargs)))

    async def get(path: str, url: str, headers: dict[str, str] = auth) -> None:
        tour.append(("GET", path, await http.get(url, headers=headers)))

    # Publishing.
    await post(events, "/v1/events/event/A__e", json={"n": 1})
    await post(events, "/v1/events/event/A__e", json={"n": 1}, headers=bearer("x.y.z"))
    await post(events, "/v1/events/event/A__e", json={"n": 1}, headers=bearer(reader))
    await post(events, "/v1/events/event/*", json={"n": 1}, headers=auth)
    await post(events, "/v1/events/meta/A", json={"n": 1}, headers=auth)
    await post(events, "/v1/events/event/Unknown__e", json={"n": 1}, headers=bearer(strict))
    await post(events, "/v1/events/event/A__e", content=b"{", headers=auth)
    await post(events, "/v1/events/event/A__e", json=[1], headers=auth)
    await post(events, "/v1/events/event/A__e", json=[], headers=auth)
    await post(events, "/v1/events/event/Typed__e", json={"n": "one"}, headers=auth)
    await post(events, "/v1/events/event/A__e", json=[{}] * 1001, headers=auth)
    await post(events, "/v1/events/event/A__e", json={"s": "x" * 1_100_000}, headers=auth)
    await post(events, "/v1/events/event/A__e", content=b" " * 9_000_000, headers=auth)
    await post(events, "/v1/events/event/A__e", json={}, headers={**auth, "Idempotency-Key": "a b"})
    await post(events, "/v1/events/event/B__e", json={"n": 1}, headers=bearer(slow))
    await post(events, "/v1/events/event/A__e", json=[{}, {}], headers=bearer(slow))
    await node.set_suspended("strict", True)
    await post(events, "/v1/events/event/Known__e", json={}, headers=bearer(strict))
    await node.set_suspended("strict", False)
    # One more channel than the tenant's quota (its definition makes it known).
    await node.admin("PUT", "/tenants/strict/channels/event/Other__e", {})
    await post(events, "/v1/events/event/Other__e", json={}, headers=bearer(strict))

    # A line break in a channel: no route takes it, the router answers 404.
    await post(events, "/v1/events/event/a%0Ab", json={"n": 1}, headers=auth)

    # Reading.
    await get(events, "/v1/events/event/A__e?after=x")
    await get(events, "/v1/events/event/A__e?limit=0")
    await get(events, "/v1/events/event/**")
    await get(events, "/v1/events/event/Unknown__e", bearer(strict))
    await get(events, "/v1/events/event/A__e", {})
    await get(channels, "/v1/channels/event/*")
    await get(channels, "/v1/channels/event/Unknown__e", bearer(strict))
    await get(channels + "/schema", "/v1/channels/event/A__e/schema")
    await get(channels + "/schema", "/v1/channels/event/*/schema")
    await get(channels + "/schema", "/v1/channels/event/Unknown__e/schema", bearer(strict))
    stream = "/v1/stream/{channel}"
    for channel, stream_token, headers in [
        ("/event/A__e", token, {"Last-Event-ID": "x"}),
        ("/event/A__e", token, {"Last-Event-ID": str(2**60)}),
        ("/event/A b", token, {}),
        ("/other/A", token, {}),
        ("/event/Unknown__e", strict, {}),
        ("/event/Known__e", strict, {}),
    ]:
        async with hold_stream(node, stream_token, channel, headers) as start:
            tour.append(("GET", stream, start))

    # Administration (as the operator unless headers say otherwise).
    async def manage(method: str, path: str, url: str, body: object = None, **headers: str) -> None:
        response = await node.admin(method, url, body, headers or None)
        tour.append((method, admin + path, response))

    tenants, one_tenant = "/tenants", "/tenants/{tenant}"
    await manage(
        "POST", tenants, "/tenants", {"tenantId": "other"}, Authorization=f"Bearer {token}"
    )
    await manage("POST", tenants, "/tenants", [])
    await manage("POST", tenants, "/tenants", {"tenantId": "a b"})
    await manage("POST", tenants, "/tenants", "a" * 300_000)
    await manage("POST", tenants, "/tenants", {"tenantId": "acme"})
    await manage("GET", one_tenant, "/tenants/nobody")
    await manage("GET", one_tenant, "/tenants/acme", Authorization=f"Bearer {reader}")
    await manage("PATCH", one_tenant, "/tenants/acme", {"suspended": True})
    await manage("POST", one_tenant + "/clients", "/tenants/acme/clients", {"scopes": ["fly"]})
    await manage("GET", one_tenant + "/clients/{client}", "/tenants/acme/clients/nobody")
    channel = one_tenant + "/channels/{channel}"
    for body in (
        {"schema": {"type": "object", "required": ["m"]}},
        {"schema": {"type": 7}},
        {"x": 1},
        {"description": "x" * 300_000},
    ):
        await manage("PUT", channel, "/tenants/acme/channels/event/Typed__e", body)
    await manage("PUT", channel, "/tenants/acme/channels/event/a b", {})
    await manage("PUT", channel, "/tenants/acme/channels/meta/A", {})
    await manage("GET", channel, "/tenants/acme/channels/event/*")
    await manage("DELETE", channel, "/tenants/acme/channels/event/Z__e")
    return tour


async def test_every_refusal_a_route_answers_is_listed_for_its_operation(node: Node) -> None:
    document = await _document(node)
    tour = await _refusals(node)
    seen: dict[tuple[str, str], set[int]] = {}
    undocumented = []
    for method, path, response in tour:
        status = response.status if isinstance(response, StreamStart) else response.status_code
        assert status >= 400, (method, path, status)
        code = (
            response.error
            if isinstance(response, StreamStart)
            else str(orjson.loads(response.content)["error"])
        )
        seen.setdefault((method, path), set()).add(status)
        problem = _documented(document, method, path, status, code)
        if problem:
            undocumented.append(problem)
    assert undocumented == []
    # The tour reaches every refusal of publishing (429 and 422 included), streaming and
    # defining a channel.
    assert {400, 401, 403, 404, 413, 422, 429} <= seen[("POST", "/v1/events/{channel}")]
    assert {400, 404, 422, 429} <= seen[("GET", "/v1/stream/{channel}")]
    assert {400, 403, 409, 413, 422} <= seen[
        ("PUT", "/v1/admin/tenants/{tenant}/channels/{channel}")
    ]


def test_every_error_class_is_listed_by_an_operation_or_set_aside() -> None:
    listed = {
        code
        for statuses in route_errors(openapi.document()).values()
        for codes in statuses.values()
        for code in codes
    }
    missing = [
        cls.__name__
        for cls, (_, code) in HTTP_ERRORS.items()
        if cls not in UNDOCUMENTED_ERRORS and code not in listed
    ]
    assert missing == [], "error classes no operation lists (add them to a route's raises)"


def _validator(document: dict[str, Any], method: str, path: str, status: int) -> Any:
    """A validator of the documented body of `status` (JSON or the SSE event) for the operation."""
    content = document["paths"][path][method.lower()]["responses"][str(status)]["content"]
    (media,) = content.values()
    return jsonschema.Draft202012Validator(
        {**media["schema"], "components": document["components"]},
        format_checker=None,
    )


async def test_success_bodies_match_their_documented_schemas(node: Node) -> None:
    document = await _document(node)
    await node.create_tenant("acme")
    token = await node.client_token("acme", ["publish", "subscribe"])
    await node.admin("PUT", "/tenants/acme/channels/event/Typed__e", {"schema": _SCHEMA})
    http, auth = node.http, bearer(token)
    events, channels = "/v1/events/{channel}", "/v1/channels/{channel}"
    answers = [
        (
            "POST",
            events,
            201,
            await http.post("/v1/events/event/A__e", json={"n": 1}, headers=auth),
        ),
        ("POST", events, 201, await http.post("/v1/events/event/A__e", json=[{}], headers=auth)),
        ("GET", events, 200, await http.get("/v1/events/event/A__e", headers=auth)),
        ("GET", channels, 200, await http.get("/v1/channels/event/A__e", headers=auth)),
        # A channel of two segments named like the schema route is served its window.
        (
            "GET",
            channels + "/schema",
            200,
            await http.get("/v1/channels/event/schema", headers=auth),
        ),
        (
            "GET",
            channels + "/schema",
            200,
            await http.get("/v1/channels/event/Typed__e/schema", headers=auth),
        ),
    ]
    for method, path, status, response in answers:
        assert response.status_code == status, response.text
        errors = list(_validator(document, method, path, status).iter_errors(response.json()))
        assert errors == [], (method, path, [error.message for error in errors])
