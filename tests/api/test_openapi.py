"""`GET /openapi.json` describes exactly the app's `/v1` routes, and is self-contained."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import orjson
from starlette.routing import Route

from tests.api._support import Node

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
