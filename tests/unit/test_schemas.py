"""Payload schemas: checking a schema, payload violations with JSON paths, schema ids, and the
backward-compatibility check (every payload the old version accepted is still accepted)."""

from __future__ import annotations

import functools
import re
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from app.errors import InvalidBody
from app.schemas import (
    SchemaValidator,
    Violation,
    canonical,
    check_schema,
    compatibility_problems,
    new_schema_id,
)

# -- compatibility tables ------------------------------------------------------------------

_ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "minLength": 1},
        "qty": {"type": "integer", "minimum": 1},
    },
    "required": ["id"],
    "additionalProperties": False,
}

_LINES_OLD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku"],
            },
        }
    },
}


def _lines(sku: Any = None, qty: Any = None) -> dict[str, Any]:
    """`_LINES_OLD` with the schema of `items[*].sku` and/or `items[*].qty` replaced."""
    line = dict(_LINES_OLD["properties"]["items"]["items"])
    properties = dict(line["properties"])
    if sku is not None:
        properties["sku"] = sku
    if qty is not None:
        properties["qty"] = qty
    line["properties"] = properties
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": line}},
    }


#: (old, new, payloads valid under old to re-check under new) for which no problem is reported.
COMPATIBLE: list[Any] = [
    pytest.param(_ORDER, _ORDER, [{"id": "a"}, {"id": "a", "qty": 3}], id="identical"),
    pytest.param(True, True, [1, "x"], id="identical-true"),
    pytest.param(
        _ORDER,
        {**_ORDER, "properties": {**_ORDER["properties"], "note": {"type": "string"}}},
        [{"id": "a", "qty": 1}],
        id="new-optional-property-where-additional-was-false",
    ),
    pytest.param({"type": "integer"}, {"type": "number"}, [0, 7, -3], id="integer-to-number"),
    pytest.param(
        {"type": "string"}, {"type": ["string", "null"]}, ["", "abc"], id="string-to-nullable"
    ),
    pytest.param(
        {"type": ["integer", "string"]},
        {"type": ["string", "number", "boolean"]},
        [1, "x"],
        id="type-list-widened",
    ),
    pytest.param({"type": "integer"}, {}, [1], id="type-removed"),
    pytest.param(_ORDER, {**_ORDER, "required": []}, [{"id": "a"}], id="required-entry-removed"),
    pytest.param(
        {"type": "object", "required": ["a", "b"]},
        {"type": "object", "required": ["b"]},
        [{"a": 1, "b": 2}],
        id="one-of-two-required-removed",
    ),
    pytest.param({"enum": ["a", "b"]}, {"enum": ["a", "b", "c"]}, ["a", "b"], id="enum-widened"),
    pytest.param(
        {"type": "string", "enum": ["a", "b"]}, {"type": "string"}, ["a", "b"], id="enum-gone"
    ),
    pytest.param({"const": 3}, {}, [3], id="const-gone"),
    pytest.param({"const": "a"}, {"enum": ["a", "b"]}, ["a"], id="const-to-enum"),
    pytest.param({"enum": [1, 2]}, {"enum": [2, 1.0]}, [1, 2], id="enum-reordered-1.0"),
    pytest.param({"minimum": 5}, {"minimum": 0}, [5, 10], id="minimum-loosened"),
    pytest.param({"minimum": 5}, {}, [5], id="minimum-removed"),
    pytest.param({"maximum": 5}, {"maximum": 10}, [5, -1], id="maximum-loosened"),
    pytest.param(
        {"exclusiveMinimum": 5}, {"exclusiveMinimum": 4}, [6], id="exclusive-minimum-loosened"
    ),
    pytest.param(
        {"exclusiveMaximum": 5}, {"exclusiveMaximum": 9}, [4], id="exclusive-maximum-loosened"
    ),
    pytest.param({"minLength": 3}, {"minLength": 1}, ["abc"], id="min-length-loosened"),
    pytest.param({"maxLength": 3}, {"maxLength": 8}, ["abc", ""], id="max-length-loosened"),
    pytest.param({"minItems": 2}, {"minItems": 0}, [[1, 2]], id="min-items-loosened"),
    pytest.param({"maxItems": 2}, {"maxItems": 5}, [[1, 2], []], id="max-items-loosened"),
    pytest.param(
        {"type": "string", "pattern": "^[a-z]+$"}, {"type": "string"}, ["abc"], id="pattern-gone"
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}},
        {"type": "object", "properties": {"b": {"type": "integer"}}},
        [{"a": "x", "b": 1}, {"b": 2}],
        id="property-removed-while-additional-open",
    ),
    pytest.param(
        {
            "type": "object",
            "properties": {"a": {"type": "string"}},
            "additionalProperties": {"type": "string"},
        },
        {"type": "object", "additionalProperties": {"type": "string"}},
        [{"a": "x", "z": "y"}],
        id="property-removed-into-equal-additional",
    ),
    pytest.param(
        {"type": "string"},
        {
            "type": "string",
            "title": "Name",
            "description": "who",
            "format": "email",
            "examples": ["a@b.c"],
            "default": "x",
            "deprecated": True,
            "$comment": "note",
        },
        ["not an email"],
        id="annotations-added",
    ),
    pytest.param(
        {"type": "string", "title": "Old", "description": "old", "format": "date"},
        {"type": "string", "title": "New", "description": "new", "format": "uuid"},
        ["x"],
        id="annotations-changed",
    ),
    pytest.param(False, {"type": "integer", "minimum": 100}, [], id="old-false-to-anything"),
    pytest.param(False, False, [], id="old-false-to-false"),
    pytest.param(
        _lines(sku={"type": "string", "maxLength": 4}),
        _lines(sku={"type": ["string", "integer"]}),
        [{"items": [{"sku": "ab", "qty": 1}]}],
        id="nested-property-widened",
    ),
    pytest.param(
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array", "items": {"type": "number"}},
        [[1, 2], []],
        id="array-items-widened",
    ),
    pytest.param(
        {"type": "array", "items": {"type": "integer"}},
        {"type": "array"},
        [[1]],
        id="array-items-removed",
    ),
    pytest.param(_ORDER, True, [{"id": "a"}], id="new-true"),
    pytest.param(_ORDER, {}, [{"id": "a"}], id="new-empty"),
    pytest.param(
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"oneOf": [{"type": "string"}, {"type": "integer"}], "title": "t"},
        ["x", 1],
        id="unknown-keyword-unchanged",
    ),
]

