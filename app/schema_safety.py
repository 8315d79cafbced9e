"""What a channel schema may contain, so that validating payloads against it is safe: checked
when a schema is defined, and again (without the size limits) when a node first uses a schema
stored before these rules.

- References (`$ref`, `$dynamicRef`) stay within the schema: `#/json/pointer` to a subschema,
  or `#anchor`; nothing is ever fetched. Only the root may have an `$id` (it names the
  document) or a `$schema`.
- Every pattern runs on RE2 (see `schema_patterns`).
- No reference loops back to where it started without going into the payload's members
  (validation would never end); references into members (a tree of nodes) are fine.
- `SchemaLimits`: the encoded size, the nesting depth, and how many subschemas validation may
  apply to one value once references are followed (a chain of `allOf: [ref, ref]` doubles per
  link)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from app.schema_keywords import SUBSCHEMA_KEYWORDS, children, with_children
from app.schema_patterns import Pattern, PatternRefused, compile_pattern
from app.settings import Settings

__all__ = [
    "Location",
    "SchemaLimits",
    "SchemaRefused",
    "Shape",
    "cycle_problem",
    "expansion_problem",
    "inlined",
    "nesting_problem",
    "shape_of",
    "subschemas",
    "where",
]

Location = tuple[str | int, ...]

_DEFAULTS: dict[str, Any] = {spec.name: spec.default for spec in dataclasses.fields(Settings)}


@dataclass(frozen=True, slots=True)
class SchemaLimits:
    """How large a schema may be: `max_size` bytes of compact JSON, `max_depth` levels of
    nested objects and arrays, `max_subschemas` subschemas once references are followed.
    By default, the defaults of the settings `of` reads."""

    max_size: int = _DEFAULTS["max_schema_size"]
    max_depth: int = _DEFAULTS["max_schema_depth"]
    max_subschemas: int = _DEFAULTS["max_schema_subschemas"]

    @classmethod
    def of(cls, settings: Settings) -> SchemaLimits:
        return cls(
            settings.max_schema_size, settings.max_schema_depth, settings.max_schema_subschemas
        )


class SchemaRefused(ValueError):
    """A schema breaks one of the rules; the message names where, for its author."""


def where(location: Location) -> str:
    """A location inside a schema as the refusals name it: `properties/a/items`."""
    return "/".join(str(part) for part in location) or "(root)"


_REFERENCES = ("$ref", "$dynamicRef")
_ANCHORS = ("$anchor", "$dynamicAnchor")


@dataclass(frozen=True, slots=True)
class _Edge:
    target: Location
    same_value: bool
    reference: Location | None = None  # the `$ref` that makes this edge, if one does


@dataclass(slots=True)
class Shape:
    """A schema's subschemas as validation walks them: each by location, the edges from each
    to the subschemas it applies, and every pattern compiled."""

    nodes: dict[Location, Any] = field(default_factory=dict)
    edges: dict[Location, list[_Edge]] = field(default_factory=dict)
    targets: dict[Location, list[Location]] = field(default_factory=dict)  # of its references
    patterns: dict[str, Pattern] = field(default_factory=dict)


def nesting_problem(document: Any, max_depth: int) -> str | None:
    """Why `document` nests objects and arrays deeper than `max_depth`, if it does."""
    pending: list[tuple[Any, Location]] = [(document, ())]
    while pending:
        value, location = pending.pop()
        if isinstance(value, dict | list) and len(location) >= max_depth:
            return (
                f"schema nests objects and arrays deeper than {max_depth} levels "
                f"(at {where(location)})"
            )
        if isinstance(value, dict):
            pending.extend((part, (*location, key)) for key, part in value.items())
        elif isinstance(value, list):
            pending.extend((part, (*location, index)) for index, part in enumerate(value))
    return None


def _compile(pattern: str, location: Location, shape: Shape) -> None:
    if pattern in shape.patterns:
        return
    try:
        shape.patterns[pattern] = compile_pattern(pattern)
    except PatternRefused as refused:
        raise SchemaRefused(
            f"schema: the pattern {pattern!r} at {where(location)} cannot be used: {refused}"
        ) from None


def _pointer(document: Any, fragment: str) -> Location | None:
    """Where a JSON pointer leads, as `referencing` follows it; None if nowhere."""
    if not fragment:
        return ()
    node = document
    location: list[str | int] = []
    for segment in unquote(fragment[1:]).split("/"):
        if isinstance(node, list):
            try:
                index = int(segment)
                part = node[index]
            except (ValueError, IndexError):
                return None
            location.append(index if index >= 0 else index + len(node))
            node = part
        elif isinstance(node, dict):
            key = segment.replace("~1", "/").replace("~0", "~")
            if key not in node:
                return None
            node = node[key]
            location.append(key)
        else:
            return None
    return tuple(location)


def subschemas(document: Any) -> dict[Location, Any]:
    """Every subschema of `document` (objects and booleans where a subschema belongs), by
    location, the root first."""
    found: dict[Location, Any] = {}
    pending: list[tuple[Location, Any]] = [((), document)]
    while pending:
        location, node = pending.pop()
        if isinstance(node, dict | bool):
            found[location] = node
        if isinstance(node, dict):
            pending.extend(((*location, *step), part) for _, step, part in children(node))
    return found


def shape_of(document: Any, nodes: dict[Location, Any]) -> Shape:
    """The shape of a schema whose subschemas (`nodes`, from `subschemas`) are well formed;
    SchemaRefused when a reference leaves the schema or leads to no subschema, an `$id` or
    `$schema` is not at the root, an anchor is defined twice, or a pattern cannot run."""
    shape = Shape(nodes=nodes)
    anchors: dict[str, Location] = {}
    references: list[tuple[Location, Location, str]] = []  # (subschema, keyword's, value)
    for location, node in nodes.items():
        edges = shape.edges.setdefault(location, [])
        if isinstance(node, bool):
            continue
        for keyword in ("$id", "$schema"):
            if keyword in node and location:
                raise SchemaRefused(
                    f"schema: {keyword} at {where((*location, keyword))}: only the root of a "
                    f"schema may have {keyword}"
                )
        for keyword in _REFERENCES:
            value = node.get(keyword)
            if value is None:
                continue
            if not value.startswith("#"):
                raise SchemaRefused(
                    f"schema: {keyword} at {where((*location, keyword))} refers to {value!r}, "
                    "outside the schema: only references within it ('#/$defs/name', '#anchor') "
                    "are allowed, and nothing is ever fetched"
                )
            references.append((location, (*location, keyword), value))
        for keyword in _ANCHORS:
            name = node.get(keyword)
            if name is not None and anchors.setdefault(name, location) != location:
                raise SchemaRefused(
                    f"schema: the anchor {name!r} is defined twice, at "
                    f"{where(anchors[name])} and {where(location)}"
                )
        if "pattern" in node:
            _compile(node["pattern"], (*location, "pattern"), shape)
        for pattern in node.get("patternProperties", {}):
            _compile(pattern, (*location, "patternProperties", pattern), shape)
        for keyword, step, part in children(node):
            applies = SUBSCHEMA_KEYWORDS[keyword].applies
            if isinstance(part, dict | bool) and applies != "never":
                edges.append(_Edge((*location, *step), applies == "value"))
    for location, at, value in references:
        fragment = value[1:]
        if fragment and not fragment.startswith("/"):
            target = anchors.get(fragment)
            if target is None:
                raise SchemaRefused(
                    f"schema: {at[-1]} at {where(at)} names the anchor {fragment!r}, which no "
                    "subschema defines"
                )
        else:
            target = _pointer(document, fragment)
        if target is None or target not in nodes:
            raise SchemaRefused(
                f"schema: {at[-1]} at {where(at)} points to {value!r}, which is not a "
                "subschema of this schema"
            )
        shape.edges[location].append(_Edge(target, True, at))
        shape.targets.setdefault(location, []).append(target)
    return shape


def cycle_problem(shape: Shape) -> str | None:
    """Why validation would never end, if a chain of references and in-place subschemas
    (`allOf`, `not`, ...) leads back to where it started."""
    state: dict[Location, int] = {}  # 1: on the current path, 2: done
    for start in shape.edges:
        if start in state:
            continue
        path: list[tuple[Location, Iterator[_Edge]]] = [(start, iter(shape.edges[start]))]
        state[start] = 1
        while path:
            location, edges = path[-1]
            edge = next((e for e in edges if e.same_value), None)
            if edge is None:
                state[location] = 2
                path.pop()
                continue
            seen = state.get(edge.target)
            if seen == 1:
                loop = [entry[0] for entry in path]
                loop = loop[loop.index(edge.target) :]
                reference = edge.reference or next(
                    (
                        e.reference
                        for here, after in zip(loop, [*loop[1:], edge.target], strict=True)
                        for e in shape.edges[here]
                        if e.target == after and e.reference is not None
                    ),
                    None,
                )
                named = where(reference) if reference is not None else where(location)
                return (
                    f"schema: the reference at {named} leads back to {where(edge.target)} "
                    "without going into the payload's members, so validation would never end"
                )
            if seen is None:
                state[edge.target] = 1
                path.append((edge.target, iter(shape.edges[edge.target])))
    return None


def expansion_problem(shape: Shape, max_subschemas: int) -> str | None:
    """Why the schema applies more than `max_subschemas` subschemas to one payload value once
    references are followed, if it does. A reference back into an enclosing subschema (a
    recursive schema) counts once: it applies to the payload's members, one level deeper."""
    size: dict[Location, int] = {}
    on_path: set[Location] = {()}
    path: list[tuple[Location, Iterator[_Edge], int]] = [((), iter(shape.edges[()]), 1)]
    while path:
        location, edges, total = path[-1]
        if total > max_subschemas:
            return (
                f"schema: the subschema at {where(location)} expands to more than "
                f"{max_subschemas} subschemas once its references are followed; refer to "
                "shared definitions less often"
            )
        edge = next(edges, None)
        if edge is None:
            path.pop()
            on_path.discard(location)
            size[location] = total
            if path:
                parent, parent_edges, parent_total = path[-1]
                path[-1] = (parent, parent_edges, parent_total + total)
        elif edge.target in on_path:
            path[-1] = (location, edges, total + 1)
        elif edge.target in size:
            path[-1] = (location, edges, total + size[edge.target])
        else:
            on_path.add(edge.target)
            path.append((edge.target, iter(shape.edges[edge.target]), 1))
    return None


