"""The two validators a schema gets: jsonschema's draft 2020-12 validator (exact, with every
violation's path) and, for schemas whose keywords mean the same in draft-07, fastjsonschema's
compiled code (tens of times faster). Both match patterns on RE2 and check `uniqueItems` by
hashing, so their work is linear in the payload, and neither ever fetches anything: references
resolve within the schema or not at all.

Validation runs inside `metered(budget, patterns)`: the exact validator charges every keyword
it applies to the budget (see `schema_budget`), and finds compiled patterns there."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

from app.schema_budget import ValidationBudget, keyword_steps
from app.schema_keywords import children, with_children
from app.schema_patterns import Pattern, compile_pattern

__all__ = [
    "REGISTRY",
    "distinct",
    "exact_validator",
    "fast_validator",
    "identity",
    "metered",
]

Keyword = Callable[[Any, Any, Any, Any], Any]


@dataclass(frozen=True, slots=True)
class _Run:
    budget: ValidationBudget
    patterns: Mapping[str, Pattern]


_RUN: ContextVar[_Run] = ContextVar("schema_validation_run")


@contextmanager
def metered(budget: ValidationBudget, patterns: Mapping[str, Pattern]) -> Iterator[None]:
    """Validate inside this: steps are charged to `budget`, and `patterns` (pattern text to
    compiled) serve `pattern` and `patternProperties`."""
    token = _RUN.set(_Run(budget, patterns))
    try:
        yield
    finally:
        _RUN.reset(token)


def _compiled(pattern: str) -> Pattern:
    found = _RUN.get().patterns.get(pattern)
    # Every pattern of a schema is compiled when its validators are built; this is a backstop.
    return found if found is not None else compile_pattern(pattern)


def _never_retrieve(uri: str) -> Resource[Any]:
    """Resolving a reference outside the schema fails here instead of fetching it."""
    raise NoSuchResource(ref=uri)  # type: ignore[call-arg]


#: The registry of every validator built here: it holds nothing and retrieves nothing.
REGISTRY: Registry[Any] = Registry(retrieve=_never_retrieve)  # type: ignore[call-arg]


# -- JSON identity --------------------------------------------------------------------------

_INT64 = 2**63


def _normalised(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and -_INT64 <= value < _INT64:
        return int(value)  # 1.0 and 1 are one JSON number
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    return value


def identity(value: Any) -> bytes:
    """A value's JSON identity: `true` and `1` differ, 1.0 equals 1, key order is irrelevant."""
    return orjson.dumps(_normalised(value), option=orjson.OPT_SORT_KEYS)


def distinct(items: list[Any]) -> bool:
    """Whether no two items are equal as JSON Schema compares (in time linear in their size)."""
    seen: set[bytes] = set()
    for item in items:
        key = identity(item)
        if key in seen:
            return False
        seen.add(key)
    return True


