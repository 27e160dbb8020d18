"""What is wrong with a request's spec, as pydantic-style error entries (so FastAPI's 422)."""

import difflib
from collections.abc import Iterable
from typing import Any

Loc = tuple[str | int, ...]


class SpecError(ValueError):
    """A request that does not resolve to a valid spec; ``errors`` are pydantic-style entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


def error_entry(loc: Loc, msg: str, value: Any, kind: str = "value_error") -> dict[str, Any]:
    """One error in the shape of pydantic's (and so of FastAPI's 422 ``detail``)."""
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """``did you mean `x`?`` for the choice closest to a mistyped ``word``, or "" for none."""
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"did you mean `{close[0]}`?" if close else ""
