"""Whether a new version of a channel's schema is backward compatible with the current one:
every payload the current version accepts must still be accepted. The check is conservative:
a change it cannot analyse counts as a problem (the administrator may force it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from app.schema_validators import identity

__all__ = ["compatibility_problems"]

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