class _NotInlined(Exception):
    pass


#: Keywords an inlined copy leaves out: references (replaced), what they named, and what
#: validation never applies.
_LEFT_OUT = frozenset(
    {
        "$ref",
        "$dynamicRef",
        "$defs",
        "definitions",
        "contentSchema",
        "$id",
        "$schema",
        "$anchor",
        "$dynamicAnchor",
    }
)


def inlined(shape: Shape, max_subschemas: int) -> Any | None:
    """The schema with each reference replaced by what it refers to (added to an `allOf`),
    which validates exactly as the schema does; None for a schema that recurses, or that
    expands to more than `max_subschemas` subschemas."""
    built: dict[Location, tuple[Any, int]] = {}
    on_path: set[Location] = set()

    def build(location: Location) -> tuple[Any, int]:
        if location in built:
            return built[location]
        node = shape.nodes[location]
        if isinstance(node, bool):
            return built.setdefault(location, (node, 1))
        if location in on_path:
            raise _NotInlined
        on_path.add(location)
        size = 1

        def part(at: Location) -> Any:
            nonlocal size
            copy, count = build(at)
            size += count
            if size > max_subschemas:
                raise _NotInlined
            return copy

        kept = {keyword: value for keyword, value in node.items() if keyword not in _LEFT_OUT}
        copy = with_children(kept, lambda step, _: part((*location, *step)))
        references = [part(target) for target in shape.targets.get(location, ())]
        if references:
            copy["allOf"] = [*copy.get("allOf", ()), *references]
        on_path.discard(location)
        return built.setdefault(location, (copy, size))

    try:
        return build(())[0]
    except (_NotInlined, RecursionError):
        return None
