"""An experiment's run as a TensorBoard log directory (``api.archives``)."""

from fastapi import APIRouter, Response

from api.archives import ARCHIVE, EXPORT_RESPONSES, archive
from api.deps import PrincipalDep, ReleasingRoute, SessionDep, SettingsDep, find_experiment
from views import tensorboard

router = APIRouter(tags=["exports"], responses=EXPORT_RESPONSES, route_class=ReleasingRoute)


@router.get("/experiments/{experiment_id}/tensorboard", response_class=Response, responses=ARCHIVE)
def experiment_tensorboard(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> Response:
    """One experiment as a TensorBoard run, as in its study's export."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    runs = tensorboard.runs(session, [experiment])
    return archive(f"convlab-experiment-{experiment.id}", runs, experiment.created_at)
