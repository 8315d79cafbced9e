"""Schema patterns (`pattern`, `patternProperties`) on RE2, a linear-time engine: matching a
text costs time proportional to its length whatever the pattern, so no payload can make
validation backtrack (`^(a+)+$` against `aaaa…!` is as quick as against `a`).

Patterns are ECMA-262 regular expressions as JSON Schema says, run by RE2 as they are, with
ECMA's `\\uXXXX` (surrogate pairs included), `\\u{X…}` and `\\cX` escapes rewritten to RE2's
`\\x{…}`. A pattern RE2 cannot run in linear time — lookahead and lookbehind, backreferences —
or whose compiled form exceeds `MAX_PATTERN_MEMORY` is refused, saying why. Where ECMA-262 and
RE2 differ otherwise: `\\s` is ASCII whitespace without `\\v` (ECMA: any Unicode space), `.`
matches `\\r`, U+2028 and U+2029 (ECMA: not), `$` is the end of the text (as ECMA, unlike
Python's `re`), `\\d`, `\\w` and `\\b` are ASCII (as ECMA), and `\\p{…}` classes work."""

from __future__ import annotations

import re
from typing import Any, NamedTuple, Protocol

import re2

__all__ = [
    "MAX_PATTERN_MEMORY",
    "Pattern",
    "PatternRefused",
    "compile_pattern",
    "pattern_weight",
    "re2_binding",
]

#: RE2's memory budget for one compiled pattern (its program and its matching caches).
MAX_PATTERN_MEMORY = 1 << 20
#: Bytes of memory per RE2 instruction, for weighing a compiled pattern.
BYTES_PER_INSTRUCTION = 16

_ECMA_ESCAPE = re.compile(
    r"\\(?:u([0-9A-Fa-f]{4})(?:\\u([0-9A-Fa-f]{4}))?|u\{([0-9A-Fa-f]{1,6})\}|c([A-Za-z])|(.))",
    re.DOTALL,
)
_LOOKAROUND = re.compile(r"\(\?<?[=!]")
_BACKREFERENCE = re.compile(r"\\(?:[1-9]|k<)")


class Pattern(Protocol):
    """A compiled pattern: `search` finds a match anywhere in the text, or returns None."""

    def search(self, text: str) -> Any: ...


class PatternRefused(ValueError):
    """A pattern RE2 cannot run; the message says why, for the schema's author."""


def _escape(match: re.Match[str]) -> str:
    high, low, braced, control, other = match.groups()
    if other is not None:
        return match.group(0)  # RE2 reads every other escape as ECMA does, or refuses it
    if control is not None:
        return f"\\x{{{ord(control.upper()) % 32:02X}}}"
    if braced is not None:
        return f"\\x{{{braced}}}"
    first = int(high, 16)
    if low is not None:
        second = int(low, 16)
        if 0xD800 <= first <= 0xDBFF and 0xDC00 <= second <= 0xDFFF:
            return f"\\x{{{0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00):X}}}"
        return f"\\x{{{first:X}}}\\x{{{second:X}}}"
    return f"\\x{{{first:X}}}"


def _why(pattern: str, error: str) -> str:
    if _LOOKAROUND.search(pattern):
        return "it uses lookahead or lookbehind ((?=, (?!, (?<=, (?<!), which RE2 cannot run"
    if _BACKREFERENCE.search(pattern):
        return r"it uses a backreference (\1, \k<name>), which RE2 cannot run"
    if "too large" in error:
        return (
            f"it compiles to more than {MAX_PATTERN_MEMORY // 1024} KiB (large counted "
            "repetitions such as {1,100} of a wide class); bound the length with maxLength instead"
        )
    return f"RE2 cannot compile it: {error}"


class _Binding(NamedTuple):
    program: Any  # re2._re2.RE2
    unanchored: Any  # re2._re2.RE2.Anchor.UNANCHORED


def re2_binding() -> _Binding | None:
    """google-re2's program class, `re2._re2.RE2`, with every member used here; None when the
    installed google-re2 lacks one. It is private to google-re2 (hence the version range
    pyproject.toml pins): without it every pattern is refused, never run on another engine."""
    program = getattr(getattr(re2, "_re2", None), "RE2", None)
    unanchored = getattr(getattr(program, "Anchor", None), "UNANCHORED", None)
    members = ("Match", "ProgramSize", "ok", "error")
    if unanchored is None or not all(callable(getattr(program, name, None)) for name in members):
        return None
    return _Binding(program, unanchored)


_BINDING = re2_binding()
_UNSUPPORTED = (
    "this node's RE2 library (google-re2) is a version replaybus does not support, so it "
    "runs no pattern"
)


class _Compiled:
    """An RE2 program that only says whether it matches. The `re2` module's own objects are
    not used: `re2.compile` keeps the 128 latest patterns in a module-wide cache, outside any
    bound of ours, and their `search` builds a match and maps its offsets back to characters,
    ten times the cost of matching a short text."""

    __slots__ = ("_program", "_unanchored", "size")

    def __init__(self, program: Any, unanchored: Any) -> None:
        self._program = program
        self._unanchored = unanchored
        self.size: int = program.ProgramSize()

    def search(self, text: str) -> bool:
        encoded = text.encode()
        found = self._program.Match(self._unanchored, encoded, 0, len(encoded))
        return bool(found[0] != _NO_MATCH)


_NO_MATCH = (-1, -1)


def compile_pattern(pattern: str) -> Pattern:
    """`pattern` compiled by RE2; PatternRefused saying why when it cannot be (or when the
    installed google-re2 lacks what this module uses: see `re2_binding`).

    Each call compiles anew: the caller keeps what it needs, so what a tenant's patterns cost
    in memory stays with the validators that use them."""
    if _BINDING is None:
        raise PatternRefused(_UNSUPPORTED)
    options = re2.Options()
    options.max_mem = MAX_PATTERN_MEMORY
    options.log_errors = False  # a tenant's bad pattern is its answer, not a node log line
    options.never_capture = True  # whether it matches is all that is asked
    program = _BINDING.program(_ECMA_ESCAPE.sub(_escape, pattern).encode(), options)
    if not program.ok():
        error = program.error()
        reason = error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        raise PatternRefused(_why(pattern, reason))
    return _Compiled(program, _BINDING.unanchored)


def pattern_weight(compiled: Pattern) -> int:
    """Approximate bytes a compiled pattern holds (its program, and as much again for the
    matching caches it grows)."""
    size = getattr(compiled, "size", None)
    return 2 * BYTES_PER_INSTRUCTION * size if isinstance(size, int) else MAX_PATTERN_MEMORY
