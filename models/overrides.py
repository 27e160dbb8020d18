"""A request's overrides as one nested object: dotted keys and layers folded in any key order."""

from collections.abc import Iterator, Mapping
from itertools import pairwise
from typing import Any

from models.errors import SpecError, error_entry

Path = tuple[str, ...]


def fold(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """The layers of one request (a study's base keys, a variant's keys, a grid's or a search's
    point, the seed) as one nested override object. A layer's keys may be dotted
    (``optimizer.learning_rate``); they are assigned by plain nested assignment, so their order
    never matters, and a key set twice in one layer (or inside another key's value) is a
    SpecError at it. A later layer's value wins over an earlier one's at the same field; objects
    join field by field. No key means anything special here: what switching an optimizer does
    is decided once, where the object meets the spec (``models.presets.resolve``)."""
    folded: dict[str, Any] = {}
    for layer in layers:
        folded = _joined(folded, _nested(layer))
    return folded


def _nested(layer: Mapping[str, Any]) -> dict[str, Any]:
    """One layer as nested objects; SpecError where two of its keys set the same field."""
    leaves = sorted(_leaves(layer, ()), key=lambda leaf: leaf[0])
    for (outer, _), (inner, _) in pairwise(leaves):
        if inner[: len(outer)] == outer:  # sorted: a path is right before those inside it
            where = "set twice" if inner == outer else f"set inside {'.'.join(outer)}, also set"
            message = f"{'.'.join(inner)} is {where}; give one of them"
            raise SpecError([error_entry(inner, message, None)])
    nested: dict[str, Any] = {}
    for path, value in leaves:
        node = nested
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return nested


def _leaves(value: Mapping[str, Any], path: Path) -> Iterator[tuple[Path, Any]]:
    """Each field a layer sets, as its path and value (an empty object is a value)."""
    for key, item in value.items():
        here = (*path, *(key.split(".") if not path else [key]))
        if isinstance(item, Mapping) and item:
            yield from _leaves(item, here)
        else:
            yield here, item


def _joined(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``later`` over ``earlier``: objects join field by field, any other value replaces."""
    joined = dict(earlier)
    for key, value in later.items():
        old = joined.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            joined[key] = _joined(old, value)
        else:
            joined[key] = value
    return joined
