"""Request bodies from the command line: ``--set KEY.PATH=VALUE`` assignments merged with the
options that name a body field, and hints for --set values the server refuses for their JSON
type."""

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, NoReturn

import typer

from convlab_client.client import ApiError, Json

Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="A spec override, e.g. training.epochs=10 (JSON if it parses, else text); repeatable.",
    ),
]
Options = dict[str, tuple[str, Any]]
"""Options naming body fields: ``{"--epochs": ("training.epochs", 4)}``; None: not given."""


def json_value(text: str) -> Any:
    """``text`` as JSON when it parses (10, 0.5, true, [32, 64], null), else as a string."""

    def refuse(constant: str) -> NoReturn:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def assignments(sets: list[str] | None) -> list[tuple[str, str]]:
    """Each ``key.path=value`` as its dotted path and its text; a usage error if malformed."""
    parsed = []
    for assignment in sets or []:
        path, equals, text = assignment.partition("=")
        path = path.strip()
        if not equals or not all(path.split(".")):
            raise typer.BadParameter(f"{assignment!r} is not KEY.PATH=VALUE", param_hint="--set")
        parsed.append((path, text))
    return parsed


def request_body(sets: list[str] | None, options: Options) -> Json:
    """The --set assignments (later ones winning) with the given options merged in; an option
    and a --set (or two options) of the same field, or one inside the other, is a usage error
    naming both."""
    given = [(flag, path, value) for flag, (path, value) in options.items() if value is not None]
    sources = [(flag, path) for flag, path, _ in given]
    sources += [(f"--set {path}", path) for path, _ in assignments(sets)]
    for index, (flag, path) in enumerate(sources[: len(given)]):
        for other, other_path in sources[index + 1 :]:
            if _overlap(path, other_path):
                raise typer.BadParameter(f"{flag} and {other} both set {path}; give one of them.")
    body: Json = {}
    for path, text in assignments(sets):
        _put(body, path, json_value(text))
    for _, path, value in given:
        _put(body, path, value)
    return body


def _overlap(path: str, other: str) -> bool:
    """Whether two dotted paths name the same field, or one a field inside the other."""
    return path == other or other.startswith(f"{path}.") or path.startswith(f"{other}.")


def _put(body: Json, path: str, value: Any) -> None:
    """Set a dotted path of nested dicts; a usage error if a prefix already holds a value."""
    keys = path.split(".")
    node = body
    for depth, key in enumerate(keys[:-1], 1):
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            prefix = ".".join(keys[:depth])
            raise typer.BadParameter(f"{prefix} was set to a value, not keys", param_hint="--set")
    node[keys[-1]] = value


def _list_hint(path: str, text: str) -> str:
    items = ",".join(item for item in re.split(r"[\s,;]+", text.strip("[]() ")) if item)
    return f"{path} takes a JSON list: write --set {path}=[{items}]."


def _bool_hint(path: str, text: str) -> str:
    guess = "false" if text.strip().lower() in {"no", "n", "off", "0", "false"} else "true"
    return f"{path} takes JSON true or false: write --set {path}={guess}."


HINTS: dict[str, Callable[[str, str], str]] = {"list_type": _list_hint, "bool_type": _bool_hint}
"""A hint by the type of a 422 entry, given the field's path and the text written for it."""


def explain(error: ApiError, sets: list[str] | None) -> str:
    """The error's sentence, with a hint naming the JSON form for each --set value the server
    refused for not being a list or a boolean."""
    written = dict(assignments(sets))
    hints = []
    for entry in error.errors:
        path = ".".join(str(part) for part in entry.get("loc", [])[1:])  # after "body"
        hint = HINTS.get(entry.get("type", ""))
        if hint and path in written:
            hints.append(hint(path, written[path]))
    return " ".join([f"{str(error).rstrip('.')}.", *hints]) if hints else str(error)
