"""Payload schemas (JSON Schema draft 2020-12): checking a schema when it is defined, validating
payloads with every violation's JSON path within a budget of steps, and naming versions. What
a schema may contain is `schema_safety`'s; how payloads are validated, `schema_validators`';
whether a new version is backward compatible, `schema_compat`'s."""

from __future__ import annotations

import base64
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from app.errors import InvalidBody, UnusableSchema, ValidationTooCostly
from app.schema_budget import COMPILED_STEPS_PER_STEP, CostPlan, ValidationBudget, plan_cost
from app.schema_compat import compatibility_problems
from app.schema_meta import meta_problem
from app.schema_patterns import Pattern, PatternRefused, pattern_weight
from app.schema_safety import (
    SchemaLimits,
    SchemaRefused,
    Shape,
    cycle_problem,
    expansion_problem,
    inlined,
    nesting_problem,
    shape_of,
    subschemas,
)
from app.schema_validators import exact_validator, fast_validator, metered

__all__ = [
    "SchemaLimits",
    "SchemaValidator",
    "ValidationBudget",
    "Violation",
    "canonical",
    "check_schema",
    "compatibility_problems",
    "new_schema_id",
]

_MAX_VIOLATIONS = 100
_MAX_MESSAGE = 500  # characters of one violation's message (they quote the payload)
#: Bytes a validator holds, estimated from its schema's text (measured: about 20 times its
#: size for jsonschema's objects, 100 times with compiled code) and its patterns.
_BYTES_PER_SCHEMA_BYTE = 32
_BYTES_PER_COMPILED_BYTE = 128
#: Most subschemas (references inlined) of a schema compiled for the fast path: compiling
#: takes about half a millisecond and 50 KiB of passing memory per subschema. Larger schemas,
#: and schemas that recurse, are validated by jsonschema alone.
_MAX_COMPILED = 500


@dataclass(frozen=True, slots=True)
class Violation:
    path: str  # JSON path into the payload, `$.items[2].sku`
    message: str


