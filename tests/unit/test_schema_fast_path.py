"""Payload validation takes a compiled fast path for schemas whose keywords mean the same in
draft-07 and 2020-12; its answers must be exactly jsonschema's (draft 2020-12)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from app.schemas import _checker, canonical, new_schema_id, violations

PORTABLE: list[dict[str, Any]] = [
    {"type": "integer"},
    {"type": "number", "minimum": 0, "exclusiveMaximum": 10, "multipleOf": 0.5},
    {"type": ["string", "null"], "minLength": 2, "maxLength": 3, "pattern": "^a"},
    {"enum": ["1", "a", None]},
    {"const": "a"},
    {
        "type": "object",
        "required": ["id"],
        "additionalProperties": False,
        "properties": {"id": {"type": "integer"}, "tags": {"type": "array", "items": {}}},
    },
    {"type": "array", "items": {"type": "integer"}, "minItems": 1, "uniqueItems": True},
    {"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 3}]},
    {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 2}]},
    {"not": {"type": "object"}},
    {"type": "string", "format": "email"},  # 2020-12: an annotation, so any string passes
    {"type": "object", "minProperties": 1, "maxProperties": 2},
]
NOT_PORTABLE: list[dict[str, Any]] = [
    # Python's == says True == 1 and [1] == [True]; JSON Schema does not.
    {"enum": [1, "1", None, [1], {"a": 1}]},
    {"enum": [True]},
    {"const": 1},
    {"const": False},
    {"type": "object", "properties": {"on": {"const": 0}}},
    {"type": "array", "prefixItems": [{"type": "integer"}]},
    {"type": "object", "unevaluatedProperties": False, "properties": {"a": {}}},
    {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"},
    {"properties": {"a": {"default": 1}}},  # a draft-07 validator might fill it in
    {"dependentRequired": {"a": ["b"]}},
]
PAYLOADS: list[Any] = [
    0,
    1,
    1.0,
    2.5,
    3,
    -1,
    10,
    True,
    False,
    None,
    "",
    "a",
    "ab",
    "abc",
    "ba",
    "abcd",
    "x@example.com",
    [],
    [1],
    [1, 1],
    [1, "a"],
    {},
    {"a": 1},
    {"id": 1},
    {"id": 1.0},
    {"id": "1"},
    {"id": 1, "tags": ["x"]},
    {"id": 1, "other": 2},
    {"a": 1, "b": 2, "c": 3},
]


def _id(schema: dict[str, Any]) -> str:
    return new_schema_id("t", "/event/X", 1, canonical(schema))


@pytest.mark.parametrize("schema", PORTABLE, ids=[canonical(s) for s in PORTABLE])
def test_portable_schemas_take_the_fast_path(schema: dict[str, Any]) -> None:
    assert _checker(_id(schema), canonical(schema)).fast is not None


@pytest.mark.parametrize("schema", NOT_PORTABLE, ids=[canonical(s) for s in NOT_PORTABLE])
def test_other_schemas_are_checked_by_jsonschema_alone(schema: dict[str, Any]) -> None:
    assert _checker(_id(schema), canonical(schema)).fast is None


@pytest.mark.parametrize(
    ("schema", "payload"),
    list(itertools.product(PORTABLE + NOT_PORTABLE, PAYLOADS)),
)
def test_every_answer_is_jsonschemas(schema: dict[str, Any], payload: Any) -> None:
    expected = Draft202012Validator(schema).is_valid(payload)

    found = violations(_id(schema), canonical(schema), payload)

    assert (found == []) is expected


def test_the_fast_path_never_fills_in_defaults() -> None:
    schema = {"properties": {"a": {"type": "integer"}}}
    payload: dict[str, Any] = {}

    assert violations(_id(schema), canonical(schema), payload) == []
    assert payload == {}