#: A breaking pair: the fragment expected in one problem, that problem's path prefix, and
#: payloads accepted by old and refused by new (empty where the check is only conservative).
BREAKING: list[Any] = [
    pytest.param(
        _ORDER,
        {**_ORDER, "required": ["id", "qty"]},
        "property 'qty' became required",
        "$",
        [{"id": "a"}],
        id="new-required",
    ),
    pytest.param(
        {"type": "number"},
        {"type": "integer"},
        "type narrowed: number no longer accepted",
        "$",
        [1.5],
        id="number-to-integer",
    ),
    pytest.param(
        {"type": ["string", "null"]},
        {"type": "string"},
        "type narrowed: null no longer accepted",
        "$",
        [None],
        id="nullable-to-string",
    ),
    pytest.param(
        {},
        {"type": "object"},
        "no longer accepted",
        "$",
        [1, "x", None],
        id="type-where-none",
    ),
    pytest.param(
        {"enum": ["a", "b", "c"]},
        {"enum": ["a"]},
        'values no longer allowed: ["b","c"]',
        "$",
        ["b", "c"],
        id="enum-narrowed",
    ),
    pytest.param(
        {"const": "a"},
        {"const": "b"},
        'values no longer allowed: ["a"]',
        "$",
        ["a"],
        id="const-changed",
    ),
    pytest.param(
        {"type": "string"},
        {"type": "string", "enum": ["a", "b"]},
        'values are now limited to ["a","b"]',
        "$",
        ["c"],
        id="new-enum",
    ),
    pytest.param(
        {"type": "integer"},
        {"type": "integer", "const": 1},
        "values are now limited to [1]",
        "$",
        [2],
        id="new-const",
    ),
    pytest.param(
        {"minimum": 0},
        {"minimum": 1},
        "minimum tightened from 0 to 1",
        "$",
        [0],
        id="minimum-tightened",
    ),
    pytest.param(
        {"maximum": 10},
        {"maximum": 9},
        "maximum tightened from 10 to 9",
        "$",
        [10],
        id="maximum-tightened",
    ),
    pytest.param(
        {"exclusiveMinimum": 0},
        {"exclusiveMinimum": 1},
        "exclusiveMinimum tightened from 0 to 1",
        "$",
        [1],
        id="exclusive-minimum-tightened",
    ),
    pytest.param(
        {"exclusiveMaximum": 10},
        {"exclusiveMaximum": 9},
        "exclusiveMaximum tightened from 10 to 9",
        "$",
        [9],
        id="exclusive-maximum-tightened",
    ),
    pytest.param(
        {"minLength": 1},
        {"minLength": 2},
        "minLength tightened from 1 to 2",
        "$",
        ["a"],
        id="min-length-tightened",
    ),
    pytest.param(
        {"maxLength": 10},
        {"maxLength": 5},
        "maxLength tightened from 10 to 5",
        "$",
        ["abcdefg"],
        id="max-length-tightened",
    ),
    pytest.param(
        {"minItems": 0},
        {"minItems": 1},
        "minItems tightened from 0 to 1",
        "$",
        [[]],
        id="min-items-tightened",
    ),
    pytest.param(
        {"maxItems": 5},
        {"maxItems": 3},
        "maxItems tightened from 5 to 3",
        "$",
        [[1, 2, 3, 4]],
        id="max-items-tightened",
    ),
    pytest.param(
        {"type": "integer"},
        {"type": "integer", "maximum": 10},
        "new limit maximum = 10",
        "$",
        [11],
        id="new-maximum",
    ),
    pytest.param(
        {"type": "string"},
        {"type": "string", "minLength": 3},
        "new limit minLength = 3",
        "$",
        ["ab"],
        id="new-min-length",
    ),
    pytest.param(
        {"type": "string"},
        {"type": "string", "pattern": "^[a-z]+$"},
        "pattern changed to '^[a-z]+$'",
        "$",
        ["ABC"],
        id="new-pattern",
    ),
    pytest.param(
        {"type": "string", "pattern": "^[a-z]+$"},
        {"type": "string", "pattern": "^[a-z]{2}$"},
        "pattern changed to '^[a-z]{2}$'",
        "$",
        ["abc"],
        id="pattern-changed",
    ),
    pytest.param(
        _ORDER,
        {**_ORDER, "properties": {"id": _ORDER["properties"]["id"]}},
        "property 'qty' was removed while additionalProperties is false",
        "$",
        [{"id": "a", "qty": 2}],
        id="property-removed-while-additional-false",
    ),
    pytest.param(
        {"type": "object", "properties": {"id": {"type": "string"}}},
        {"type": "object", "properties": {"id": {"type": "string"}}, "additionalProperties": False},
        "additionalProperties is now false",
        "$",
        [{"id": "a", "extra": 1}],
        id="additional-becomes-false",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": True},
        {"type": "object", "additionalProperties": {"type": "string"}},
        "type narrowed",
        "$.*",
        [{"x": 1}],
        id="additional-becomes-typed",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": True},
        {"type": "object", "properties": {"note": {"type": "string"}}},
        "new property 'note' was free-form before",
        "$",
        [{"note": 5}],
        id="new-typed-property-where-open",
    ),
    pytest.param(
        {"type": "object", "additionalProperties": {"type": "string"}},
        {"type": "object", "properties": {"n": {"type": "integer"}}},
        "new property 'n' was free-form before",
        "$",
        [{"n": "five"}],
        id="new-typed-property-where-additional-typed",
    ),
    pytest.param(
        {"type": "object", "properties": {"item": {"type": "object"}}},
        {"type": "object", "properties": {"item": {"type": "object", "required": ["sku"]}}},
        "property 'sku' became required",
        "$.item",
        [{"item": {}}],
        id="nested-required",
    ),
    pytest.param(
        _LINES_OLD,
        _lines(sku={"type": "string", "maxLength": 8}),
        "new limit maxLength = 8",
        "$.items[*].sku",
        [{"items": [{"sku": "123456789"}]}],
        id="array-items-nested-property-narrowed",
    ),
    pytest.param(
        _lines(qty={"type": "number"}),
        _LINES_OLD,
        "type narrowed: number no longer accepted",
        "$.items[*].qty",
        [{"items": [{"sku": "a", "qty": 1.5}]}],
        id="array-items-nested-type-narrowed",
    ),
    pytest.param(
        {"type": "array", "items": {"type": ["integer", "string"]}},
        {"type": "array", "items": {"type": "integer"}},
        "type narrowed: string no longer accepted",
        "$[*]",
        [["x"]],
        id="array-items-narrowed",
    ),
    pytest.param(
        {"type": "array"},
        {"type": "array", "items": {"type": "integer"}},
        "no longer accepted",
        "$[*]",
        [["x"]],
        id="array-items-where-none",
    ),
    pytest.param(
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"oneOf": [{"type": "string"}]},
        "'oneOf' changed, which this check cannot prove compatible",
        "$",
        [1],
        id="one-of-changed",
    ),
    pytest.param(
        {},
        {"allOf": [{"type": "string"}]},
        "'allOf' changed, which this check cannot prove compatible",
        "$",
        [1],
        id="all-of-added",
    ),
    pytest.param(
        {"if": {"type": "string"}, "then": {"minLength": 1}},
        {"if": {"type": "string"}, "then": {"minLength": 2}},
        "'then' changed, which this check cannot prove compatible",
        "$",
        ["a"],
        id="then-changed",
    ),
    pytest.param(
        {"$defs": {"s": {"type": "string"}}, "$ref": "#/$defs/s"},
        {"$defs": {"s": {"type": "string"}, "i": {"type": "integer"}}, "$ref": "#/$defs/i"},
        "'$ref' changed, which this check cannot prove compatible",
        "$",
        ["x"],
        id="ref-changed",
    ),
    pytest.param(
        {"type": "object", "patternProperties": {"^x": {"type": "string"}}},
        {"type": "object", "patternProperties": {"^x": {"type": "integer"}}},
        "'patternProperties' changed, which this check cannot prove compatible",
        "$",
        [{"xa": "s"}],
        id="pattern-properties-changed",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}},
        {"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}]}}},
        "'anyOf' changed, which this check cannot prove compatible",
        "$.a",
        [{"a": "s"}],
        id="nested-any-of-changed",
    ),
    pytest.param(
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
        "'oneOf' changed, which this check cannot prove compatible",
        "$",
        [],  # a widening in fact: the check is conservative about keywords it does not analyse
        id="one-of-widened-still-unproven",
    ),
    pytest.param(
        {"type": "string"},
        False,
        "the new schema accepts nothing",
        "$",
        ["x"],
        id="new-false",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {"type": "string"}}},
        {"type": "object", "properties": {"a": False}},
        "the new schema accepts nothing",
        "$.a",
        [{"a": "x"}],
        id="nested-new-false",
    ),
]