# -- keywords on RE2, in linear time -----------------------------------------------------------


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        compiled = _compiled(pattern)
        for name, value in instance.items():
            if compiled.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _matches_any(name: str, patterns: Any) -> bool:
    return any(_compiled(pattern).search(name) for pattern in patterns or ())


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    declared = schema.get("properties", {})
    patterns = schema.get("patternProperties", {})
    extras = [
        name for name in instance if name not in declared and not _matches_any(name, patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif not additional and extras:
        if patterns:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            listed = ", ".join(repr(each) for each in sorted(patterns))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {listed}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            joined = ", ".join(repr(each) for each in sorted(extras, key=str))
            yield ValidationError(
                f"Additional properties are not allowed ({joined} {verb} unexpected)"
            )


def _evaluated_keys(validator: Any, instance: dict[str, Any], schema: Any) -> set[str]:
    """The properties of `instance` that `schema` evaluates (jsonschema's own walk, on RE2
    and sets)."""
    if validator.is_type(schema, "boolean"):
        return set()
    found: set[str] = set()
    for keyword in ("$ref", "$dynamicRef"):
        reference = schema.get(keyword)
        if reference is not None:
            resolved = validator._resolver.lookup(reference)
            found |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        found |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        subschema = schema.get(keyword)
        if subschema is not None:
            found |= {
                name
                for name, value in instance.items()
                if next(validator.descend(value, subschema), None) is None
            }
    patterns = schema.get("patternProperties")
    if patterns:
        found |= {name for name in instance if _matches_any(name, patterns)}
    for name, subschema in schema.get("dependentSchemas", {}).items():
        if name in instance:
            found |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if next(validator.descend(instance, subschema), None) is None:
                found |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            found |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                found |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            found |= _evaluated_keys(validator, instance, schema["else"])
    return found


def _unevaluated_properties(
    validator: Any, unevaluated: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    refused = [
        name
        for name in instance
        if name not in evaluated
        and next(validator.descend(instance[name], unevaluated, path=name, schema_path=name), None)
        is not None
    ]
    if not refused:
        return
    verb = "was" if len(refused) == 1 else "were"
    if unevaluated is False:
        joined = ", ".join(repr(each) for each in sorted(refused, key=str))
        yield ValidationError(
            f"Unevaluated properties are not allowed ({joined} {verb} unexpected)"
        )
    else:
        joined = ", ".join(repr(each) for each in refused)
        yield ValidationError(
            "Unevaluated properties are not valid under the given schema "
            f"({joined} {verb} unevaluated and invalid)"
        )


def _unique_items(
    validator: Any, unique: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if unique and validator.is_type(instance, "array") and not distinct(instance):
        yield ValidationError(f"{instance!r} has non-unique elements")


_LINEAR: dict[str, Keyword] = {
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
    "unevaluatedProperties": _unevaluated_properties,
    "uniqueItems": _unique_items,
}


def _metered(name: str, keyword: Keyword) -> Keyword:
    def apply(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        _RUN.get().budget.spend(keyword_steps(name, value, instance, schema))
        return keyword(validator, value, instance, schema)

    apply.__name__ = keyword.__name__
    return apply


_KEYWORDS: dict[str, Keyword] = {**Draft202012Validator.VALIDATORS, **_LINEAR}
_EXACT: type[Validator] = validators.extend(  # type: ignore[no-untyped-call]
    Draft202012Validator, {name: _metered(name, keyword) for name, keyword in _KEYWORDS.items()}
)


def exact_validator(document: Any) -> Validator:
    """jsonschema's validator for `document`, on RE2, metered, resolving nothing outside it.

    A root `$schema` is left out (it can only say 2020-12 here): jsonschema would otherwise
    switch to its stock validator wherever a reference leads back to the root."""
    if isinstance(document, dict) and "$schema" in document:
        document = {key: value for key, value in document.items() if key != "$schema"}
    return _EXACT(document, registry=REGISTRY)


# -- the compiled fast path ----------------------------------------------------------------

#: Keywords whose meaning is the same in draft-07 and 2020-12 (with formats ignored, as 2020-12
#: treats them as annotations): schemas made only of these are checked by compiled code first.
_PORTABLE = frozenset(
    {
        "type",
        "properties",
        "patternProperties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "format",
        "title",
        "description",
        "$comment",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)


def _kinds_compared(node: dict[str, Any]) -> frozenset[str] | None:
    """Which of "boolean" and "number" the `enum` or `const` of `node` lists; None when
    compiled code cannot compare its values as JSON Schema does (Python's `True == 1` and
    `[1] == [True]`): values of both kinds, or arrays and objects."""
    values = [node["const"]] if "const" in node else list(node.get("enum", []))
    if not all(value is None or isinstance(value, str | int | float) for value in values):
        return None
    kinds = frozenset(
        "boolean" if isinstance(value, bool) else "number"
        for value in values
        if isinstance(value, int | float)
    )
    return None if len(kinds) > 1 else kinds


def portable(schema: Any) -> bool:
    """Whether every keyword of `schema` and its subschemas is in `_PORTABLE`."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, bool):
            continue
        if not isinstance(node, dict) or not set(node) <= _PORTABLE:
            return False
        if _kinds_compared(node) is None:
            return False
        pending += [part for _, _, part in children(node)]
    return True


def _compilable(schema: Any, names: dict[str, str]) -> Any:
    """`schema` as compiled code must see it: every pattern replaced by a placeholder name
    (`names` maps each pattern to its placeholder), the name the compiled code looks the RE2
    pattern up by; an `enum` or `const` of numbers (of booleans) refusing booleans (numbers)."""

    def name(pattern: str) -> str:
        return names.setdefault(pattern, f"re2-{len(names)}")

    if not isinstance(schema, dict):
        return schema
    copy = with_children(schema, lambda _, part: _compilable(part, names))
    if isinstance(copy.get("pattern"), str):
        copy["pattern"] = name(copy["pattern"])
    if "patternProperties" in copy:
        copy["patternProperties"] = {
            name(pattern): part for pattern, part in copy["patternProperties"].items()
        }
    # Compiled code takes True for 1: values of the other kind are kept out by their type.
    for kind in _kinds_compared(copy) or ():
        other = "number" if kind == "boolean" else "boolean"
        copy["allOf"] = [*copy.get("allOf", ()), {"not": {"type": other}}]
    return copy


def fast_validator(document: Any, patterns: Mapping[str, Pattern]) -> Any:
    """fastjsonschema's compiled validator for a portable `document`, matching its patterns
    with the RE2 ones in `patterns`; None when the document is not portable or cannot be
    compiled. (fastjsonschema's own `uniqueItems` check hashes, so it is linear.)"""
    if not portable(document):
        return None
    names: dict[str, str] = {}
    try:
        placeheld = _compilable(document, names)
        fast = fastjsonschema.compile(placeheld, use_default=False, use_formats=False)
    except Exception:  # jsonschema alone, then: it accepted the schema
        return None
    table = fast.__globals__.get("REGEX_PATTERNS")
    if names:
        if not isinstance(table, dict) or set(table) != set(names.values()):
            return None  # not the code this swap was written for: no fast path
        for pattern, placeholder in names.items():
            table[placeholder] = patterns[pattern]
    elif table:
        return None
    return fast
