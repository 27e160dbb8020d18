"""A study's runs as a TensorBoard log directory (``api.archives``)."""

from fastapi import APIRouter, Response

from api.archives import ARCHIVE, EXPORT_RESPONSES, archive
from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep, find_study
from store.studies import study_experiments
from views import tensorboard

router = APIRouter(tags=["exports"], responses=EXPORT_RESPONSES, route_class=ReleasingRoute)


@router.get("/studies/{study_id}/tensorboard", response_class=Response, responses=ARCHIVE)
def study_tensorboard(
    study_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """Every experiment of the study as a TensorBoard run: each epoch's loss, accuracy,
    val_loss, val_accuracy (and learning_rate where recorded) as scalars, its spec as the
    HParams tab's hyperparameters."""
    study = find_study(session, study_id, principal, settings)
    runs = tensorboard.runs(session, study_experiments(session, study.id))
    return archive(f"convlab-study-{study.id}", runs, study.created_at)
