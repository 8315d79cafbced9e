"""Schema patterns run on google-re2's program class, which is private to that package: the
installed version must have it (pyproject.toml pins the versions known to), and without it
every pattern is refused, never run on a backtracking engine."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace
from typing import Any

import pytest
import re2

from app import schema_meta, schema_patterns
from app.errors import InvalidBody, UnusableSchema
from app.schema_patterns import PatternRefused, compile_pattern, re2_binding
from app.schemas import SchemaValidator, canonical, check_schema


def test_the_installed_google_re2_has_the_interface_patterns_run_on() -> None:
    assert re2_binding() is not None, (
        f"google-re2 {version('google-re2')} lacks re2._re2.RE2 or a member of it that "
        "app/schema_patterns.py uses: every schema pattern is refused on it. Adapt that module "
        "to this version, or keep google-re2 within the range pyproject.toml pins."
    )
    catastrophic = compile_pattern("^(a+)+$")
    assert catastrophic.search("a" * 50)
    assert not catastrophic.search("a" * 50 + "!")


def _program(**members: Any) -> SimpleNamespace:
    everything: dict[str, Any] = {
        "Anchor": SimpleNamespace(UNANCHORED=0),
        "Match": print,
        "ProgramSize": print,
        "ok": print,
        "error": print,
    }
    everything.update(members)
    return SimpleNamespace(**{name: value for name, value in everything.items() if value})


@pytest.mark.parametrize(
    "binding",
    [
        SimpleNamespace(),  # no _re2 at all
        SimpleNamespace(_re2=SimpleNamespace()),  # no RE2 class
        SimpleNamespace(_re2=SimpleNamespace(RE2=_program(Anchor=None))),
        SimpleNamespace(_re2=SimpleNamespace(RE2=_program(Anchor=SimpleNamespace()))),
        SimpleNamespace(_re2=SimpleNamespace(RE2=_program(ProgramSize=None))),
        SimpleNamespace(_re2=SimpleNamespace(RE2=_program(Match="not callable"))),
    ],
    ids=["module", "class", "anchors", "unanchored", "program-size", "match"],
)
def test_a_google_re2_without_that_interface_is_noticed(
    monkeypatch: pytest.MonkeyPatch, binding: SimpleNamespace
) -> None:
    monkeypatch.setattr(schema_patterns, "re2", binding)

    assert re2_binding() is None


def test_the_complete_interface_is_recognised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        schema_patterns, "re2", SimpleNamespace(_re2=SimpleNamespace(RE2=_program()))
    )

    assert re2_binding() is not None


def test_without_that_interface_every_pattern_is_refused_and_none_runs_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(schema_patterns, "_BINDING", None)
    monkeypatch.setattr(re2, "Options", None)  # nothing of google-re2 is reached either
    # As schema_meta finds itself when it is imported without it: its own patterns uncompiled.
    monkeypatch.setattr(schema_meta, "_PATTERNS", {})
    monkeypatch.setattr(schema_meta, "_FAST", None)

    with pytest.raises(PatternRefused, match="google-re2"):
        compile_pattern("^a+$")
    with pytest.raises(InvalidBody, match=r"'\^a\+\$' at pattern cannot be used: .*google-re2"):
        check_schema({"type": "string", "pattern": "^a+$"})
    with pytest.raises(InvalidBody, match=r"cannot be checked at properties/a: .*google-re2"):
        check_schema({"properties": {"a": {"$anchor": "a"}}})  # the metaschema's pattern
    check_schema({"type": "string", "maxLength": 3})  # schemas without patterns are fine
    stored = canonical({"type": "string", "pattern": "^a+$"})  # defined on another node
    with pytest.raises(UnusableSchema, match="google-re2"):
        SchemaValidator.build("stored-on-a-supported-node", stored).violations("aaa")
