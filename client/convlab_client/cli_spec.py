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
Dataset = Annotated[str | None, typer.Option(help="dataset.name, e.g. digits.")]
Epochs = Annotated[int | None, typer.Option(help="training.epochs.")]
BatchSize = Annotated[int | None, typer.Option(help="training.batch_size.")]
Optimizer = Annotated[
    str | None, typer.Option(help="optimizer.name: sgd, momentum, rmsprop, adam or adamw.")
]
LearningRate = Annotated[float | None, typer.Option("--lr", help="optimizer.learning_rate.")]


def spec_options(
    dataset: str | None,
    epochs: int | None,
    batch_size: int | None,
    optimizer: str | None,
    lr: float | None,
) -> Options:
    """The shortcut options ``submit`` and ``study submit`` share, by the spec fields they
    set."""
    return {
        "--dataset": ("dataset.name", dataset),
        "--epochs": ("training.epochs", epochs),
        "--batch-size": ("training.batch_size", batch_size),
        "--optimizer": ("optimizer.name", optimizer),
        "--lr": ("optimizer.learning_rate", lr),
    }


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
    """The --set assignments and the given options as one body, by plain nested assignment: in
    any order they make the same body, and two of them that set the same field, or one a field
    inside the other's, are a usage error naming both."""
    given = [(flag, path, value) for flag, (path, value) in options.items() if value is not None]
    given += [(f"--set {path}", path, json_value(text)) for path, text in assignments(sets)]
    for index, (flag, path, _) in enumerate(given):
        for other, other_path, _ in given[index + 1 :]:
            if _overlap(path, other_path):
                raise _clash(flag, path, other, other_path)
    body: Json = {}
    for _, path, value in given:
        *parents, last = path.split(".")
        node = body
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return body


def _overlap(path: str, other: str) -> bool:
    """Whether two dotted paths name the same field, or one a field inside the other."""
    return path == other or other.startswith(f"{path}.") or path.startswith(f"{other}.")


def _clash(flag: str, path: str, other: str, other_path: str) -> typer.BadParameter:
    """Why two sources of overlapping fields cannot both be given (options come first)."""
    if not (flag.startswith("--set ") and other.startswith("--set ")):
        return typer.BadParameter(f"{flag} and {other} both set {path}; give one of them.")
    if path == other_path:
        return typer.BadParameter(f"{path} is set twice; give it once", param_hint="--set")
    outer, inner = sorted((path, other_path), key=len)
    message = f"{outer} was set to a value, not keys; set {outer} or {inner}, not both"
    return typer.BadParameter(message, param_hint="--set")


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
