"""Whether each subschema of a schema is well formed, by the draft 2020-12 metaschema laid flat.

The metaschema applies itself again to every subschema through `$dynamicRef`s, and jsonschema
pays a dozen reference lookups per subschema for that: checking a 64 KiB schema made of empty
subschemas took it over ten seconds. Here the metaschema is written out once without those
references, and applied to each subschema of the document on its own: every keyword's value is
checked, and where a value must be a subschema, only that it is an object or a boolean (it is
checked in its turn). Formats are annotations here, as they are for validation; patterns are
checked by compiling them on RE2 elsewhere. What this accepts is what jsonschema's own
`check_schema` accepts without a format checker (a test holds them together), but for the
insides of the obsolete `dependencies`, which nothing ever applies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import fastjsonschema

from app.schema_budget import ValidationBudget
from app.schema_patterns import PatternRefused, compile_pattern
from app.schema_validators import exact_validator, fast_validator, metered

__all__ = ["FLAT_METASCHEMA", "meta_problem"]

_SUBSCHEMA: dict[str, Any] = {"type": ["object", "boolean"]}
_SUBSCHEMAS: dict[str, Any] = {"type": "array", "minItems": 1, "items": _SUBSCHEMA}
_SUBSCHEMA_MAP: dict[str, Any] = {"type": "object", "additionalProperties": _SUBSCHEMA}
_TEXT: dict[str, Any] = {"type": "string"}
_ANCHOR: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z_][-A-Za-z0-9._]*$"}
_NUMBER: dict[str, Any] = {"type": "number"}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_FLAG: dict[str, Any] = {"type": "boolean"}
_TEXTS: dict[str, Any] = {"type": "array", "items": _TEXT, "uniqueItems": True}
_TYPE_NAME: dict[str, Any] = {
    "enum": ["array", "boolean", "integer", "null", "number", "object", "string"]
}

#: The draft 2020-12 metaschema and its vocabularies as one schema for a single subschema.
FLAT_METASCHEMA: dict[str, Any] = {
    "type": ["object", "boolean"],
    "properties": {
        # core
        "$id": {"type": "string", "pattern": "^[^#]*#?$"},
        "$schema": _TEXT,
        "$ref": _TEXT,
        "$anchor": _ANCHOR,
        "$dynamicRef": _TEXT,
        "$dynamicAnchor": _ANCHOR,
        "$vocabulary": {"type": "object", "additionalProperties": _FLAG},
        "$comment": _TEXT,
        "$defs": _SUBSCHEMA_MAP,
        # applicator
        "prefixItems": _SUBSCHEMAS,
        "items": _SUBSCHEMA,
        "contains": _SUBSCHEMA,
        "additionalProperties": _SUBSCHEMA,
        "properties": _SUBSCHEMA_MAP,
        "patternProperties": _SUBSCHEMA_MAP,
        "dependentSchemas": _SUBSCHEMA_MAP,
        "propertyNames": _SUBSCHEMA,
        "if": _SUBSCHEMA,
        "then": _SUBSCHEMA,
        "else": _SUBSCHEMA,
        "allOf": _SUBSCHEMAS,
        "anyOf": _SUBSCHEMAS,
        "oneOf": _SUBSCHEMAS,
        "not": _SUBSCHEMA,
        # unevaluated
        "unevaluatedItems": _SUBSCHEMA,
        "unevaluatedProperties": _SUBSCHEMA,
        # validation
        # As the metaschema says, but for `maxItems` (7 names at most: they are distinct), and
        # with the array's rules outside `anyOf`, which collects every error of a branch.
        "type": {
            "anyOf": [_TYPE_NAME, {"type": "array", "maxItems": 7}],
            "items": _TYPE_NAME,
            "minItems": 1,
            "uniqueItems": True,
        },
        "enum": {"type": "array"},
        "multipleOf": {"type": "number", "exclusiveMinimum": 0},
        "maximum": _NUMBER,
        "exclusiveMaximum": _NUMBER,
        "minimum": _NUMBER,
        "exclusiveMinimum": _NUMBER,
        "maxLength": _COUNT,
        "minLength": _COUNT,
        "pattern": _TEXT,
        "maxItems": _COUNT,
        "minItems": _COUNT,
        "uniqueItems": _FLAG,
        "maxContains": _COUNT,
        "minContains": _COUNT,
        "maxProperties": _COUNT,
        "minProperties": _COUNT,
        "required": _TEXTS,
        "dependentRequired": {"type": "object", "additionalProperties": _TEXTS},
        # meta-data, format-annotation, content
        "title": _TEXT,
        "description": _TEXT,
        "deprecated": _FLAG,
        "readOnly": _FLAG,
        "writeOnly": _FLAG,
        "examples": {"type": "array"},
        "format": _TEXT,
        "contentEncoding": _TEXT,
        "contentMediaType": _TEXT,
        "contentSchema": _SUBSCHEMA,
        # the metaschema's own, for keywords of earlier drafts
        "definitions": _SUBSCHEMA_MAP,
        "dependencies": {
            "type": "object",
            "additionalProperties": {"anyOf": [_SUBSCHEMA, _TEXTS]},
        },
        "$recursiveAnchor": _ANCHOR,
        "$recursiveRef": _TEXT,
    },
}

try:
    _PATTERNS = {pattern: compile_pattern(pattern) for pattern in ("^[^#]*#?$", _ANCHOR["pattern"])}
except PatternRefused:  # no pattern runs on this google-re2: `$id` and anchors cannot be checked
    _PATTERNS = {}
_FAST = fast_validator(FLAT_METASCHEMA, _PATTERNS) if _PATTERNS else None
_EXACT = exact_validator(FLAT_METASCHEMA)


def meta_problem(subschemas: Mapping[tuple[str | int, ...], Any]) -> str | None:
    """Why one of `subschemas` (by location) is not a well-formed draft 2020-12 subschema, if
    one is not: where, and the first thing wrong there."""
    for location, subschema in subschemas.items():
        if _FAST is not None:
            try:
                _FAST(subschema)
                continue
            except fastjsonschema.JsonSchemaException:
                pass
        try:
            with metered(ValidationBudget(1 << 62), _PATTERNS):
                error = next(iter(_EXACT.iter_errors(subschema)), None)
        except PatternRefused as refused:
            where = "/".join(str(part) for part in location) or "(root)"
            return f"schema cannot be checked at {where}: {refused}"
        if error is not None:
            where = "/".join(str(part) for part in (*location, *error.path)) or "(root)"
            return f"schema is not valid JSON Schema at {where}: {error.message}"
    return None