def canonical(document: Any) -> str:
    """The stored form of a schema: compact JSON with sorted keys."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def _shape(document: Any, limits: SchemaLimits | None = None) -> Shape:
    """The shape of a well-formed schema that `schema_safety` allows (and within `limits`,
    if given); SchemaRefused if not."""
    nodes = subschemas(document)
    if limits is not None and len(nodes) > limits.max_subschemas:
        raise SchemaRefused(
            f"schema has {len(nodes)} subschemas; the limit is {limits.max_subschemas}"
        )
    problem = meta_problem(nodes)
    if problem is not None:
        raise SchemaRefused(problem)
    shape = shape_of(document, nodes)
    problem = cycle_problem(shape)
    if limits is not None:
        problem = problem or expansion_problem(shape, limits.max_subschemas)
    if problem is not None:
        raise SchemaRefused(problem)
    return shape


def check_schema(document: Any, limits: SchemaLimits | None = None) -> None:
    """InvalidBody, naming where and why, unless `document` is a valid draft 2020-12 schema
    within `limits` that `schema_safety` allows."""
    limits = limits or SchemaLimits()
    if not isinstance(document, dict | bool):
        raise InvalidBody("schema must be a JSON Schema (draft 2020-12) object")
    declared = document.get("$schema") if isinstance(document, dict) else None
    if declared is not None and "2020-12" not in str(declared):
        raise InvalidBody(f"schema: only draft 2020-12 is supported, not {declared}")
    problem = nesting_problem(document, limits.max_depth)
    if problem is None:
        size = len(orjson.dumps(document))
        if size > limits.max_size:
            problem = f"schema is {size} bytes as compact JSON; the limit is {limits.max_size}"
    if problem is None:
        try:
            _shape(document, limits)
        except SchemaRefused as refused:
            problem = str(refused)
    if problem is not None:
        raise InvalidBody(problem)


def new_schema_id(tenant: str, channel: str, version: int, text: str) -> str:
    """A short, URL-safe id naming one version of one channel's schema."""
    digest = hashlib.sha256(f"{tenant}\x00{channel}\x00{version}\x00{text}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _unusable(schema_id: str, problem: str | None) -> str:
    return (
        f"the channel's schema {schema_id} cannot be applied ({problem}); an administrator "
        "must define a new version of it"
    )


@dataclass(frozen=True, slots=True)
class SchemaValidator:
    """What validating payloads against one stored schema needs, or why it cannot be done.
    Building one can take a quarter of a second for a large schema: `schema_cache` builds
    them off the event loop and keeps them."""

    schema_id: str
    exact: Validator | None = None
    fast: Any = None  # a compiled fastjsonschema function, or None
    plan: CostPlan | None = None  # the fast path's cost bound
    patterns: Mapping[str, Pattern] = field(default_factory=dict)
    unusable: str | None = None
    weight: int = 0  # approximate bytes held

    @classmethod
    def build(cls, schema_id: str, text: str) -> SchemaValidator:
        """The validators of a stored schema (`text`, canonical JSON), or why it cannot be
        used: it was checked when it was defined, but perhaps under older rules (or written
        to the catalog some other way)."""
        document = orjson.loads(text)
        try:
            shape = _shape(document)
        except SchemaRefused as refused:
            return cls(schema_id, unusable=str(refused), weight=len(text))
        flat = inlined(shape, _MAX_COMPILED)
        fast = fast_validator(flat, shape.patterns) if flat is not None else None
        weight = (_BYTES_PER_SCHEMA_BYTE if fast is None else _BYTES_PER_COMPILED_BYTE) * len(text)
        weight += sum(pattern_weight(pattern) for pattern in shape.patterns.values())
        return cls(
            schema_id,
            exact=exact_validator(document),
            fast=fast,
            plan=plan_cost(flat) if fast is not None else None,
            patterns=shape.patterns,
            weight=weight,
        )

    def violations(self, payload: Any, budget: ValidationBudget | None = None) -> list[Violation]:
        """Every way `payload` breaks the schema (at most 100), ordered by path.

        The work is charged to `budget` (the request's; without one, it is not bounded):
        ValidationTooCostly when it runs out. UnusableSchema when the stored schema cannot be
        applied safely (it refers outside itself, or has a pattern RE2 cannot run)."""
        if self.unusable is not None or self.exact is None:
            raise UnusableSchema(_unusable(self.schema_id, self.unusable))
        budget = budget or ValidationBudget(sys.maxsize)
        try:
            if self.plan is not None and budget.take(_steps(self.plan.bound(payload))):
                try:
                    self.fast(payload)
                    return []
                except fastjsonschema.JsonSchemaException:
                    pass  # jsonschema says why (or, where they differ, that it is fine)
            with metered(budget, self.patterns):
                return _exact_violations(self.exact, payload)
        except RecursionError:
            raise ValidationTooCostly(
                "the payload nests too deeply to be validated against this channel's schema"
            ) from None
        except Unresolvable as error:
            problem = f"it refers to {error.ref!r}, which is not in it, and nothing is ever fetched"
            raise UnusableSchema(_unusable(self.schema_id, problem)) from None
        except PatternRefused as error:
            problem = f"a pattern cannot be used: {error}"
            raise UnusableSchema(_unusable(self.schema_id, problem)) from None


def _steps(compiled_steps: int) -> int:
    return -(-compiled_steps // COMPILED_STEPS_PER_STEP)


def _exact_violations(validator: Validator, payload: Any) -> list[Violation]:
    found = []
    for error in validator.iter_errors(payload):
        order = tuple(
            (0, part, "") if isinstance(part, int) else (1, 0, part) for part in error.absolute_path
        )
        message = error.message
        if len(message) > _MAX_MESSAGE:  # the quoted value first, what is wrong last
            message = f"{message[: _MAX_MESSAGE // 2]} … {message[-_MAX_MESSAGE // 2 :]}"
        found.append((order, Violation(error.json_path, message)))
        if len(found) >= _MAX_VIOLATIONS:
            break
    return [violation for _, violation in sorted(found, key=lambda pair: pair[0])]
