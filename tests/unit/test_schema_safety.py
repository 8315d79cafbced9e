"""What a channel schema may contain, refused when it is defined with a message naming where:
references outside the schema, `$id` below the root, patterns RE2 cannot run, references that
loop without going into the payload, expansions past the limit, and documents too large or
too deep. Checking a definition itself stays linear in its size."""

from __future__ import annotations

from typing import Any

import jsonschema._keywords
import pytest

from app.errors import InvalidBody
from app.schemas import SchemaLimits, check_schema, compatibility_problems
from app.settings import Settings


def _refusal(schema: Any, limits: SchemaLimits | None = None) -> str:
    with pytest.raises(InvalidBody) as raised:
        check_schema(schema, limits)
    return raised.value.message


def _doubling_chain(links: int) -> dict[str, Any]:
    """`$defs/d{n}` is `allOf: [d{n-1}, d{n-1}]`: twice the subschemas of the link before."""
    definitions: dict[str, Any] = {"d0": {"type": "string"}}
    for n in range(1, links + 1):
        definitions[f"d{n}"] = {
            "allOf": [{"$ref": f"#/$defs/d{n - 1}"}, {"$ref": f"#/$defs/d{n - 1}"}]
        }
    return {"$defs": definitions, "$ref": f"#/$defs/d{links}"}


# -- references stay within the schema ------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "where", "target"),
    [
        ({"$ref": "http://127.0.0.1:9/x.json"}, "at $ref", "http://127.0.0.1:9/x.json"),
        (
            {"properties": {"a": {"$ref": "file:///dev/zero"}}},
            "at properties/a/$ref",
            "file:///dev/zero",
        ),
        ({"items": {"$ref": "other.json#/a"}}, "at items/$ref", "other.json#/a"),
        ({"$defs": {"x": {"$dynamicRef": "https://e.x/s"}}}, "at $defs/x/$dynamicRef", "e.x"),
        ({"allOf": [{"$ref": "//host/s"}]}, "at allOf/0/$ref", "//host/s"),
    ],
)
def test_a_reference_outside_the_schema_is_refused_naming_where(
    schema: Any, where: str, target: str
) -> None:
    message = _refusal(schema)

    assert where in message
    assert target in message
    assert "nothing is ever fetched" in message


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"properties": {"a": {"$id": "https://example.com/a", "type": "string"}}}, "a/$id"),
        ({"$defs": {"x": {"$id": "x.json"}}}, "$defs/x/$id"),
        ({"items": {"$schema": "https://json-schema.org/draft/2020-12/schema"}}, "items/$schema"),
    ],
)
def test_id_and_schema_are_refused_below_the_root(schema: Any, where: str) -> None:
    message = _refusal(schema)

    assert where in message
    assert "only the root" in message


@pytest.mark.parametrize(
    "schema",
    [
        {"$id": "https://example.com/order.json", "$defs": {"n": {}}, "$ref": "#/$defs/n"},
        {"$defs": {"a b": {"type": "string"}}, "$ref": "#/$defs/a%20b"},
        {"$defs": {"a/b": {"type": "string"}}, "$ref": "#/$defs/a~1b"},
        {"allOf": [{"type": "string"}, {"$ref": "#/allOf/0"}]},
        {"$defs": {"s": {"$anchor": "text", "type": "string"}}, "items": {"$ref": "#text"}},
        {"$dynamicAnchor": "node", "items": {"$dynamicRef": "#node"}},
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
    ],
)
def test_references_within_the_schema_are_accepted(schema: Any) -> None:
    check_schema(schema)


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [
        ({"$ref": "#/$defs/missing"}, "not a subschema"),
        ({"properties": {"a": {}}, "$ref": "#/properties"}, "not a subschema"),
        ({"enum": [{"type": "x"}], "$ref": "#/enum/0"}, "not a subschema"),
        ({"allOf": [{}], "$ref": "#/allOf/x"}, "not a subschema"),
        ({"$ref": "#nowhere"}, "names the anchor 'nowhere'"),
        (
            {"$defs": {"a": {"$anchor": "x"}, "b": {"$anchor": "x"}}},
            "anchor 'x' is defined twice",
        ),
    ],
)
def test_a_reference_to_no_subschema_is_refused(schema: Any, fragment: str) -> None:
    assert fragment in _refusal(schema)


# -- references that never end, and that multiply --------------------------------------------


@pytest.mark.parametrize(
    ("schema", "where"),
    [
        ({"$ref": "#"}, "(root)"),
        ({"allOf": [{"$ref": "#"}]}, "allOf/0/$ref"),
        ({"not": {"$ref": "#"}}, "not/$ref"),
        (
            {
                "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
                "$ref": "#/$defs/a",
            },
            "$defs/",
        ),
        ({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/a"}]}}}, "$defs/a/anyOf/0/$ref"),
    ],
)
def test_a_reference_loop_that_never_reaches_the_payload_is_refused(
    schema: Any, where: str
) -> None:
    message = _refusal(schema)

    assert "would never end" in message
    assert where in message


def test_a_reference_that_recurses_into_the_payload_is_accepted() -> None:
    tree = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
            }
        },
        "$ref": "#/$defs/node",
    }

    check_schema(tree)


