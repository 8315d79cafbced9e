"""Payload schemas (JSON Schema draft 2020-12): checking a schema when it is defined, validating
payloads with every violation's JSON path within a budget of steps, naming versions, and
proving a new version backward compatible (every payload the previous version accepted is
still accepted). What a schema may contain is `schema_safety`'s; how payloads are validated,
`schema_validators`'."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import fastjsonschema
import orjson
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from app.errors import InvalidBody, UnusableSchema, ValidationTooCostly
from app.schema_budget import COMPILED_STEPS_PER_STEP, CostPlan, ValidationBudget, plan_cost
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
from app.schema_validators import exact_validator, fast_validator, identity, metered

__all__ = [
    "SchemaLimits",
    "ValidationBudget",
    "Violation",
    "canonical",
    "check_schema",
    "compatibility_problems",
    "new_schema_id",
    "prepare_validation",
    "violations",
]

_MAX_VIOLATIONS = 100
_MAX_MESSAGE = 500  # characters of one violation's message (they quote the payload)
_CACHE_ENTRIES = 1024
#: Bytes the cached validators may hold, estimated from their schema's text (measured: about
#: 20 times its size for jsonschema's objects, 100 times with compiled code) and patterns.
_CACHE_BYTES = 64 * 1024 * 1024
_BYTES_PER_SCHEMA_BYTE = 32
_BYTES_PER_COMPILED_BYTE = 128
#: Most subschemas (references inlined) of a schema compiled for the fast path: compiling
#: takes about half a millisecond and 50 KiB of passing memory per subschema. Larger schemas,
#: and schemas that recurse, are validated by jsonschema alone.
_MAX_COMPILED = 500
#: One schema's validators are built at a time, so their passing memory does not add up.
_BUILDING = threading.Lock()


@dataclass(slots=True)
class _Checker:
    """What validating against one stored schema needs, or why it cannot be done."""

    exact: Validator | None = None
    fast: Any = None  # a compiled fastjsonschema function, or None
    plan: CostPlan | None = None  # the fast path's cost bound
    patterns: Mapping[str, Pattern] = field(default_factory=dict)
    unusable: str | None = None
    weight: int = 0


_CHECKERS: OrderedDict[str, _Checker] = OrderedDict()
_CACHED_BYTES = [0]


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


def _new_checker(text: str) -> _Checker:
    """The validators of a stored schema, or why it cannot be used: it was checked when it
    was defined, but perhaps under older rules (or written to the catalog some other way)."""
    document = orjson.loads(text)
    try:
        shape = _shape(document)
    except SchemaRefused as refused:
        return _Checker(unusable=str(refused), weight=len(text))
    flat = inlined(shape, _MAX_COMPILED)
    fast = fast_validator(flat, shape.patterns) if flat is not None else None
    weight = (_BYTES_PER_SCHEMA_BYTE if fast is None else _BYTES_PER_COMPILED_BYTE) * len(text)
    weight += sum(pattern_weight(pattern) for pattern in shape.patterns.values())
    return _Checker(
        exact=exact_validator(document),
        fast=fast,
        plan=plan_cost(flat) if fast is not None else None,
        patterns=shape.patterns,
        weight=weight,
    )


def _cache(schema_id: str, checker: _Checker) -> None:
    _CHECKERS[schema_id] = checker
    _CACHED_BYTES[0] += checker.weight
    while len(_CHECKERS) > 1 and (
        len(_CHECKERS) > _CACHE_ENTRIES or _CACHED_BYTES[0] > _CACHE_BYTES
    ):
        _, evicted = _CHECKERS.popitem(last=False)
        _CACHED_BYTES[0] -= evicted.weight


def _checker(schema_id: str, text: str) -> _Checker:
    checker = _CHECKERS.get(schema_id)
    if checker is not None:
        _CHECKERS.move_to_end(schema_id)
        return checker
    checker = _new_checker(text)
    _cache(schema_id, checker)
    return checker


async def prepare_validation(schema_id: str, text: str) -> None:
    """Build the validators of a stored schema in a worker thread, unless they are cached:
    compiling a large schema takes long enough to stall every other request on the loop.
    `violations` right after (with no await between) finds them ready."""
    if schema_id in _CHECKERS:
        return
    checker = await asyncio.to_thread(_built_alone, text)
    if schema_id not in _CHECKERS:
        _cache(schema_id, checker)


def _built_alone(text: str) -> _Checker:
    with _BUILDING:
        return _new_checker(text)


def _unusable(schema_id: str, problem: str | None) -> str:
    return (
        f"the channel's schema {schema_id} cannot be applied ({problem}); an administrator "
        "must define a new version of it"
    )


def violations(
    schema_id: str,
    text: str,
    payload: Any,
    budget: ValidationBudget | None = None,
    size: int | None = None,
) -> list[Violation]:
    """Every way `payload` breaks the schema (at most 100), ordered by path.

    The work is charged to `budget` (the request's; without one, it is not bounded):
    ValidationTooCostly when it runs out. `size`, the payload's length as compact JSON, if
    known, makes the common case cheaper to charge. UnusableSchema when the stored schema
    cannot be applied safely (it refers outside itself, or has a pattern RE2 cannot run)."""
    checker = _checker(schema_id, text)
    if checker.unusable is not None or checker.exact is None:
        raise UnusableSchema(_unusable(schema_id, checker.unusable))
    budget = budget or ValidationBudget(sys.maxsize)
    try:
        plan = checker.plan
        if plan is not None and (
            (size is not None and budget.take(_steps(plan.quick_bound(size))))
            or budget.take(_steps(plan.bound(payload)))
        ):
            try:
                checker.fast(payload)
                return []
            except fastjsonschema.JsonSchemaException:
                pass  # jsonschema says why (or, where they differ, that it is fine)
        with metered(budget, checker.patterns):
            found = _exact_violations(checker.exact, payload)
    except RecursionError:
        raise ValidationTooCostly(
            "the payload nests too deeply to be validated against this channel's schema"
        ) from None
    except Unresolvable as error:
        problem = f"it refers to {error.ref!r}, which is not in it, and nothing is ever fetched"
        raise UnusableSchema(_unusable(schema_id, problem)) from None
    except PatternRefused as error:
        raise UnusableSchema(_unusable(schema_id, f"a pattern cannot be used: {error}")) from None
    return found


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


# -- backward compatibility ----------------------------------------------------------------

_TYPES = frozenset({"null", "boolean", "object", "array", "number", "integer", "string"})
_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
        "format",  # an annotation only in draft 2020-12 unless a format checker is enabled
    }
)
_ANALYSED = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
    }
)
#: Keywords whose meaning depends on another one's: a change of the latter is not analysed.
_GOVERNING = {
    "patternProperties": "properties",
    "unevaluatedProperties": "properties",
    "unevaluatedItems": "items",
}
#: keyword -> True when a larger value accepts less.
_LOWER_BOUNDS = {"minimum": True, "exclusiveMinimum": True, "minLength": True, "minItems": True}
_UPPER_BOUNDS = {"maximum": False, "exclusiveMaximum": False, "maxLength": False, "maxItems": False}


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    declared = schema.get("type")
    if declared is None:
        return None
    names = {declared} if isinstance(declared, str) else set(declared)
    if "number" in names:
        names.add("integer")
    return names


def _as_dict(schema: Any) -> dict[str, Any] | None:
    """A schema as a keyword dict; None for `false` (accepts nothing)."""
    if schema is True:
        return {}
    if schema is False:
        return None
    return dict(schema)


#: Steps the compatibility check may take (a step: a keyword, property, or enum value looked at),
#: so that comparing two large schemas cannot take long; past it, the change is unproven.
_MAX_COMPARISON_STEPS = 200_000


class _GaveUp(Exception):
    pass


class _Steps:
    __slots__ = ("left",)

    def __init__(self, steps: int) -> None:
        self.left = steps

    def take(self, steps: int) -> None:
        self.left -= steps
        if self.left < 0:
            raise _GaveUp


def compatibility_problems(old: Any, new: Any, path: str = "$") -> list[str]:
    """Why some payload valid under `old` may be refused by `new`; empty when none can be.
    Keywords this check does not understand count as a problem when they change (the caller
    may force the change), and so do schemas too large to compare completely."""
    try:
        return _problems(old, new, path, _Steps(_MAX_COMPARISON_STEPS))
    except _GaveUp:
        return [
            f"{path}: the schemas are too large to compare completely, so this check cannot "
            "prove the change compatible"
        ]


def _problems(old: Any, new: Any, path: str, steps: _Steps) -> list[str]:
    old_schema, new_schema = _as_dict(old), _as_dict(new)
    if old_schema is None:
        return []  # nothing was accepted before
    if new_schema is None:
        return [f"{path}: the new schema accepts nothing"]
    steps.take(1 + len(old_schema) + len(new_schema))
    problems: list[str] = []
    for keyword in sorted((set(old_schema) | set(new_schema)) - _ANNOTATIONS - _ANALYSED):
        if old_schema.get(keyword) != new_schema.get(keyword):
            problems.append(
                f"{path}: '{keyword}' changed, which this check cannot prove compatible"
            )
    for keyword, governs in _GOVERNING.items():
        if (keyword in old_schema or keyword in new_schema) and old_schema.get(
            governs
        ) != new_schema.get(governs):
            problems.append(
                f"{path}: '{governs}' changed next to '{keyword}', which this check cannot "
                "prove compatible"
            )
    problems += _type_problems(old_schema, new_schema, path)
    problems += _value_problems(old_schema, new_schema, path, steps)
    problems += _bound_problems(old_schema, new_schema, path)
    problems += _object_problems(old_schema, new_schema, path, steps)
    if "items" in new_schema:
        problems += _problems(
            old_schema.get("items", True), new_schema["items"], f"{path}[*]", steps
        )
    return problems


def _type_problems(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    new_types = _types(new)
    if new_types is None:
        return []
    old_types = _types(old) or set(_TYPES)
    lost = sorted(old_types - new_types)
    if not lost:
        return []
    return [f"{path}: type narrowed: {', '.join(lost)} no longer accepted"]


def _value_problems(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str, steps: _Steps
) -> list[str]:
    """Values `new` no longer allows, compared by JSON identity (`true` is not `1`; 1.0 is 1)."""
    allowed_before: list[Any] | None = None
    if "const" in old:
        allowed_before = [old["const"]]
    elif "enum" in old:
        allowed_before = list(old["enum"])
    allowed_now: list[Any] | None = None
    if "const" in new:
        allowed_now = [new["const"]]
    if "enum" in new:
        steps.take(len(new["enum"]))
        enum = {identity(value) for value in new["enum"]}
        if allowed_now is None:
            allowed_now = list(new["enum"])
        else:
            allowed_now = [value for value in allowed_now if identity(value) in enum]
    if allowed_now is None:
        return []
    if allowed_before is None:
        return [f"{path}: values are now limited to {orjson.dumps(allowed_now).decode()}"]
    steps.take(len(allowed_now) + len(allowed_before))
    still = {identity(value) for value in allowed_now}
    lost = [value for value in allowed_before if identity(value) not in still]
    if not lost:
        return []
    return [f"{path}: values no longer allowed: {orjson.dumps(lost).decode()}"]


def _bound_problems(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    problems = []
    for keyword in (*_LOWER_BOUNDS, *_UPPER_BOUNDS):
        if keyword not in new:
            continue
        before, now = old.get(keyword), new[keyword]
        lower = keyword in _LOWER_BOUNDS
        if before is None:
            problems.append(f"{path}: new limit {keyword} = {now}")
        elif (now > before) if lower else (now < before):
            problems.append(f"{path}: {keyword} tightened from {before} to {now}")
    if "pattern" in new and new.get("pattern") != old.get("pattern"):
        problems.append(f"{path}: pattern changed to {new['pattern']!r}")
    return problems


def _object_problems(
    old: Mapping[str, Any], new: Mapping[str, Any], path: str, steps: _Steps
) -> list[str]:
    problems = []
    added = sorted(set(new.get("required", ())) - set(old.get("required", ())))
    problems += [f"{path}: property '{name}' became required" for name in added]
    old_properties: Mapping[str, Any] = old.get("properties", {})
    new_properties: Mapping[str, Any] = new.get("properties", {})
    steps.take(len(old_properties) + len(new_properties))
    old_additional = old.get("additionalProperties", True)
    new_additional = new.get("additionalProperties", True)
    for name, schema in new_properties.items():
        if name in old_properties:
            problems += _problems(old_properties[name], schema, f"{path}.{name}", steps)
            continue
        # A newly declared property was governed by the old additionalProperties.
        found = _problems(old_additional, schema, f"{path}.{name}", steps)
        if found:
            problems.append(
                f"{path}: new property '{name}' was free-form before (additionalProperties), "
                "so payloads already carrying it may be refused: " + "; ".join(found)
            )
    for name, schema in old_properties.items():
        if name in new_properties:
            continue
        if new_additional is False:
            problems.append(
                f"{path}: property '{name}' was removed while additionalProperties is false"
            )
        else:
            problems += _problems(schema, new_additional, f"{path}.{name}", steps)
    if new_additional is not True and old_additional is True:
        if new_additional is False:
            problems.append(
                f"{path}: additionalProperties is now false: undeclared properties are refused"
            )
        else:
            problems += _problems(True, new_additional, f"{path}.*", steps)
    elif new_additional is not True and old_additional is not False:
        problems += _problems(old_additional, new_additional, f"{path}.*", steps)
    return problems
