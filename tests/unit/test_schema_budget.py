"""Validating a payload is bounded work: patterns run on RE2 (linear), `uniqueItems` hashes
(linear), every step is charged to the request's budget (ValidationTooCostly past it, the
compiled path charged its bound up front), and a stored schema is never a reason to fetch
anything."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from typing import Any

import jsonschema._utils
import orjson
import pytest
from referencing.exceptions import Unresolvable

from app.errors import UnusableSchema, ValidationTooCostly
from app.schema_budget import ValidationBudget
from app.schema_validators import exact_validator, metered
from app.schemas import SchemaValidator, Violation, canonical, new_schema_id
from tests.harness.recording_http import recording_http_server


def _id(schema: Any) -> str:
    return new_schema_id("t", "/event/Budget__e", 1, canonical(schema))


def violations(
    schema_id: str, text: str, payload: Any, budget: ValidationBudget | None = None
) -> list[Violation]:
    return SchemaValidator.build(schema_id, text).violations(payload, budget)


def _violations(schema: Any, payload: Any, budget: ValidationBudget | None = None) -> list[Any]:
    return violations(_id(schema), canonical(schema), payload, budget)


# -- linear patterns and uniqueness --------------------------------------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["compiled", "jsonschema"])
def test_a_catastrophic_pattern_answers_without_backtracking(fast_path: bool) -> None:
    # Python's re needs about 2^50 steps here (it doubles per "a": ~2^30 already take over a
    # minute), RE2 about 50. In a child process with a deadline, so that a backtracking engine
    # fails the test instead of hanging the run.
    schema: dict[str, Any] = {"type": "string", "pattern": "^(a+)+$"}
    if not fast_path:
        schema["dependentRequired"] = {}  # a keyword only jsonschema knows
    code = textwrap.dedent(
        f"""
        from app.schemas import SchemaValidator, canonical, new_schema_id
        schema = {schema!r}
        text = canonical(schema)
        validator = SchemaValidator.build(new_schema_id("t", "/event/X", 1, text), text)
        assert (validator.fast is not None) is {fast_path}
        found = validator.violations("a" * 50 + "!")
        print([violation.path for violation in found])
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the pattern backtracked: validation did not end within 60 s")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['$']"


def test_unique_items_never_compares_items_pairwise(monkeypatch: pytest.MonkeyPatch) -> None:
    comparisons = []
    equal = jsonschema._utils.equal

    def counted(one: Any, two: Any) -> bool:
        comparisons.append(1)
        return bool(equal(one, two))

    monkeypatch.setattr(jsonschema._utils, "equal", counted)
    schema = {"type": "array", "uniqueItems": True}
    items: list[Any] = [{"n": n} for n in range(5000)]
    assert SchemaValidator.build(_id(schema), canonical(schema)).fast is not None

    found = _violations(schema, [*items, {"n": 4999}])  # the fast path refuses: a duplicate

    assert [violation.path for violation in found] == ["$"]
    assert "non-unique" in found[0].message
    assert len(comparisons) < len(items)  # jsonschema's fallback makes ~12.5 million
    assert _violations(schema, items) == []


@pytest.mark.parametrize(
    ("items", "unique"),
    [
        ([1, 1.0], False),
        ([1, True], True),
        ([0, False, None, ""], True),
        ([{"a": 1, "b": [1]}, {"b": [1.0], "a": 1}], False),
        ([[1], [True]], True),
        ([1e300, 1e300], False),
        ([2**62, float(2**62)], False),
    ],
)
def test_unique_items_compares_as_json_schema_does(items: list[Any], unique: bool) -> None:
    for schema in (
        {"uniqueItems": True},
        {"uniqueItems": True, "dependentRequired": {}},  # jsonschema alone
    ):
        assert (_violations(schema, items) == []) is unique


# -- the budget ------------------------------------------------------------------------------


