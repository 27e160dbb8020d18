"""Learning curves as PNG or SVG images, rendered once per change of the history they show
(an ETag lets a browser or script revalidate for free): what the experiment, study and
comparison plots share."""

import hashlib
from typing import Annotated, Any

from fastapi import Header, Path, Response

from api.errors import documented
from models.epochs import EpochMetrics
from store.db import Engine, Session
from store.experiments import history, newest_epoch_at
from store.tables import Experiment
from views import plots

PLOT_RESPONSES = documented(400, 401, 404)
"""Every plot's error answers."""
IMAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {media: {} for media in plots.MEDIA_TYPES.values()},
        "description": "The curves as an image.",
    },
    304: {"description": "Unchanged since the ETag sent in If-None-Match."},
}
FormatPath = Annotated[plots.ImageFormat, Path(description="png or svg")]
IfNoneMatch = Annotated[str | None, Header()]


def version_of(session: Session, experiments: list[Experiment]) -> tuple[Any, ...]:
    """What the picture depends on: each run's status and epochs, and the newest epoch row
    (a resumed run rewrites epochs it had)."""
    newest = newest_epoch_at(session, experiment_ids=[e.id for e in experiments])
    runs = tuple((e.id, e.name, e.status, e.epochs_done, e.epochs_total) for e in experiments)
    return runs, str(newest)


def image(
    if_none_match: str | None,
    fmt: plots.ImageFormat,
    version: tuple[Any, ...],
    render: Any,
    engine: Engine,
    key: str,
) -> Response:
    """304 when ``if_none_match`` is the picture's ETag, else the picture: ``render(engine,
    key, version, fmt)``, which caches it."""
    etag = '"' + hashlib.sha256(repr((key, version, fmt)).encode()).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    content = render(engine, key, version, fmt)
    return Response(content, media_type=plots.MEDIA_TYPES[fmt], headers=headers)


def group_histories(
    session: Session, groups: list[tuple[str, list[Experiment]]]
) -> list[tuple[str, list[list[EpochMetrics]]]]:
    """Each labelled group's runs' histories."""
    return [
        (label, [history(session, experiment.id) for experiment in members])
        for label, members in groups
    ]
