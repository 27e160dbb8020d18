"""Submit, list, read, cancel and delete experiments, and read their per-epoch history."""

import csv
import io
import threading
from dataclasses import asdict, fields
from typing import Annotated, Literal

from cachetools import LRUCache, cached
from cachetools.keys import hashkey
from fastapi import (
    APIRouter,
    BackgroundTasks,
    Body,
    Depends,
    HTTPException,
    Query,
    Request,
    Response,
)

from api.deps import (
    CeleryDep,
    EngineDep,
    PrincipalDep,
    ReleasingRoute,
    SessionDep,
    SettingsDep,
    check_priority,
    derived_priority,
    experiment_id_and_status,
    find_experiment,
    limit_submissions,
    require_owner,
    visible_owner,
)
from api.errors import documented
from api.notify import check_notify
from api.public import experiment_public, experiments_public
from api.schemas import (
    ExperimentCreate,
    ExperimentPage,
    ExperimentPublic,
    ExperimentUpdate,
    History,
    JoinedHistory,
    LineagePart,
    spec_filters,
)
from api.submit import placement_warnings, store_and_publish
from core.config import Settings
from jobs.retention import give_back_space
from models.budget import check_budget
from models.dataset_record import changes_since
from models.datasets import check_available
from models.epochs import EpochMetrics
from models.errors import SpecError, error_entry
from models.presets import PRESETS, resolve, resolve_over
from models.spec import MAX_EPOCHS, ExperimentSpec
from models.status import ACTIVE, Priority, Status
from store import experiments, transitions
from store.db import Session
from store.tables import Experiment
from store.tokens import Principal

router = APIRouter(
    prefix="/experiments",
    tags=["experiments"],
    responses=documented(400, 401),
    route_class=ReleasingRoute,
)

SUBMIT_EXAMPLES = {
    name: {
        "summary": preset.description,
        "value": {"preset": name, "dataset": {"name": "digits"}, "training": {"epochs": 5}},
    }
    for name, preset in PRESETS.items()
}


@router.post(
    "",
    status_code=201,
    response_model=ExperimentPublic,
    dependencies=[Depends(limit_submissions)],
    responses=documented(404, 413, 429),
)
def submit(
    body: Annotated[ExperimentCreate, Body(openapi_examples=SUBMIT_EXAMPLES)],
    session: SessionDep,
    engine: EngineDep,
    celery: CeleryDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    response: Response,
) -> ExperimentPublic:
    """Store an experiment (a preset, or another experiment's spec, with overrides) and queue
    it for a worker."""
    spec, parent = _spec_of(body, session, principal, settings)
    check_budget(spec, settings)
    check_available(spec.dataset.name, settings.resolved_data_dir, ("dataset", "name"))
    check_notify(body.notify, settings)
    if parent is None:
        check_priority(principal, body.priority)
        priority = Priority(body.priority)
    else:
        asked = body.priority if "priority" in body.model_fields_set else None
        priority = derived_priority(principal, asked, parent.priority)

    def store() -> tuple[Experiment, list[Experiment]]:
        experiment = experiments.create_experiment(
            session,
            name=body.name,
            spec=spec.model_dump(mode="json"),
            owner=principal.user if principal else None,
            parent_id=parent.id if parent else None,
            priority=priority,
        )
        return experiment, [experiment]

    experiment = store_and_publish(
        session,
        engine,
        celery,
        principal,
        settings,
        response,
        adding=1,
        store=store,
        notify=body.notify,
    )
    public = experiment_public(session, settings, experiment)
    public.warnings = placement_warnings(session, [experiment.spec])
    return public


def _spec_of(
    body: ExperimentCreate, session: Session, principal: Principal | None, settings: Settings
) -> tuple[ExperimentSpec, Experiment | None]:
    """The body's keys merged over its preset, or over the resolved spec of the experiment it
    names in ``from`` (a rerun with changes; its id or a unique prefix), with that experiment;
    a SpecError is a 422 (api.errors.invalid_spec)."""
    if body.from_ is None:
        return resolve(body.preset, body.overrides()), None
    if "preset" in body.model_fields_set:
        raise SpecError([error_entry(("preset",), "give either from or preset", body.preset)])
    parent = find_experiment(session, body.from_, principal, settings)
    _check_rerun_data(body, parent)  # before the spec, which today's data may refuse
    return resolve_over(parent.spec, body.overrides()), parent


def _check_rerun_data(body: ExperimentCreate, parent: Experiment) -> None:
    """409 when a rerun's dataset changed since the experiment it reruns was submitted, unless
    the body names the dataset (and so takes the data its name holds now)."""
    if "name" in (body.overrides().get("dataset") or {}):
        return
    if changed := changes_since(parent.dataset):
        name = parent.spec["dataset"]["name"]
        raise HTTPException(
            409,
            f"Dataset {name} changed since experiment {parent.id} was submitted: {changed}. To "
            f'rerun it on the data the name holds now, name the dataset: "dataset": {{"name": '
            f'"{name}"}}.',
        )