#: A pool of payloads of every JSON type, re-checked against every compatible pair.
_SAMPLES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    -3,
    1.5,
    1.0,
    10,
    "",
    "a",
    "abc",
    "ABC",
    "x" * 20,
    [],
    [1],
    [1, 2],
    [1, 2, 3, 4, 5, 6],
    ["a", None],
    {},
    {"id": "a"},
    {"id": ""},
    {"id": "a", "qty": 0},
    {"id": "a", "qty": 2, "note": "n"},
    {"a": "x", "b": 1},
    {"a": 1},
    {"items": []},
    {"items": [{"sku": "s"}]},
    {"items": [{"sku": "s", "qty": 1.5}]},
    {"items": [{"sku": 5}]},
]


def _accepts(schema: Any, payload: Any) -> bool:
    return bool(Draft202012Validator(schema).is_valid(payload))


@pytest.mark.parametrize(("old", "new", "payloads"), COMPATIBLE)
def test_compatible_pairs_report_no_problem(old: Any, new: Any, payloads: list[Any]) -> None:
    for schema in (old, new):
        check_schema(schema)

    assert compatibility_problems(old, new) == []


@pytest.mark.parametrize(("old", "new", "payloads"), COMPATIBLE)
def test_compatible_pairs_keep_accepting_what_old_accepted(
    old: Any, new: Any, payloads: list[Any]
) -> None:
    for payload in payloads:
        assert _accepts(old, payload), f"sample {payload!r} is not valid under old"
    accepted_before = [payload for payload in [*payloads, *_SAMPLES] if _accepts(old, payload)]

    refused_now = [payload for payload in accepted_before if not _accepts(new, payload)]

    assert refused_now == []


