"""The keywords of JSON Schema draft 2020-12 that hold subschemas, in one table, and the two
helpers every walk of a schema goes through: `children` lists the subschemas directly inside
a subschema, `with_children` copies one with each of them replaced."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["SUBSCHEMA_KEYWORDS", "Step", "children", "with_children"]

#: Where a subschema is within the subschema holding it: `("items",)`, `("allOf", 0)`,
#: `("properties", "name")`.
Step = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class _Keyword:
    holds: Literal["one", "list", "map"]  # one subschema, a list of them, names to them
    #: What validation applies its subschemas to: the value itself, its members (items,
    #: property values or names), or nothing (definitions and annotations).
    applies: Literal["value", "members", "never"]


#: Every keyword holding subschemas, as `referencing` walks them for anchors.
SUBSCHEMA_KEYWORDS: dict[str, _Keyword] = {
    "additionalProperties": _Keyword("one", "members"),
    "contains": _Keyword("one", "members"),
    "contentSchema": _Keyword("one", "never"),
    "else": _Keyword("one", "value"),
    "if": _Keyword("one", "value"),
    "items": _Keyword("one", "members"),
    "not": _Keyword("one", "value"),
    "propertyNames": _Keyword("one", "members"),
    "then": _Keyword("one", "value"),
    "unevaluatedItems": _Keyword("one", "members"),
    "unevaluatedProperties": _Keyword("one", "members"),
    "allOf": _Keyword("list", "value"),
    "anyOf": _Keyword("list", "value"),
    "oneOf": _Keyword("list", "value"),
    "prefixItems": _Keyword("list", "members"),
    "$defs": _Keyword("map", "never"),
    "definitions": _Keyword("map", "never"),
    "dependentSchemas": _Keyword("map", "value"),
    "patternProperties": _Keyword("map", "members"),
    "properties": _Keyword("map", "members"),
}


def children(node: Mapping[str, Any]) -> Iterator[tuple[str, Step, Any]]:
    """(keyword, where, subschema) for each subschema directly inside `node`, in its order. A
    list or map keyword whose value is not a list or an object holds none; the value of a
    one-subschema keyword is listed whatever it is."""
    for keyword, value in node.items():
        spec = SUBSCHEMA_KEYWORDS.get(keyword)
        if spec is None:
            continue
        if spec.holds == "one":
            yield keyword, (keyword,), value
        elif spec.holds == "list" and isinstance(value, list):
            for index, part in enumerate(value):
                yield keyword, (keyword, index), part
        elif spec.holds == "map" and isinstance(value, dict):
            for name, part in value.items():
                yield keyword, (keyword, name), part


def with_children(node: Mapping[str, Any], replace: Callable[[Step, Any], Any]) -> dict[str, Any]:
    """A copy of `node` (keys in order) with each subschema `children` lists replaced by
    `replace(where, subschema)`."""
    copy = dict(node)
    for keyword, value in node.items():
        spec = SUBSCHEMA_KEYWORDS.get(keyword)
        if spec is None:
            continue
        if spec.holds == "one":
            copy[keyword] = replace((keyword,), value)
        elif spec.holds == "list" and isinstance(value, list):
            copy[keyword] = [replace((keyword, index), part) for index, part in enumerate(value)]
        elif spec.holds == "map" and isinstance(value, dict):
            copy[keyword] = {name: replace((keyword, name), part) for name, part in value.items()}
    return copy
