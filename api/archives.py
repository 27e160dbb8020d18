"""Exports for the ecosystem's own viewers: runs as a TensorBoard log directory (scalars per
epoch, hyperparameters for the HParams tab), answered as one archive; what the study's and
the experiment's export share."""

from datetime import datetime
from typing import Any

from fastapi import Response

from api.deps import AMBIGUOUS
from api.errors import documented
from views import tensorboard

EXPORT_RESPONSES = documented(400, 401, 404, 409, reasons=AMBIGUOUS)
"""Every export's error answers."""
ARCHIVE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {tensorboard.MEDIA_TYPE: {}},
        "description": "A .tar.gz of one folder: `tensorboard --logdir` it once extracted.",
    }
}


def archive(folder: str, runs: list[tensorboard.Run], created: datetime) -> Response:
    """``runs`` as a download of one TensorBoard log directory named ``folder``."""
    content = tensorboard.archive(runs, folder, created)
    disposition = f'attachment; filename="{folder}-tensorboard.tar.gz"'
    return Response(
        content, media_type=tensorboard.MEDIA_TYPE, headers={"Content-Disposition": disposition}
    )
