"""Reading a Dockerfile and a .dockerignore without Docker: instructions, stages, exec forms and
which paths of the build context are sent.

The parser follows the Dockerfile reference where this repository's Dockerfile needs it: lines
ending in a backslash continue, comment lines (also inside a continuation) are dropped, the
instruction is the first word (any case), `FROM image AS name` opens a stage, `${ARG}` in FROM
takes the ARG's default from before the first FROM.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DockerIgnore",
    "Instruction",
    "Stage",
    "exec_form",
    "parse_dockerfile",
    "parse_env",
    "split_flags",
]


@dataclass(frozen=True, slots=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, ...
    arguments: str  # the rest of the (joined) line
    line: int  # where it starts, 1-based


@dataclass(slots=True)
class Stage:
    base: str  # the image, ARG defaults substituted
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Physical lines joined at trailing backslashes; comment and blank lines dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        lines.append((start, " ".join(pending)))
    return lines


def _substitute(text: str, arguments: dict[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        return arguments.get(name, "")

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order; instructions before the first FROM (global ARGs)
    only feed the FROM lines."""
    global_arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for line, logical in _logical_lines(text):
        keyword, _, rest = logical.partition(" ")
        instruction = Instruction(keyword.upper(), rest.strip(), line)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.arguments.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(_substitute(words[0], global_arguments), name))
        elif not stages:
            assert instruction.keyword == "ARG", f"line {line}: only ARG may precede FROM"
            arg_name, _, default = instruction.arguments.partition("=")
            global_arguments[arg_name.strip()] = default.strip()
        else:
            stages[-1].instructions.append(instruction)
    return stages


def exec_form(arguments: str) -> list[str]:
    """The JSON array of an exec-form CMD, ENTRYPOINT or HEALTHCHECK CMD; fails on shell form."""
    parsed = json.loads(arguments)
    assert isinstance(parsed, list), f"not an exec form: {arguments}"
    assert all(isinstance(word, str) for word in parsed)
    return [str(word) for word in parsed]


def split_flags(arguments: str) -> tuple[dict[str, str], str]:
    """Leading `--flag=value` options of an instruction, and the rest."""
    flags: dict[str, str] = {}
    rest = arguments
    while rest.startswith("--"):
        flag, _, rest = rest.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        rest = rest.lstrip()
    return flags, rest


def parse_env(instruction: Instruction) -> dict[str, str]:
    """Names and values set by an ENV or ARG (`K=V K2=V2`, or the legacy `ENV K V`)."""
    words = shlex.split(instruction.arguments)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    pairs = (word.partition("=") for word in words)
    return {name: value for name, _, value in pairs}


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    out = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
            continue
        if pattern.startswith("**", index):
            out.append(".*")
            index += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.index("]", index)
            out.append(pattern[index : end + 1].replace("[!", "[^"))
            index = end
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out))


@dataclass(frozen=True, slots=True)
class DockerIgnore:
    """The rules of a .dockerignore: the last matching pattern decides, `!` re-includes, and a
    pattern that matches a folder excludes everything below it."""

    rules: tuple[tuple[bool, re.Pattern[str]], ...]

    @classmethod
    def parse(cls, text: str) -> DockerIgnore:
        rules = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            cleaned = line.lstrip("!").strip().strip("/")
            cleaned = re.sub(r"/+", "/", cleaned).removeprefix("./")
            rules.append((keep, _pattern(cleaned)))
        return cls(tuple(rules))

    def excludes(self, path: str) -> bool:
        """Whether `path` (relative to the context, `/`-separated) stays out of the context."""
        parts = Path(path).parts
        prefixes = ["/".join(parts[: end + 1]) for end in range(len(parts))]
        excluded = False
        for keep, pattern in self.rules:
            if any(pattern.fullmatch(prefix) for prefix in prefixes):
                excluded = not keep
        return excluded