@pytest.mark.parametrize(("old", "new", "fragment", "prefix", "witnesses"), BREAKING)
def test_breaking_pairs_are_explained(
    old: Any, new: Any, fragment: str, prefix: str, witnesses: list[Any]
) -> None:
    for schema in (old, new):
        check_schema(schema)

    problems = compatibility_problems(old, new)

    assert problems, "a breaking change was reported compatible"
    assert any(fragment in problem and problem.startswith(f"{prefix}:") for problem in problems), (
        problems
    )


@pytest.mark.parametrize(("old", "new", "fragment", "prefix", "witnesses"), BREAKING)
def test_breaking_pairs_have_a_payload_old_accepts_and_new_refuses(
    old: Any, new: Any, fragment: str, prefix: str, witnesses: list[Any]
) -> None:
    for payload in witnesses:
        assert _accepts(old, payload), f"{payload!r} is refused by the old schema"
        assert not _accepts(new, payload), f"{payload!r} is still accepted by the new schema"


def test_most_breaking_pairs_have_a_witness() -> None:
    without = [param.id for param in BREAKING if not param.values[4]]

    assert without == ["one-of-widened-still-unproven"]


def test_the_explanation_names_every_lost_enum_value_in_order() -> None:
    problems = compatibility_problems({"enum": ["a", 1, None, "z"]}, {"enum": ["z"]})

    assert problems == ['$: values no longer allowed: ["a",1,null]']


