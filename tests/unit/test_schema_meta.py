"""The flat metaschema accepts exactly what jsonschema's `check_schema` accepts (formats being
annotations), subschema by subschema: every keyword with values of every JSON kind, at the
root and nested where subschemas go."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from app.schema_keywords import SUBSCHEMA_KEYWORDS
from app.schema_meta import FLAT_METASCHEMA, meta_problem
from app.schema_safety import subschemas

VALUES: list[Any] = [
    0,
    -1,
    2,
    1.5,
    True,
    False,
    None,
    "",
    "string",
    "#a",
    "a#b",
    "_a-1.b",
    "1a",
    [],
    ["string"],
    ["string", "string"],
    ["string", "null"],
    ["x"],
    [1],
    [{}],
    [True, {"type": "string"}],
    {},
    {"a": {}},
    {"a": 1},
    {"a": True},
    {"a": ["b"]},
    {"a": ["b", "b"]},
    {"https://example.com/v": True},
    {"https://example.com/v": 1},
]
KEYWORDS = [*sorted(FLAT_METASCHEMA["properties"]), "x-unknown"]
PLACES: list[Any] = [
    lambda value: value,
    lambda value: {"properties": {"p": value}},
    lambda value: {"allOf": [{}, value]},
    lambda value: {"$defs": {"d": {"items": value}}},
]


def _stock_accepts(schema: Any) -> bool:
    try:
        Draft202012Validator.check_schema(schema, format_checker=None)  # type: ignore[arg-type]
    except SchemaError:
        return False
    return True


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_the_flat_metaschema_agrees_with_jsonschema(keyword: str) -> None:
    disagreements = []
    for value, place in itertools.product(VALUES, PLACES):
        schema = place({keyword: value})
        flat = meta_problem(subschemas(schema)) is None
        if flat is not _stock_accepts(schema):
            disagreements.append(schema)

    assert disagreements == []


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"type": "strnig"}, "at type:"),
        ({"properties": {"a": {"minimum": "x"}}}, "at properties/a/minimum:"),
        ({"allOf": [{}, {"required": [1]}]}, "at allOf/1/required/0:"),
        ({"items": 5}, "at items:"),
    ],
)
def test_a_problem_is_named_by_where_it_is_in_the_schema(schema: Any, where: str) -> None:
    problem = meta_problem(subschemas(schema))

    assert problem is not None
    assert problem.startswith("schema is not valid JSON Schema ")
    assert where in problem


def test_the_flat_metaschema_holds_subschemas_where_the_keyword_table_says() -> None:
    holding = {
        json.dumps(shape, sort_keys=True): kind
        for kind, shape in (
            ("one", {"type": ["object", "boolean"]}),
            ("list", {"type": "array", "minItems": 1, "items": {"type": ["object", "boolean"]}}),
            ("map", {"type": "object", "additionalProperties": {"type": ["object", "boolean"]}}),
        )
    }
    found = {
        keyword: holding[json.dumps(rule, sort_keys=True)]
        for keyword, rule in FLAT_METASCHEMA["properties"].items()
        if json.dumps(rule, sort_keys=True) in holding
    }

    assert found == {keyword: spec.holds for keyword, spec in SUBSCHEMA_KEYWORDS.items()}