@router.get("", response_model=ExperimentPage)
def list_experiments(
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    request: Request,
    status: Status | None = None,
    preset: str | None = None,
    study_id: str | None = None,
    tag: Annotated[
        list[str] | None, Query(description="Only experiments with this tag; repeatable: all.")
    ] = None,
    dataset: str | None = None,
    q: Annotated[
        str | None, Query(description="Only experiments whose name or notes hold it, any case.")
    ] = None,
    sort: Annotated[
        experiments.Sort,
        Query(description="A timestamp or metric; '-': descending; no metric sorts last."),
    ] = experiments.NEWEST,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> ExperimentPage:
    """Experiments, newest first or in ``sort``'s order, a page at a time; also filtered by
    any spec field as ``spec.<dotted.path>=value`` (a bad cursor: api.errors.invalid_cursor)."""
    spec = spec_filters(request.query_params.multi_items())
    items, next_cursor = experiments.list_experiments(
        session,
        status=status,
        preset=preset,
        study_id=study_id,
        owner=visible_owner(principal, settings),
        tags=tag or (),
        text=q,
        spec=spec if dataset is None else [*spec, ("dataset.name", dataset)],
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    return ExperimentPage(
        items=experiments_public(session, settings, list(items)), next_cursor=next_cursor
    )


@router.patch("/{experiment_id}", response_model=ExperimentPublic, responses=documented(403, 404))
def update_experiment(
    experiment_id: str,
    body: ExperimentUpdate,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> ExperimentPublic:
    """Rename, tag or annotate an experiment: the body's keys replace those values, then
    ``add_tags`` and ``remove_tags`` change its tags in place."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    require_owner(principal, experiment.owner, "change this experiment")
    changes = body.model_dump(exclude_unset=True, exclude={"add_tags", "remove_tags"})
    try:
        changed = experiments.relabel(session, experiment, changes, body.add_tags, body.remove_tags)
    except experiments.TooManyTags as exc:
        raise SpecError([error_entry(("add_tags",), str(exc), body.add_tags)]) from None
    return experiment_public(session, settings, changed)


@router.get("/{experiment_id}", response_model=ExperimentPublic, responses=documented(404))
def read_experiment(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> ExperimentPublic:
    """One experiment: status, progress, resolved spec and summary."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    return experiment_public(session, settings, experiment)


@router.get(
    "/{experiment_id}/history",
    response_model=History | JoinedHistory,
    responses=documented(404) | {200: {"content": {"text/csv": {}}}},
)
def read_history(
    experiment_id: str,
    session: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    request: Request,
    since: Annotated[
        int, Query(ge=0, le=MAX_EPOCHS, description="Only epochs after this one.")
    ] = 0,
    format: Literal["json", "csv"] | None = None,
    lineage: Annotated[
        bool,
        Query(
            description="A continued experiment's epochs joined after its parents' (up to "
            "the checkpoint each child started from), with the runs they come from."
        ),
    ] = False,
) -> History | JoinedHistory | Response:
    """Per-epoch metrics, written as each epoch ends (also while the experiment runs)."""
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if lineage:
        experiment = find_experiment(session, experiment_id, principal, settings)
        joined = _joined_history(session, experiment)
        joined.epochs = [row for row in joined.epochs if row.epoch > since]
        return Response(_csv(joined.epochs), media_type="text/csv") if wants_csv else joined
    experiment_id, status = experiment_id_and_status(session, experiment_id, principal, settings)
    if not wants_csv and status not in ACTIVE and since == 0:
        body = _finished_history(session, experiment_id, status)
        return Response(body, media_type="application/json")
    epochs = experiments.history(session, experiment_id, since=since)
    if wants_csv:
        return Response(_csv(epochs), media_type="text/csv")
    return History(experiment_id=experiment_id, status=status, epochs=epochs)


def _joined_history(session: Session, experiment: Experiment) -> JoinedHistory:
    parts = [(run, epochs) for run, epochs in experiments.lineage(session, experiment) if epochs]
    return JoinedHistory(
        experiment_id=experiment.id,
        status=experiment.status,
        epochs=[row for _, epochs in parts for row in epochs],
        lineage=[
            LineagePart(experiment_id=run, first_epoch=epochs[0].epoch, last_epoch=epochs[-1].epoch)
            for run, epochs in parts
        ],
    )


@cached(
    LRUCache(maxsize=64 * 2**20, getsizeof=len),
    key=lambda _session, experiment_id, status: hashkey(experiment_id, status),
    lock=threading.Lock(),
)
def _finished_history(session: Session, experiment_id: str, status: Status) -> bytes:
    """A finished experiment's whole history as JSON, built once per process: it never
    changes again, and a deletion is seen by the status lookup before this is asked."""
    epochs = experiments.history(session, experiment_id)
    return (
        History(experiment_id=experiment_id, status=status, epochs=epochs)
        .model_dump_json()
        .encode()
    )


@router.post(
    "/{experiment_id}/cancel",
    status_code=202,
    response_model=ExperimentPublic,
    responses=documented(403, 404, 409),
)
def cancel_experiment(
    experiment_id: str, session: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> ExperimentPublic:
    """Cancel: a queued experiment never runs; a running one stops at its next batch."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    require_owner(principal, experiment.owner, "cancel this experiment")
    return experiment_public(session, settings, transitions.cancel(session, experiment))


@router.delete("/{experiment_id}", status_code=204, responses=documented(403, 404, 409))
def delete_experiment(
    experiment_id: str,
    session: SessionDep,
    engine: EngineDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    after: BackgroundTasks,
    force: Annotated[
        bool, Query(description="Delete it even though other runs continue it.")
    ] = False,
) -> Response:
    """Delete a finished experiment, its history and its weights, whose space goes back to
    the disk after the answer; a 409 naming the runs that continue it, unless ``force``."""
    experiment = find_experiment(session, experiment_id, principal, settings)
    require_owner(principal, experiment.owner, "delete this experiment")
    experiments.delete(session, experiment, force=force)
    after.add_task(give_back_space, engine)
    return Response(status_code=204)


def _csv(epochs: list[EpochMetrics]) -> str:
    buffer = io.StringIO()
    columns = [field.name for field in fields(EpochMetrics)]
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(asdict(epoch) for epoch in epochs)
    return buffer.getvalue()
