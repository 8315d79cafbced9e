"""Payload validation takes a compiled fast path for schemas whose keywords mean the same in
draft-07 and 2020-12 (references inlined); its answers must be exactly those of the exact
validator (jsonschema, draft 2020-12, with patterns on RE2 and hash-based `uniqueItems`), which
in turn are jsonschema's own wherever Python's `re` and ECMA-262 agree."""

from __future__ import annotations

import functools
import itertools
from typing import Any

import fastjsonschema
import pytest
from jsonschema import Draft202012Validator

from app.schema_patterns import compile_pattern
from app.schema_validators import metered
from app.schemas import SchemaValidator, ValidationBudget, Violation, canonical, new_schema_id

PORTABLE: list[Any] = [
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
    # enum and const of one kind of scalar: compiled code must not take true for 1
    {"enum": [True]},
    {"enum": [1, 2.5, "1", None]},
    {"const": 1},
    {"const": False},
    {"type": "object", "properties": {"on": {"const": 0}}},
    # references, inlined
    {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n"},
    {"$defs": {"n": {"type": "integer"}}, "$ref": "#/$defs/n", "minimum": 3},
    {"$defs": {"s": {"type": "string"}}, "type": "array", "items": {"$ref": "#/$defs/s"}},
    # patterns on RE2
    {"type": "string", "pattern": "^(a+)+$"},
    {"type": "string", "pattern": "^a$"},
    {"type": "string", "pattern": r"^\d+$"},
    {"type": "string", "pattern": r"^\u0061b"},
    {"pattern": "^.$"},
    {"type": "object", "patternProperties": {"^x": {"type": "integer"}, "b$": False}},
    {
        "type": "object",
        "properties": {"a": {}},
        "patternProperties": {"^x": {}},
        "additionalProperties": False,
    },
    {"properties": {"s": {"pattern": "a$"}, "l": {"items": {"pattern": "^x"}}}},
    {"properties": {"s": {"pattern": "a$"}, "l": {"items": {}}}},
    # uniqueItems as JSON Schema compares: 1 and 1.0 equal, true and 1 not, key order irrelevant
    {"type": "array", "uniqueItems": True},
    {"type": "object", "properties": {"list": {"uniqueItems": True}}},
]
NOT_PORTABLE: list[Any] = [
    # Python's == says True == 1 and [1] == [True]; JSON Schema does not.
    {"enum": [1, "1", None, [1], {"a": 1}]},
    {"enum": [True, 0]},
    {"const": [1]},
    {"type": "array", "prefixItems": [{"type": "integer"}]},
    {"type": "object", "unevaluatedProperties": False, "properties": {"a": {}}},
    {"properties": {"a": {"default": 1}}},  # a draft-07 validator might fill it in
    {"dependentRequired": {"a": ["b"]}},
    {"if": {"type": "string"}, "then": {"minLength": 2}},
    # a recursive schema cannot be inlined
    {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    },
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
    "1",
    "x@example.com",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!",
    "\r",
    "\u0663",  # ARABIC-INDIC DIGIT THREE: \d is ASCII in ECMA-262 and RE2
    [],
    [1],
    [1, 1],
    [1, "a"],
    [1, 1.0],
    [1, True],
    [0, False],
    [[1], [True]],
    [{"a": 1, "b": 2}, {"b": 2, "a": 1}],
    [{"a": 1}, {"a": 1.0}],
    {},
    {"a": 1},
    {"id": 1},
    {"id": 1.0},
    {"id": "1"},
    {"id": 1, "tags": ["x"]},
    {"id": 1, "other": 2},
    {"a": 1, "b": 2, "c": 3},
    {"on": 0},
    {"on": False},
    {"x1": 1, "xb": 2},
    {"x1": "one"},
    {"a": 1, "x": None},
    {"list": [1, 1.0]},
    {"list": [1, True]},
    {"next": {"next": {}}},
    {"next": 3},
    {"s": "a" * 3000, "l": [1, "x" * 5000]},
    {"s": "a" * 100_000, "l": []},
    ["a" * 2000, "b" * 2000],
]
#: Where Python's `re` (stock jsonschema) and ECMA-262 disagree, RE2 answers as ECMA-262 does.
ECMA: list[Any] = [
    pytest.param("^a$", "a\n", False, id="dollar-is-the-end-of-the-text"),
    pytest.param(r"^\d$", "\u0663", False, id="digits-are-ascii"),
    pytest.param(r"^\w$", "é", False, id="word-characters-are-ascii"),
    pytest.param(r"^\u0041$", "A", True, id="u-escape"),
    pytest.param(r"^\uD83D\uDE00$", "\U0001f600", True, id="surrogate-pair-escape"),
    pytest.param(r"^\p{L}+$", "été", True, id="unicode-property-class"),
]


def _id(schema: Any) -> str:
    return new_schema_id("t", "/event/X", 1, canonical(schema))


_validator = functools.cache(SchemaValidator.build)


def violations(schema_id: str, text: str, payload: Any) -> list[Violation]:
    return _validator(schema_id, text).violations(payload)


@pytest.mark.parametrize("schema", PORTABLE, ids=[canonical(s) for s in PORTABLE])
def test_portable_schemas_take_the_fast_path(schema: Any) -> None:
    assert _validator(_id(schema), canonical(schema)).fast is not None


@pytest.mark.parametrize("schema", NOT_PORTABLE, ids=[canonical(s) for s in NOT_PORTABLE])
def test_other_schemas_are_checked_by_jsonschema_alone(schema: Any) -> None:
    assert _validator(_id(schema), canonical(schema)).fast is None


def _exact_accepts(schema: Any, payload: Any) -> bool:
    checker = _validator(_id(schema), canonical(schema))
    assert checker.exact is not None
    with metered(ValidationBudget(10**9), checker.patterns):
        return bool(checker.exact.is_valid(payload))


@pytest.mark.parametrize(("schema", "payload"), list(itertools.product(PORTABLE, PAYLOADS)))
def test_the_compiled_answer_is_the_exact_validators(schema: Any, payload: Any) -> None:
    fast = _validator(_id(schema), canonical(schema)).fast
    try:
        fast(payload)
        compiled = True
    except fastjsonschema.JsonSchemaException:
        compiled = False

    assert compiled is _exact_accepts(schema, payload)


#: (pattern, text) where stock jsonschema, on Python's `re`, answers otherwise than ECMA-262
#: (`test_patterns_follow_ecma_262_on_both_paths`) or backtracks for minutes (`^(a+)+$`).
PYTHON_RE_DIFFERS = {(r"^\d+$", "\u0663"), ("^(a+)+$", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!")}


@pytest.mark.parametrize(
    ("schema", "payload"), list(itertools.product(PORTABLE + NOT_PORTABLE, PAYLOADS))
)
def test_every_answer_is_jsonschemas(schema: Any, payload: Any) -> None:
    pattern = schema.get("pattern")
    if isinstance(payload, str) and (pattern, payload) in PYTHON_RE_DIFFERS:
        expected = _exact_accepts(schema, payload)
    else:
        expected = Draft202012Validator(schema).is_valid(payload)

    found = violations(_id(schema), canonical(schema), payload)

    assert (found == []) is expected


@pytest.mark.parametrize(("pattern", "text", "matches"), ECMA)
def test_patterns_follow_ecma_262_on_both_paths(pattern: str, text: str, matches: bool) -> None:
    schema = {"type": "string", "pattern": pattern}
    fast = _validator(_id(schema), canonical(schema)).fast
    assert fast is not None

    assert (violations(_id(schema), canonical(schema), text) == []) is matches
    assert _exact_accepts(schema, text) is matches


def test_the_fast_path_never_fills_in_defaults() -> None:
    schema = {"properties": {"a": {"type": "integer"}}}
    payload: dict[str, Any] = {}

    assert violations(_id(schema), canonical(schema), payload) == []
    assert payload == {}


def test_neither_path_uses_pythons_backtracking_engine() -> None:
    schema = {"type": "string", "pattern": "^(a+)+$"}
    checker = _validator(_id(schema), canonical(schema))

    on_re2 = type(compile_pattern("a"))
    compiled_patterns = checker.fast.__globals__["REGEX_PATTERNS"]
    assert compiled_patterns
    assert all(type(pattern) is on_re2 for pattern in compiled_patterns.values())
    assert all(type(pattern) is on_re2 for pattern in checker.patterns.values())


WITHOUT_REFERENCES = [schema for schema in PORTABLE if "$ref" not in canonical(schema)]


@pytest.mark.parametrize(
    ("schema", "payload"), list(itertools.product(WITHOUT_REFERENCES, PAYLOADS))
)
def test_the_compiled_paths_bound_covers_every_step_jsonschema_takes(
    schema: Any, payload: Any
) -> None:
    checker = _validator(_id(schema), canonical(schema))
    assert checker.exact is not None
    assert checker.plan is not None
    budget = ValidationBudget(10**9)

    with metered(budget, checker.patterns):
        list(checker.exact.iter_errors(payload))

    assert checker.plan.bound(payload) >= budget.spent