def test_a_tightened_bound_names_both_values() -> None:
    problems = compatibility_problems(
        {"type": "integer", "minimum": 1, "maximum": 100},
        {"type": "integer", "minimum": 2, "maximum": 50},
    )

    assert problems == [
        "$: minimum tightened from 1 to 2",
        "$: maximum tightened from 100 to 50",
    ]


def test_a_new_property_over_an_open_object_explains_why() -> None:
    problems = compatibility_problems(
        {"type": "object"}, {"type": "object", "properties": {"n": {"type": "integer"}}}
    )

    assert len(problems) == 1
    assert problems[0].startswith("$: new property 'n' was free-form before")
    assert "additionalProperties" in problems[0]
    assert "$.n: type narrowed" in problems[0]


def test_a_new_untyped_property_over_an_open_object_is_compatible() -> None:
    assert (
        compatibility_problems(
            {"type": "object"},
            {"type": "object", "properties": {"n": {"description": "anything"}}},
        )
        == []
    )


def test_every_problem_of_a_multi_step_change_is_reported() -> None:
    old = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "number"}}}
    new = {
        "type": "object",
        "properties": {"a": {"type": "string", "maxLength": 3}, "b": {"type": "integer"}},
        "required": ["a"],
    }

    problems = compatibility_problems(old, new)

    assert "$: property 'a' became required" in problems
    assert "$.a: new limit maxLength = 3" in problems
    assert "$.b: type narrowed: number no longer accepted" in problems