def test_a_doubling_allof_chain_is_refused_where_it_passes_the_limit() -> None:
    message = _refusal(_doubling_chain(30))

    assert "expands to more than 5000 subschemas" in message
    assert "$defs/d11" in message  # link n applies 2^(n+2) - 3 subschemas: 4093, then 8189


def test_a_short_doubling_chain_within_the_limit_is_accepted() -> None:
    check_schema(_doubling_chain(8))


def test_the_expansion_limit_is_the_one_given() -> None:
    assert "more than 200 subschemas" in _refusal(
        _doubling_chain(8), SchemaLimits(max_subschemas=200)
    )


# -- size, depth and count ----------------------------------------------------------------------


def test_a_schema_larger_than_the_limit_is_refused() -> None:
    schema = {"description": "x" * 2000}

    assert "bytes as compact JSON; the limit is 1024" in _refusal(
        schema, SchemaLimits(max_size=1024)
    )
    check_schema(schema, SchemaLimits(max_size=4096))


def test_a_schema_nesting_deeper_than_the_limit_is_refused_naming_where() -> None:
    schema: Any = {"type": "string"}
    for _ in range(20):
        schema = {"not": schema}

    message = _refusal(schema, SchemaLimits(max_depth=8))

    assert "deeper than 8 levels" in message
    assert "(at not/not/not/not/not/not/not/not)" in message  # the ninth object
    check_schema(schema, SchemaLimits(max_depth=21))


def test_data_inside_a_schema_counts_towards_its_depth() -> None:
    nested: Any = 1
    for _ in range(40):
        nested = [nested]

    assert "deeper than 32 levels" in _refusal({"const": nested})


def test_a_schema_with_more_subschemas_than_the_limit_is_refused() -> None:
    schema: dict[str, Any] = {"$defs": {f"d{n}": {} for n in range(300)}}

    assert "301 subschemas; the limit is 300" in _refusal(schema, SchemaLimits(max_subschemas=300))


def test_the_limits_follow_the_settings_and_default_to_them() -> None:
    settings = Settings(max_schema_size=2048, max_schema_depth=10, max_schema_subschemas=50)

    assert SchemaLimits.of(settings) == SchemaLimits(2048, 10, 50)
    assert SchemaLimits.of(Settings()) == SchemaLimits()


# -- patterns ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "where", "why"),
    [
        ({"pattern": "^(?=a)b"}, "at pattern", "lookahead or lookbehind"),
        ({"items": {"pattern": "(?<!x)y"}}, "at items/pattern", "lookahead or lookbehind"),
        ({"pattern": r"^(a)\1$"}, "at pattern", "backreference"),
        (
            {"patternProperties": {r"(?<n>x)\k<n>": {}}},
            r"at patternProperties/(?<n>x)\k<n>",
            "backreference",
        ),
        ({"pattern": r"^\p{L}{1,100}$"}, "at pattern", "maxLength"),
        ({"pattern": "[a-"}, "at pattern", "RE2 cannot compile it"),
    ],
)
def test_a_pattern_re2_cannot_run_is_refused_saying_why(schema: Any, where: str, why: str) -> None:
    message = _refusal(schema)

    assert where in message
    assert why in message


@pytest.mark.parametrize(
    "pattern",
    [
        "^(a+)+$",  # backtracks in Python's re; linear on RE2
        r"^\u0041\u00e9$",
        r"^\p{Lu}[\p{Ll}\d_-]*$",
        r"^[\u0000-\u007F]*$",
        r"^\/api\/v[0-9]+$",
        "(?<year>[0-9]{4})-(?<month>[0-9]{2})",
    ],
)
def test_patterns_re2_can_run_are_accepted(pattern: str) -> None:
    check_schema({"type": "string", "pattern": pattern})


# -- checking a definition is linear --------------------------------------------------------


def test_the_metaschema_check_never_uses_jsonschemas_quadratic_uniqueness(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def quadratic(container: Any) -> bool:
        raise AssertionError("jsonschema's uniq compares every pair when items do not sort")

    monkeypatch.setattr(jsonschema._keywords, "uniq", quadratic)

    assert "at type" in _refusal({"type": [{"n": n} for n in range(3000)]})
    assert "at required/0" in _refusal({"required": [{"n": n} for n in range(3000)]})
    check_schema({"required": [f"p{n}" for n in range(3000)]})


def test_comparing_schemas_too_large_to_compare_reports_it_instead_of_going_on() -> None:
    old = {"type": "object", "additionalProperties": {"enum": list(range(2000))}}
    new = {
        "type": "object",
        "properties": {f"p{n}": {"enum": [n]} for n in range(2000)},
    }

    problems = compatibility_problems(old, new)

    assert problems == [
        "$: the schemas are too large to compare completely, so this check cannot prove the "
        "change compatible"
    ]
