"""The formats a table comes in (a study's, a comparison's) and the answers it documents."""

from typing import Literal

from api.deps import AMBIGUOUS
from api.errors import documented

TableFormat = Literal["json", "csv", "markdown"]
TABLE_RESPONSES = documented(404, 409, reasons=AMBIGUOUS) | {
    200: {"content": {"text/csv": {}, "text/markdown": {}}}
}