# -- unsound cases found while writing this suite --------------------------------------------

#: (old, new, payload): old accepts the payload and new refuses it, so the change breaks
#: publishers, yet each of these has been reported compatible.
UNSOUND: list[Any] = [
    pytest.param({"enum": [True]}, {"enum": [1]}, True, id="enum-true-vs-1"),
    pytest.param({"enum": [1]}, {"enum": [True]}, 1, id="enum-1-vs-true"),
    pytest.param({"const": 0}, {"const": False}, 0, id="const-0-vs-false"),
    pytest.param({"enum": [[1]]}, {"enum": [[True]]}, [1], id="enum-nested-1-vs-true"),
    pytest.param(
        {"enum": [{"on": False}]}, {"enum": [{"on": 0}]}, {"on": False}, id="enum-object-false-vs-0"
    ),
    pytest.param(
        {"type": "object", "patternProperties": {"^x": {}}, "additionalProperties": False},
        {
            "type": "object",
            "patternProperties": {"^x": {}},
            "additionalProperties": False,
            "properties": {"xa": {"type": "integer"}},
        },
        {"xa": "s"},
        id="new-property-was-governed-by-pattern-properties",
    ),
    pytest.param(
        {"type": "object", "properties": {"a": {}}, "unevaluatedProperties": False},
        {"type": "object", "unevaluatedProperties": False},
        {"a": 1},
        id="property-removed-under-unevaluated-properties-false",
    ),
    pytest.param(
        {"type": "array", "items": {}, "unevaluatedItems": False},
        {"type": "array", "unevaluatedItems": False},
        [1],
        id="items-removed-under-unevaluated-items-false",
    ),
]


@pytest.mark.parametrize(("old", "new", "payload"), UNSOUND)
def test_no_pair_with_a_counterexample_is_reported_compatible(
    old: Any, new: Any, payload: Any
) -> None:
    for schema in (old, new):
        check_schema(schema)
    assert _accepts(old, payload)
    assert not _accepts(new, payload)

    assert compatibility_problems(old, new) != []


# -- check_schema --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
        {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "integer"},
        {},
        True,
        False,
        {"type": "array", "items": {"enum": [1, "a", None]}, "minItems": 1},
        {"prefixItems": [{"type": "string"}], "items": False},
    ],
)
def test_check_schema_accepts_valid_schemas(schema: Any) -> None:
    check_schema(schema)


@pytest.mark.parametrize("schema", [[{"type": "string"}], 3, 1.5, "object", None])
def test_check_schema_refuses_what_is_no_schema_at_all(schema: Any) -> None:
    with pytest.raises(InvalidBody, match="must be a JSON Schema") as raised:
        check_schema(schema)
    assert "2020-12" in raised.value.message


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "strnig"}, "at type:"),
        ({"minimum": "x"}, "at minimum:"),
        ({"properties": {"a": {"minimum": "x"}}}, "at properties/a/minimum:"),
        ({"type": "array", "items": [{"type": "string"}]}, "at items:"),
        ({"required": "a"}, "at required:"),
    ],
)
def test_check_schema_names_where_a_schema_is_invalid(schema: Any, where: str) -> None:
    with pytest.raises(InvalidBody) as raised:
        check_schema(schema)

    assert "not valid JSON Schema" in raised.value.message
    assert where in raised.value.message


@pytest.mark.parametrize(
    "draft",
    [
        "http://json-schema.org/draft-07/schema#",
        "https://json-schema.org/draft/2019-09/schema",
    ],
)
def test_check_schema_refuses_other_drafts(draft: str) -> None:
    with pytest.raises(InvalidBody, match=r"only draft 2020-12") as raised:
        check_schema({"$schema": draft, "type": "string"})

    assert draft in raised.value.message


# -- violations ----------------------------------------------------------------------------

_ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "a": {"type": "string"},
        "id": {"type": "integer"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}},
                "required": ["sku"],
            },
        },
    },
    "required": ["a", "id"],
    "additionalProperties": False,
}


