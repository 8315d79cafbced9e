"""What validating payloads against a schema may cost: a budget of steps per request.

A step is one keyword applied to one value, plus one for each member a keyword walks through:
each property or item it checks (`properties`, `items`, `uniqueItems`, `additionalProperties`,
...), each value an `enum` or `required` lists, each property name tried against each of
`patternProperties`, and each KiB of text a `pattern` scans. Interpreted validation counts its
steps as it goes; compiled validation is charged, before it runs, a bound computed from the
schema and the payload's shape (`CostPlan`), and runs only when that bound fits."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import ValidationTooCostly
from app.schema_keywords import SUBSCHEMA_KEYWORDS, children

__all__ = [
    "COMPILED_STEPS_PER_STEP",
    "CostPlan",
    "ValidationBudget",
    "keyword_steps",
    "plan_cost",
]

#: Keywords that walk their own members (an `enum`'s values, `properties`' names, ...).
_OWN_MEMBERS = frozenset(
    {"enum", "required", "properties", "prefixItems", "dependentRequired", "dependentSchemas"}
)
#: Keywords that walk the value's members (an array's items, an object's properties).
_VALUE_MEMBERS = frozenset(
    {
        "items",
        "contains",
        "uniqueItems",
        "unevaluatedItems",
        "propertyNames",
        "unevaluatedProperties",
    }
)
#: Keywords that cost nothing to apply (annotations: no validator function).
_FREE = frozenset(
    {
        "$schema",
        "$id",
        "$anchor",
        "$dynamicAnchor",
        "$defs",
        "definitions",
        "$comment",
        "$vocabulary",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "contentEncoding",
        "contentMediaType",
        "contentSchema",
    }
)
_KIB = 1024
_CONTAINERS = (dict, list)
_REFERENCES = frozenset({"$ref", "$dynamicRef"})
_REFERENCE_STEPS = 4  # following a reference costs jsonschema about four other steps


#: Compiled code takes a step in 0.05-0.2 µs where jsonschema takes 8-30 µs (measured on a
#: 2-core machine): each step of the compiled path's bound costs 1/32 of a step, rounded up.
COMPILED_STEPS_PER_STEP = 32


class ValidationBudget:
    """The steps one request's validation may still take; spending past the limit raises
    ValidationTooCostly (and nothing of the request is stored)."""

    __slots__ = ("limit", "spent")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.spent = 0

    def take(self, steps: int) -> bool:
        """Spend `steps` if they fit; whether they did."""
        if self.spent + steps > self.limit:
            return False
        self.spent += steps
        return True

    def spend(self, steps: int) -> None:
        self.spent += steps
        if self.spent > self.limit:
            raise ValidationTooCostly(
                "validating this request against the channel's schema takes more than the "
                f"{self.limit} steps a request may take: send smaller or simpler payloads, or "
                "fewer events per request"
            )


def _size(value: Any) -> int:
    return len(value) if isinstance(value, list | dict | str) else 0


def keyword_steps(keyword: str, value: Any, instance: Any, schema: Mapping[str, Any]) -> int:
    """The steps of applying `keyword` (with its `value`) to `instance`."""
    if keyword in _OWN_MEMBERS:
        return 1 + _size(value)
    if keyword in _VALUE_MEMBERS:
        return 1 + (_size(instance) if isinstance(instance, list | dict) else 0)
    if keyword == "pattern":
        return 1 + (len(instance) // _KIB if isinstance(instance, str) else 0)
    if keyword == "additionalProperties":
        patterns = schema.get("patternProperties")
        width = 1 + (len(patterns) if isinstance(patterns, dict) else 0)
        return 1 + (len(instance) * width if isinstance(instance, dict) else 0)
    if keyword == "patternProperties":
        return 1 + (len(instance) * _size(value) if isinstance(instance, dict) else 0)
    if keyword in _REFERENCES:
        return _REFERENCE_STEPS
    return 1


@dataclass(frozen=True, slots=True)
class CostPlan:
    """A bound on the steps of validating a payload against a schema without `$ref`: at
    nesting depth d of the payload, `per_value[d]` steps per value and `per_kib[d]` per KiB
    of text (a subschema only ever applies at one depth, to each value there at most once)."""

    per_value: tuple[int, ...]
    per_kib: tuple[int, ...]

    def bound(self, payload: Any) -> int:
        """The bound for `payload`: its values counted down to the deepest level a subschema
        reaches. (A bound from the payload's size alone, with no walk, would be many times
        larger for ordinary events: long texts hold few values, and that overcharge would
        exhaust the budget of a batch of them.)"""
        per_value, per_kib = self.per_value, self.per_kib
        last = len(per_value) - 1
        steps = per_value[0]
        level: list[Any] = [payload]
        for depth in range(1, last + 1):
            if per_kib[depth - 1]:  # the patterns one level up, on the text there
                steps += per_kib[depth - 1] * (_text(level) // _KIB)
            if depth == last and not per_kib[depth]:
                # Only how many values there are, without listing them.
                count = 0
                for value in level:
                    if type(value) in _CONTAINERS:
                        count += len(value)
                return steps + per_value[depth] * count
            below: list[Any] = []
            for value in level:
                if type(value) is dict:
                    below.extend(value.values())
                elif type(value) is list:
                    below.extend(value)
            level = below
            steps += per_value[depth] * len(level)
        if per_kib[last]:
            steps += per_kib[last] * (_text(level) // _KIB)
        return steps


def _text(level: list[Any]) -> int:
    """Characters of text among the values of `level`."""
    return sum(len(value) for value in level if type(value) is str)


def plan_cost(schema: Any) -> CostPlan:
    """The cost plan of a schema without references (`$ref`, `$dynamicRef`)."""
    per_value: list[int] = [0]
    per_kib: list[int] = [0]

    def add(depth: int, steps: int, kib: int = 0) -> None:
        while len(per_value) <= depth:
            per_value.append(0)
            per_kib.append(0)
        per_value[depth] += steps
        per_kib[depth] += kib

    pending: list[tuple[Any, int]] = [(schema, 0)]
    while pending:
        node, depth = pending.pop()
        if not isinstance(node, dict):
            continue
        for keyword, value in node.items():
            if keyword in _FREE:
                continue
            if keyword in _OWN_MEMBERS:
                add(depth, 1 + _size(value))
            else:
                add(depth, 1)
            if keyword in _VALUE_MEMBERS:
                add(depth + 1, 1)
            elif keyword == "pattern":
                add(depth, 0, 1)
            elif keyword == "additionalProperties":
                patterns = node.get("patternProperties")
                add(depth + 1, 1 + (len(patterns) if isinstance(patterns, dict) else 0))
            elif keyword == "patternProperties":
                add(depth + 1, _size(value))
        for keyword, _, part in children(node):
            applies = SUBSCHEMA_KEYWORDS[keyword].applies
            if applies != "never":  # the value itself, or its members one level deeper
                pending.append((part, depth if applies == "value" else depth + 1))
    return CostPlan(tuple(per_value), tuple(per_kib))
