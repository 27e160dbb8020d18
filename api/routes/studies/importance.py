"""A search's parameter importances: how much each searched field mattered to the trials'
values, as Optuna assesses it (``jobs.search.importances``)."""

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep, find_study
from api.errors import documented
from jobs import search
from jobs.search import MIN_TRIALS_FOR_IMPORTANCE, TooFewTrials

router = APIRouter(tags=["studies"], route_class=ReleasingRoute)

REASONS = {
    404: "No such study, or a study that is not a search (the answer says which).",
    409: "The search has fewer than two completed trials (an id prefix that starts several "
    "ids: the answer names them).",
}


class ImportancePublic(BaseModel):
    importances: dict[str, float]
    """Each searched field's share of what explains the trials' values, most important first;
    they sum to 1."""
    evaluator: str
    """How they were assessed: ``ped_anova``, Optuna's default (PED-ANOVA, numpy alone)."""
    trials: int
    """How many completed trials they rest on (pruned and failed trials have no value)."""
    metric: str


@router.get(
    "/studies/{study_id}/importance",
    response_model=ImportancePublic,
    responses=documented(400, 401, 404, 409, reasons=REASONS),
)
def read_importance(
    study_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> ImportancePublic:
    """How much each searched parameter mattered to the completed trials' values (Optuna's
    parameter importances, summing to 1); 404 for a study that is not a search, 409 while it
    has fewer than two completed trials."""
    study = find_study(session, study_id, principal, settings)
    if study.kind != "search":
        raise HTTPException(
            404,
            f"Study {study.id} is a {study.kind} study, not a search: parameter importances "
            "come from a search's trials.",
        )
    try:
        values, trials = search.importances(settings.resolved_database_url, study)
    except TooFewTrials as exc:
        raise HTTPException(
            409,
            f"Study {study.id} has {exc.completed} completed trial"
            f"{'' if exc.completed == 1 else 's'}; parameter importances need at least "
            f"{MIN_TRIALS_FOR_IMPORTANCE}. Ask again once more have finished.",
        ) from None
    metric = search.search_of(study).metric
    return ImportancePublic(importances=values, evaluator="ped_anova", trials=trials, metric=metric)
