"""A study's runs as data for the dashboard's charts: each run's parameters, its value and its
epochs, read in one query (the browser draws curves, parallel coordinates and best-so-far)."""

from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, Field

from api.deps import (
    AMBIGUOUS,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    find_study,
)
from api.errors import documented
from api.schemas import Timestamp
from jobs.search import search_of
from models.epochs import EpochMetrics
from models.status import Status
from models.study_state import pruned
from models.trials import value_at
from store.studies import study_with_epochs
from store.tables import Experiment, Study

router = APIRouter(tags=["studies"], responses=documented(400, 401), route_class=ReleasingRoute)


class StudyRun(BaseModel):
    experiment_id: str
    variant: str | None
    seed: int | None
    trial_number: int | None = Field(description="A search's trial (its seeds share it).")
    status: Status
    pruned: bool = Field(description="A search's pruner stopped it (its value still counts).")
    finished_at: Timestamp | None
    params: dict[str, Any] = Field(description="The value of each of ``parameters`` it ran with.")
    value: float | None = Field(description="Its best epoch's ``metric``; null before one.")
    epochs: list[EpochMetrics]


class StudyRuns(BaseModel):
    study_id: str
    kind: str
    parameters: list[str] = Field(
        description="A grid's keys or a search's space (dotted spec keys); empty for others."
    )
    metric: Literal["val_accuracy", "val_loss"]
    direction: Literal["maximize", "minimize"]
    runs: list[StudyRun] = Field(description="In the order they were created.")


@router.get(
    "/studies/{study_id}/runs",
    response_model=StudyRuns,
    responses=documented(404, 409, reasons=AMBIGUOUS),
)
def study_runs(
    study_id: str,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> StudyRuns:
    """Every run of the study with its parameters, its value of the study's metric and its
    epochs (what the dashboard's interactive charts are drawn from)."""
    study_id = find_study(session, study_id, principal, settings).id
    found = study_with_epochs(engine, study_id, after=0)
    if found is None:
        raise HTTPException(404, "Study not found")
    study, members, rows = found
    epochs: dict[str, list[EpochMetrics]] = {member.id: [] for member in members}
    for _, experiment_id, metrics in rows:
        epochs[experiment_id].append(metrics)
    parameters, metric, direction = _measured(study)
    return StudyRuns(
        study_id=study.id,
        kind=study.kind,
        parameters=parameters,
        metric=metric,
        direction=direction,
        runs=[_run(member, parameters, metric, epochs[member.id]) for member in members],
    )


def _measured(study: Study) -> tuple[list[str], Any, Any]:
    """The keys the study varies, the metric that scores a run and which way is better."""
    if study.kind == "search":
        search = search_of(study)
        return list(search.space), search.metric, search.direction
    return list(study.definition.get("grid") or {}), "val_accuracy", "maximize"


def _run(
    member: Experiment, parameters: list[str], metric: str, epochs: list[EpochMetrics]
) -> StudyRun:
    values = [value for row in epochs if (value := getattr(row, metric)) is not None]
    best = max if metric == "val_accuracy" else min
    return StudyRun(
        experiment_id=member.id,
        variant=member.variant,
        seed=member.spec.get("seed"),
        trial_number=member.trial_number,
        status=member.status,
        pruned=pruned(member),
        finished_at=member.finished_at,
        params={key: value_at(member.spec, key) for key in parameters},
        value=best(values) if values else None,
        epochs=sorted(epochs, key=lambda row: row.epoch),
    )