def test_the_budget_refuses_a_large_payload_jsonschema_alone_validates() -> None:
    schema = {"type": "array", "items": {"type": "string"}, "prefixItems": [True]}
    payload = ["x"] * 30_000

    with pytest.raises(ValidationTooCostly, match="more than the 20000 steps"):
        _violations(schema, payload, ValidationBudget(20_000))
    assert _violations(schema, payload[:1000], ValidationBudget(20_000)) == []


def test_the_compiled_path_is_charged_its_bound_and_runs_only_within_the_budget() -> None:
    schema = {"type": "array", "items": {"type": "string"}}
    checker = SchemaValidator.build(_id(schema), canonical(schema))
    assert checker.fast is not None
    assert checker.plan is not None
    payload = ["x"] * 30_000
    bound = checker.plan.bound(payload)

    budget = ValidationBudget(20_000)
    assert _violations(schema, payload, budget) == []
    assert budget.spent == -(-bound // 32)

    too_small = ValidationBudget(budget.spent - 1)
    with pytest.raises(ValidationTooCostly):
        _violations(schema, payload, too_small)


def test_one_budget_covers_every_payload_of_a_request() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "dependentRequired": {}}
    budget = ValidationBudget(100)

    _violations(schema, {"n": 0}, budget)
    each = budget.spent
    for n in range(1, 100 // each):
        _violations(schema, {"n": n}, budget)
    with pytest.raises(ValidationTooCostly):
        _violations(schema, {"n": 100}, budget)
    assert each > 1
    assert 100 < budget.spent <= 100 + each  # it stops at the first step past the limit


def test_a_schema_that_doubles_per_payload_level_is_cut_off_by_the_budget() -> None:
    # Definable (its references go into the payload), yet each level of the payload
    # validates the next level twice: 2^25 applications for 25 levels.
    schema = {
        "$defs": {
            "node": {
                "type": "object",
                "properties": {
                    "c": {"allOf": [{"$ref": "#/$defs/node"}, {"$ref": "#/$defs/node"}]}
                },
            }
        },
        "$ref": "#/$defs/node",
    }
    payload: dict[str, Any] = {}
    for _ in range(25):
        payload = {"c": payload}

    with pytest.raises(ValidationTooCostly):
        _violations(schema, payload, ValidationBudget(50_000))


def test_a_payload_nesting_too_deep_for_a_recursive_schema_is_too_costly() -> None:
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"c": {"$ref": "#/$defs/node"}}}},
        "$ref": "#/$defs/node",
    }
    payload = orjson.loads("[" * 0 + '{"c":' * 1000 + "{}" + "}" * 1000)

    with pytest.raises(ValidationTooCostly, match="nests too deeply"):
        _violations(schema, payload)


# -- nothing is ever fetched -----------------------------------------------------------------


def test_the_exact_validator_never_fetches_a_remote_reference() -> None:
    with recording_http_server() as server:
        validator = exact_validator({"$ref": f"{server.url}remote.json"})

        with metered(ValidationBudget(1000), {}), pytest.raises(Unresolvable) as raised:
            validator.is_valid("a long string")

        assert server.paths == []
    assert f"{server.url}remote.json" in str(raised.value)


def test_a_stored_schema_with_a_remote_reference_refuses_every_publish_and_fetches_nothing() -> (
    None
):
    with recording_http_server() as server:
        # As if written straight into the catalog: it never passed check_schema.
        text = canonical({"type": "object", "properties": {"a": {"$ref": f"{server.url}s"}}})
        schema_id = new_schema_id("t", "/event/Stored__e", 1, text)

        for payload in ({"a": "long text"}, {"b": 1}):
            with pytest.raises(UnusableSchema) as raised:
                violations(schema_id, text, payload)
            assert schema_id in raised.value.message
            assert f"{server.url}s" in raised.value.message
            assert "new version" in raised.value.message

        assert server.paths == []


def test_a_stored_schema_with_a_pattern_re2_cannot_run_refuses_publishes() -> None:
    text = canonical({"type": "string", "pattern": "^(?=a)a+$"})

    with pytest.raises(UnusableSchema, match="lookahead"):
        violations(new_schema_id("t", "/event/Old__e", 1, text), text, "aaa")