def _violations(schema: Any, payload: Any) -> list[Violation]:
    text = canonical(schema)
    return _validator(new_schema_id("unit", "/event/Test", 1, text), text).violations(payload)


_validator = functools.cache(SchemaValidator.build)


def test_a_valid_payload_has_no_violations() -> None:
    assert _violations(_ORDER_SCHEMA, {"a": "x", "id": 1, "items": [{"sku": "s"}]}) == []


def test_every_violation_is_reported_with_its_json_path_sorted_by_path() -> None:
    payload = {
        "a": 5,
        "items": [{"sku": "ok"}, {"sku": 7}, {"qty": "two"}],
        "extra": True,
    }

    found = _violations(_ORDER_SCHEMA, payload)

    paths = [violation.path for violation in found]
    assert paths == sorted(paths)
    assert sorted(paths) == ["$", "$", "$.a", "$.items[1].sku", "$.items[2]", "$.items[2].qty"]
    messages: dict[str, list[str]] = {}
    for violation in found:
        messages.setdefault(violation.path, []).append(violation.message)
    assert any("'id' is a required property" in message for message in messages["$"])
    assert any("'extra' was unexpected" in message for message in messages["$"])
    assert messages["$.a"] == ["5 is not of type 'string'"]
    assert messages["$.items[1].sku"] == ["7 is not of type 'string'"]
    assert messages["$.items[2]"] == ["'sku' is a required property"]
    assert messages["$.items[2].qty"] == ["'two' is not of type 'integer'"]


def test_a_boolean_false_schema_refuses_everything_at_the_root() -> None:
    found = _violations(False, {"a": 1})

    assert [violation.path for violation in found] == ["$"]


def test_violations_are_capped_at_100() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}

    found = _violations(schema, ["x"] * 150)

    assert len(found) == 100
    paths = [violation.path for violation in found]
    assert paths == [f"$[{index}]" for index in range(100)]  # in item order, not text order
    assert all(re.fullmatch(r"\$\[\d+\]", path) for path in paths)


def test_fewer_than_100_violations_are_all_reported() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}

    found = _violations(schema, ["x"] * 99 + [1])

    assert len(found) == 99


def test_violations_follow_the_text_given_for_a_new_id() -> None:
    strict = {"type": "string"}
    loose = {"type": ["string", "integer"]}

    assert [violation.path for violation in _violations(strict, 1)] == ["$"]
    assert _violations(loose, 1) == []


# -- new_schema_id and canonical -----------------------------------------------------------

_ID = re.compile(r"[A-Za-z0-9_-]{22}")


def test_schema_ids_are_deterministic() -> None:
    assert new_schema_id("t", "/event/A", 1, "{}") == new_schema_id("t", "/event/A", 1, "{}")


@pytest.mark.parametrize(
    ("tenant", "channel", "version", "text"),
    [
        ("u", "/event/A", 1, "{}"),
        ("t", "/event/B", 1, "{}"),
        ("t", "/event/A", 2, "{}"),
        ("t", "/event/A", 1, '{"type":"string"}'),
        ("t/event", "/A", 1, "{}"),
    ],
)
def test_schema_ids_differ_when_any_input_differs(
    tenant: str, channel: str, version: int, text: str
) -> None:
    assert new_schema_id(tenant, channel, version, text) != new_schema_id("t", "/event/A", 1, "{}")


def test_schema_ids_are_22_url_safe_characters() -> None:
    ids = {new_schema_id(f"tenant-{n}", f"/event/Ch{n % 7}", n, f'{{"n":{n}}}') for n in range(300)}

    assert len(ids) == 300
    assert all(_ID.fullmatch(schema_id) for schema_id in ids)


def test_canonical_is_compact_with_sorted_keys() -> None:
    text = canonical({"b": 1, "a": {"d": [1, 2], "c": None}})

    assert text == '{"a":{"c":null,"d":[1,2]},"b":1}'
    assert orjson.loads(text) == {"b": 1, "a": {"d": [1, 2], "c": None}}
