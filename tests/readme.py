"""The README's ``console`` blocks as commands and the output they show, its ``python`` blocks
as programs, and the comparison of that output with a real run's: status codes, field names,
headers, flags and words must match; numbers, ids and times may differ.

Each command is a ``$ `` line (with ``\\`` continuation lines), its output the lines up to the
next command; a ``python`` block is one command, its whole text, showing no output. Every
command must exit 0. An HTML comment right before a block steers it:
``<!-- readme-test: skip, WHY -->`` leaves it out; ``<!-- readme-test: fresh -->`` runs it on
experiments submitted just before it rather than on finished ones;
``<!-- readme-test: fails -->`` says that each of its commands shows an error, and so must exit
non-zero.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ID = re.compile(r"\b[0-9a-f]{32}\b")
NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?!\d)")
"""A number with its sign, also one with a unit (``0.24s``), but not one inside a word
(``epoch3``): a difference that is noise may come out -0.004 or +0.004 on another run; its
verdict, ``(noise)``, is the text compared."""
KEY = re.compile(r'"(\w+)":')
DIRECTIVE = re.compile(r"<!-- readme-test: (skip|fresh|fails)\b")
LANGUAGES = ("console", "python")


@dataclass
class Command:
    line: str
    """The command as typed (continuations joined)."""
    shown: list[str] = field(default_factory=list)
    """The output the README shows for it."""


@dataclass
class Block:
    number: int
    """Where the block starts in the README (1-based line)."""
    directive: str | None
    commands: list[Command]
    language: str = "console"
    """``console`` (shell commands) or ``python`` (one program)."""


def readme_blocks(text: str) -> Iterator[Block]:
    """Every ``console`` and ``python`` block of a markdown text, in order."""
    lines = text.splitlines()
    for start, line in enumerate(lines):
        language = line.strip().removeprefix("```")
        if not line.strip().startswith("```") or language not in LANGUAGES:
            continue
        before = lines[start - 1] if start else ""
        directive = DIRECTIVE.search(before)
        body = []
        for inner in lines[start + 1 :]:
            if inner.startswith("```"):
                break
            body.append(inner)
        commands = _commands(body) if language == "console" else [Command("\n".join(body))]
        yield Block(start + 1, directive.group(1) if directive else None, commands, language)


def _commands(body: list[str]) -> list[Command]:
    commands: list[Command] = []
    continuing = False
    for line in body:
        if continuing:
            commands[-1].line += " " + line.strip().removesuffix("\\").strip()
        elif line.startswith("$ "):
            commands.append(Command(line[2:].removesuffix("\\").strip()))
        elif commands:
            commands[-1].shown.append(line)
        continuing = line.endswith("\\")
    return commands


def normalized(line: str) -> str:
    """A line with ids, numbers and runs of blanks made alike (a leading status code kept)."""
    line = ID.sub("<id>", line)
    status = re.match(r"(HTTP/1\.1 )?\d{3}\b", line)
    head, rest = (line[: status.end()], line[status.end() :]) if status else ("", line)
    return " ".join((head + NUMBER.sub("#", rest)).split())


def _json_of(line: str) -> tuple[str, str] | None:
    """(prefix, JSON text) of a line that shows a JSON value, as in ``data: {...}``."""
    match = re.match(r"^(data: )?([\[{].*)$", line)
    return (match.group(1) or "", match.group(2)) if match else None


def shape(value: Any) -> Any:
    """A JSON value's field names, nested; other values are alike."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value and isinstance(value[0], dict | list) else []
    return None


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def same_fields(shown: Any, actual: Any, path: str = "") -> list[str]:
    """How the shown JSON's field names differ from the actual's (nulls match anything)."""
    if shown is None or actual is None:
        return []
    if isinstance(shown, dict) and isinstance(actual, dict):
        unserved, unshown = shown.keys() - actual.keys(), actual.keys() - shown.keys()
        problems = [f"{path}.{key} is shown but not served" for key in sorted(unserved)]
        problems += [f"{path}.{key} is served but not shown" for key in sorted(unshown)]
        for key in shown.keys() & actual.keys():
            problems += same_fields(shown[key], actual[key], f"{path}.{key}")
        return problems
    if isinstance(shown, list) and isinstance(actual, list):
        return same_fields(shown[0], actual[0], f"{path}[0]") if shown and actual else []
    if isinstance(shown, dict | list) != isinstance(actual, dict | list):
        return [f"{path} is shown as {type(shown).__name__} but served as {type(actual).__name__}"]
    return []


def differences(shown: list[str], actual: list[str]) -> list[str]:
    """What of the shown output the actual output lacks, in order: every shown line must be
    found in the actual lines after the one the previous shown line matched. A JSON line is
    matched with the next JSON line and compared by field names (all of them, or those named
    where the README elides with ``...``); other lines by ``normalized`` text; a line of only
    an elision (``...`` outside JSON) matches nothing and skips nothing."""
    problems: list[str] = []
    position = 0
    for line in shown:
        found = _find(line, actual, position)
        if isinstance(found, str):
            problems.append(found)
        elif found is not None:
            position = found + 1
    return problems


def _find(line: str, actual: list[str], start: int) -> int | str | None:
    """The index of the actual line ``line`` matches from ``start``, a problem, or None."""
    shown_json = _json_of(line)
    if shown_json is not None:
        for index in range(start, len(actual)):
            served = _json_of(actual[index])
            if served is not None and served[0] == shown_json[0]:
                problem = _json_problem(shown_json[1], served[1])
                return problem if problem else index
        return f"no JSON line like {line[:80]!r} after line {start} of the output"
    if "..." in line:
        return None
    wanted = normalized(line)
    if not wanted:
        return None
    for index in range(start, len(actual)):
        if normalized(actual[index]) == wanted:
            return index
    return f"no line like {line!r} (normalized {wanted!r}) after line {start} of the output"


def _json_problem(shown: str, served: str) -> str | None:
    try:
        value = json.loads(served)
    except json.JSONDecodeError:
        return f"the server's line is not JSON: {served[:80]!r}"
    try:
        problems = same_fields(shape(json.loads(shown)), shape(value))
    except json.JSONDecodeError:  # elided: only the names it shows
        missing = set(KEY.findall(shown)) - _keys(value)
        problems = [f"{key} is shown but not served" for key in sorted(missing)]
    return "; ".join(problems) or None
