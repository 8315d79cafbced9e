"""Payload schemas (JSON Schema draft 2020-12): checking a schema, validating payloads with
every violation's JSON path, naming versions, and proving a new version backward compatible
(every payload the previous version accepted is still accepted)."""

from __future__ import annotations

import base64
import hashlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import fastjsonschema
import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from app.errors import InvalidBody

__all__ = [
    "Violation",
    "canonical",
    "check_schema",
    "compatibility_problems",
    "new_schema_id",
    "violations",
]

_MAX_VIOLATIONS = 100
_VALIDATOR_CACHE = 1024
#: Keywords whose meaning is the same in draft-07 and 2020-12 (with formats ignored, as 2020-12
#: treats them as annotations): schemas made only of these are checked by fastjsonschema's
#: compiled code first (tens of times faster); jsonschema has the last word on any refusal.
_PORTABLE = frozenset(
    {
        "type",
        "properties",
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
_SUBSCHEMA_MAPS = ("properties",)
_SUBSCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
_SUBSCHEMAS = ("additionalProperties", "items", "not")


@dataclass(slots=True)
class _Checker:
    exact: Draft202012Validator
    fast: Any  # a compiled fastjsonschema function, or None


_CHECKERS: OrderedDict[str, _Checker] = OrderedDict()


def _portable(schema: Any) -> bool:
    """Whether every keyword of `schema` and its subschemas is in `_PORTABLE`."""
    if isinstance(schema, bool):
        return True
    if not isinstance(schema, dict) or not set(schema) <= _PORTABLE:
        return False
    if "default" in schema:
        return False
    # Compiled code compares with Python's ==, for which True == 1: only text and null values.
    values = [schema["const"]] if "const" in schema else list(schema.get("enum", []))
    if not all(value is None or isinstance(value, str) for value in values):
        return False
    parts: list[Any] = [schema[key] for key in _SUBSCHEMAS if key in schema]
    for key in _SUBSCHEMA_MAPS:
        parts += list(schema.get(key, {}).values())
    for key in _SUBSCHEMA_LISTS:
        parts += list(schema.get(key, []))
    return all(_portable(part) for part in parts)


@dataclass(frozen=True, slots=True)
class Violation:
    path: str  # JSON path into the payload, `$.items[2].sku`
    message: str


def canonical(document: Any) -> str:
    """The stored form of a schema: compact JSON with sorted keys."""
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()


def check_schema(document: Any) -> None:
    """InvalidBody unless `document` is a valid draft 2020-12 schema."""
    if not isinstance(document, dict | bool):
        raise InvalidBody("schema must be a JSON Schema (draft 2020-12) object")
    declared = document.get("$schema") if isinstance(document, dict) else None
    if declared is not None and "2020-12" not in str(declared):
        raise InvalidBody(f"schema: only draft 2020-12 is supported, not {declared}")
    try:
        Draft202012Validator.check_schema(document)
    except SchemaError as error:
        where = "/".join(str(part) for part in error.path) or "(root)"
        raise InvalidBody(f"schema is not valid JSON Schema at {where}: {error.message}") from None


def new_schema_id(tenant: str, channel: str, version: int, text: str) -> str:
    """A short, URL-safe id naming one version of one channel's schema."""
    digest = hashlib.sha256(f"{tenant}\x00{channel}\x00{version}\x00{text}".encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).decode().rstrip("=")


def _checker(schema_id: str, text: str) -> _Checker:
    checker = _CHECKERS.get(schema_id)
    if checker is None:
        document = orjson.loads(text)
        fast = None
        if _portable(document):
            try:
                fast = fastjsonschema.compile(document, use_default=False, use_formats=False)
            except Exception:  # jsonschema alone, then: it accepted the schema
                fast = None
        checker = _Checker(Draft202012Validator(document), fast)
        _CHECKERS[schema_id] = checker
        if len(_CHECKERS) > _VALIDATOR_CACHE:
            _CHECKERS.popitem(last=False)
    else:
        _CHECKERS.move_to_end(schema_id)
    return checker


def violations(schema_id: str, text: str, payload: Any) -> list[Violation]:
    """Every way `payload` breaks the schema (at most 100), ordered by path."""
    checker = _checker(schema_id, text)
    if checker.fast is not None:
        try:
            checker.fast(payload)
            return []
        except fastjsonschema.JsonSchemaException:
            pass  # jsonschema says why (or, where the two differ, that it is fine after all)
    found = []
    for error in checker.exact.iter_errors(payload):
        order = tuple(
            (0, part, "") if isinstance(part, int) else (1, 0, part) for part in error.absolute_path
        )
        found.append((order, Violation(error.json_path, error.message)))
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


def compatibility_problems(old: Any, new: Any, path: str = "$") -> list[str]:
    """Why some payload valid under `old` may be refused by `new`; empty when none can be.
    Keywords this check does not understand count as a problem when they change (the caller
    may force the change)."""
    old_schema, new_schema = _as_dict(old), _as_dict(new)
    if old_schema is None:
        return []  # nothing was accepted before
    if new_schema is None:
        return [f"{path}: the new schema accepts nothing"]
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
    problems += _value_problems(old_schema, new_schema, path)
    problems += _bound_problems(old_schema, new_schema, path)
    problems += _object_problems(old_schema, new_schema, path)
    if "items" in new_schema:
        problems += compatibility_problems(
            old_schema.get("items", True), new_schema["items"], f"{path}[*]"
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


def _normalised(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # 1.0 and 1 are one JSON number
    if isinstance(value, list):
        return [_normalised(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalised(item) for key, item in value.items()}
    return value


def _json(value: Any) -> str:
    """A value's JSON identity: `true` and `1` differ, as JSON Schema says, and 1.0 equals 1."""
    return orjson.dumps(_normalised(value), option=orjson.OPT_SORT_KEYS).decode()


def _value_problems(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    allowed_before: list[Any] | None = None
    if "const" in old:
        allowed_before = [old["const"]]
    elif "enum" in old:
        allowed_before = list(old["enum"])
    allowed_now: list[Any] | None = None
    if "const" in new:
        allowed_now = [new["const"]]
    if "enum" in new:
        enum = [_json(value) for value in new["enum"]]
        if allowed_now is None:
            allowed_now = list(new["enum"])
        else:
            allowed_now = [value for value in allowed_now if _json(value) in enum]
    if allowed_now is None:
        return []
    if allowed_before is None:
        return [f"{path}: values are now limited to {orjson.dumps(allowed_now).decode()}"]
    still = {_json(value) for value in allowed_now}
    lost = [value for value in allowed_before if _json(value) not in still]
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


def _object_problems(old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> list[str]:
    problems = []
    added = sorted(set(new.get("required", ())) - set(old.get("required", ())))
    problems += [f"{path}: property '{name}' became required" for name in added]
    old_properties: Mapping[str, Any] = old.get("properties", {})
    new_properties: Mapping[str, Any] = new.get("properties", {})
    old_additional = old.get("additionalProperties", True)
    new_additional = new.get("additionalProperties", True)
    for name, schema in new_properties.items():
        if name in old_properties:
            problems += compatibility_problems(old_properties[name], schema, f"{path}.{name}")
            continue
        # A newly declared property was governed by the old additionalProperties.
        found = compatibility_problems(old_additional, schema, f"{path}.{name}")
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
            problems += compatibility_problems(schema, new_additional, f"{path}.{name}")
    if new_additional is not True and old_additional is True:
        if new_additional is False:
            problems.append(
                f"{path}: additionalProperties is now false: undeclared properties are refused"
            )
        else:
            problems += compatibility_problems(True, new_additional, f"{path}.*")
    elif new_additional is not True and old_additional is not False:
        problems += compatibility_problems(old_additional, new_additional, f"{path}.*")
    return problems
