"""The formats a table comes in (a study's, a comparison's), the baseline its differences are
measured from, and the answers it documents."""

from typing import Annotated, Literal

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from api.deps import AMBIGUOUS
from api.errors import documented
from models.errors import error_entry
from store.tables import Experiment
from views.report import baseline_of

TableFormat = Literal["json", "csv", "markdown"]
TABLE_RESPONSES = documented(404, 409, reasons=AMBIGUOUS) | {
    200: {"content": {"text/csv": {}, "text/markdown": {}}}
}
BaselineQuery = Annotated[
    str | None,
    Query(
        max_length=200,
        description="The row every other row is compared with: a variant (a row's label), or "
        "an experiment by id, unique id prefix or name (its row). Default: the first row.",
    ),
]


def baseline_index(
    groups: list[tuple[str, list[Experiment]]], baseline: str | None, among: str
) -> int:
    """The row ``baseline`` names; a 422 naming it and the rows there are otherwise."""
    found = baseline_of(groups, baseline)
    if found is None:
        labels = ", ".join(label for label, _ in groups[:20]) or "none"
        message = (
            f"baseline {baseline!r} names no variant or experiment of {among} (rows: {labels}); "
            "give a row's label, or an experiment's id, unique id prefix or name"
        )
        raise RequestValidationError([error_entry(("query", "baseline"), message, baseline)])
    return found
