"""Optuna searches over spec fields. Each trial is an ordinary experiment; Optuna's storage is
convlab's own database, so a search survives restarts and any worker can report to it.

``advance`` is the one place where Optuna hears how trials ended and new trials start: the
worker calls it after each trial, the API after creating or cancelling the search, the sweeper
every pass.

A search with several seeds runs each trial once per seed (one experiment each, sharing the
trial's number); the trial's value is the mean of its runs' values, so that noise between seeds
does not pick the winner. The run with the study's first seed reports each epoch to the pruner;
the others stop at their next epoch once the trial has ended (pruned)."""

import contextlib
import logging
import statistics
import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from celery import Celery

from core.config import Settings
from jobs.queueing import publish
from models.budget import check_budget
from models.errors import SpecError, error_entry
from models.overrides import fold
from models.presets import applied, resolve
from models.search import CategoricalParam, FloatParam, IntParam, SearchSpec
from models.spec import ExperimentSpec
from models.status import ACTIVE, Status
from models.studies import SECTIONS
from store.db import Engine, get_engine, is_sqlite, schema_lock
from store.searches import (
    TrialRun,
    best_metric,
    experiment_count,
    search_with_trials,
    store_trial,
)
from store.studies import PRUNED as PRUNED  # the worker's Pruned names trials with it
from store.studies import pruned
from store.tables import Experiment, Study

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)


def optuna_name(study_id: str) -> str:
    return f"convlab-{study_id}"


def search_of(study: Study) -> SearchSpec:
    return SearchSpec.model_validate(study.definition["search"])


def _blamed(params: dict[str, Any], loc: tuple[str | int, ...]) -> str | None:
    """The searched key an error at ``loc`` is about: one that names the same field, or a
    field inside it, or the object holding it."""
    path = tuple(map(str, loc))
    for key in params:
        parts = tuple(key.split("."))
        if parts[: len(path)] == path[: len(parts)]:
            return key
    return None


def trials_to_come(study: Study) -> bool:
    """Whether a search will start more trials (False for other studies)."""
    if study.kind != "search" or study.cancel_requested:
        return False
    return study.trials_started < search_of(study).n_trials


def trial_spec(
    preset: str, base: dict[str, Any], params: dict[str, Any], seed: int
) -> ExperimentSpec:
    """The spec of the trial at the point ``params``; SpecError naming the point, located at
    the searched field at fault (at the space when the fault is in another field)."""
    try:
        return resolve(preset, base, params, {"seed": seed})
    except SpecError as exc:
        error = exc.errors[0]
        key = _blamed(params, tuple(error["loc"]))
        loc = ("search", "space", key) if key is not None else ("search", "space")
        field = ".".join(map(str, error["loc"]))
        message = ": ".join(part for part in (_point(params), field, error["msg"]) if part)
        raise SpecError([error_entry(loc, message, error["input"])]) from None


def base_of(study: Study) -> tuple[str, dict[str, Any]]:
    """The study's preset and the spec keys every trial starts from."""
    definition = study.definition
    return definition.get("preset", "base"), {
        key: definition[key] for key in SECTIONS if definition.get(key) is not None
    }


_storages: dict[str, "optuna.storages.RDBStorage"] = {}
_storages_lock = threading.Lock()


def optuna_storage(url: str) -> "optuna.storages.RDBStorage":
    """One Optuna storage per database for the process. Making one creates Optuna's tables if
    they are missing, so it is made under the schema lock: two threads or processes doing it at
    once (a new search's request and a sweeper advancing it) both tried to create them."""
    import optuna

    with _storages_lock:
        if url not in _storages:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            kwargs = (
                {"connect_args": {"timeout": 30}} if is_sqlite(url) else {"pool_pre_ping": True}
            )
            with schema_lock(get_engine(url)):
                _storages[url] = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        return _storages[url]


def _pruner(search: SearchSpec) -> "optuna.pruners.BasePruner":
    import optuna

    spec = search.pruner
    if spec.type == "none":
        return optuna.pruners.NopPruner()
    percentile = 50.0 if spec.type == "median" else spec.percentile
    return optuna.pruners.PercentilePruner(
        percentile, n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
    )


def _sampler(search: SearchSpec, seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    if search.sampler == "grid":
        return optuna.samplers.GridSampler(search.choices(), seed=seed)
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def _distributions(search: SearchSpec) -> dict[str, "optuna.distributions.BaseDistribution"]:
    import optuna

    distributions: dict[str, optuna.distributions.BaseDistribution] = {}
    for key, param in search.space.items():
        if isinstance(param, FloatParam):
            distributions[key] = optuna.distributions.FloatDistribution(
                param.low, param.high, log=param.log
            )
        elif isinstance(param, IntParam):
            distributions[key] = optuna.distributions.IntDistribution(
                param.low, param.high, log=param.log
            )
        else:
            distributions[key] = optuna.distributions.CategoricalDistribution(param.choices)
    return distributions


def load(url: str, study: Study) -> "optuna.Study":
    """The Optuna study behind a search study, with its sampler and pruner."""
    import optuna

    search = search_of(study)
    return optuna.load_study(
        study_name=optuna_name(study.id),
        storage=optuna_storage(url),
        sampler=_sampler(search, study.seeds[0]),
        pruner=_pruner(search),
    )


def create(url: str, study: Study) -> None:
    """Create the Optuna study for a new search study."""
    import optuna

    optuna.create_study(
        study_name=optuna_name(study.id),
        storage=optuna_storage(url),
        direction=search_of(study).direction,
        load_if_exists=True,
    )


def trial_value(
    engine: Engine, runs: list[Experiment], metric: str
) -> tuple[float | None, list[Experiment]]:
    """A trial's value, the mean of its runs' values (one run per seed), once every run has
    succeeded with one; else None. Also the runs still active."""
    active = [run for run in runs if run.status in ACTIVE]
    if active or any(run.status != Status.succeeded for run in runs):
        return None, active
    values = [best_metric(engine, run.id, metric) for run in runs]
    if any(value is None for value in values):
        return None, active
    return statistics.fmean(value for value in values if value is not None), active


def by_trial(experiments: list[Experiment]) -> dict[int, list[Experiment]]:
    """A search's experiments grouped by trial number (one run per seed in each group)."""
    trials: dict[int, list[Experiment]] = defaultdict(list)
    for experiment in experiments:
        if experiment.trial_number is not None:
            trials[experiment.trial_number].append(experiment)
    return trials


def _active_trials(experiments: list[Experiment]) -> int:
    return len({e.trial_number for e in experiments if e.status in ACTIVE})


def advance(engine: Engine, celery: Celery, settings: Settings, study_id: str) -> list[str]:
    """Tell Optuna how finished trials ended; start trials until ``parallel`` are active or
    ``n_trials`` have started. Returns the experiments it queued, one per seed of each trial (a
    trial whose spec is refused or whose model is over the server's budget is stored as failed
    instead)."""
    found = search_with_trials(engine, study_id)
    if found is None:
        return []
    study, experiments = found
    search = search_of(study)
    optuna_study = load(settings.resolved_database_url, study)
    _reconcile(engine, optuna_study, study, experiments, search)
    active = _active_trials(experiments)
    started = []
    while active < search.parallel and trials_to_come(study):
        runs = _start_trial(engine, optuna_study, study, search, settings)
        if not runs:
            break
        study.trials_started += 1  # as counted in the transaction that stored it
        if runs[0].status == Status.queued:
            for run in runs:
                publish(engine, celery, run.id)
                started.append(run.id)
            active += 1
    return started


def _start_trial(
    engine: Engine,
    optuna_study: "optuna.Study",
    study: Study,
    search: SearchSpec,
    settings: Settings,
) -> list[Experiment]:
    """Ask Optuna for a trial, then count it and store it as experiments, one per seed, in one
    transaction: queued (not yet published), or failed with the reason when the spec refuses
    its point or its model is over the budget. None (and the trial failed) when the search
    already has all its trials, was cancelled or runs ``parallel`` trials. A process that dies
    after asking leaves a trial Optuna holds as running with no experiment: ``_reconcile``
    fails it once the search starts no more."""
    import optuna

    seed = study.seeds[0]
    count = experiment_count(engine, study.id)
    # A fresh seed per trial: samplers are not stored, and one seeded alike every time would
    # propose the same point again. Not for the grid sampler: its seed orders the grid, and
    # it walks that order through the trials it finds in storage.
    if search.sampler != "grid":
        optuna_study.sampler = _sampler(search, seed * 100_003 + count)
    trial = optuna_study.ask(_distributions(search))
    specs = [_trial_spec_or_refusal(study, trial.params, settings, seed) for seed in study.seeds]
    refusal = next((refused for _, refused in specs if refused is not None), None)
    label = ", ".join(f"{key}={_short(value)}" for key, value in trial.params.items())[:150]
    named = [
        TrialRun(f"trial {trial.number}" + (f", seed {seed}" if len(specs) > 1 else ""), spec)
        for seed, (spec, _) in zip(study.seeds, specs, strict=True)
    ]
    runs = store_trial(
        engine,
        study,
        number=trial.number,
        runs=[TrialRun(f"{run.name}: {label}", run.spec) for run in named],
        n_trials=search.n_trials,
        parallel=search.parallel,
        refusal=refusal,
    )
    if not runs or refusal is not None:
        _tell(optuna_study, trial.number, state=optuna.trial.TrialState.FAIL)
    return runs


def _trial_spec_or_refusal(
    study: Study, params: dict[str, Any], settings: Settings, seed: int
) -> tuple[dict[str, Any], str | None]:
    """The spec of the trial's run with ``seed`` as stored, and why it is not run (None: it
    runs). A spec refused is stored as asked: the study's resolved base with the point's values
    merged over it."""
    preset, base = base_of(study)
    try:
        spec = trial_spec(preset, base, params, seed)
    except SpecError as exc:
        asked = resolve(preset, base, {"seed": seed}).model_dump(mode="json")
        return applied(asked, fold(params)), f"not run: {exc.errors[0]['msg']}"
    try:
        check_budget(spec, settings)
    except SpecError as exc:
        return spec.model_dump(mode="json"), f"not run: {exc.errors[0]['msg']}"
    return spec.model_dump(mode="json"), None


def _reconcile(
    engine: Engine,
    optuna_study: "optuna.Study",
    study: Study,
    experiments: list[Experiment],
    search: SearchSpec,
) -> None:
    """Tell Optuna how each finished trial ended: the mean of its runs' values once all have
    succeeded, pruned as soon as one run was pruned, failed once all have ended otherwise.
    Once the search starts no more trials, fail the ones Optuna holds as running with no
    experiment (asked for by a process that died before storing them, or deleted)."""
    import optuna

    running = {
        trial.number
        for trial in optuna_study.get_trials(deepcopy=False)
        if trial.state == optuna.trial.TrialState.RUNNING
    }
    for number, runs in by_trial(experiments).items():
        if number not in running:
            continue
        value, active = trial_value(engine, runs, search.metric)
        if value is not None:
            _tell(optuna_study, number, value)
        elif any(pruned(run) for run in runs):
            _tell(optuna_study, number, state=optuna.trial.TrialState.PRUNED)
        elif not active:
            _tell(optuna_study, number, state=optuna.trial.TrialState.FAIL)
    if not trials_to_come(study):
        orphans = running - {experiment.trial_number for experiment in experiments}
        for number in orphans:
            _tell(optuna_study, number, state=optuna.trial.TrialState.FAIL)


def _tell(
    optuna_study: "optuna.Study",
    number: int,
    value: float | None = None,
    state: "optuna.trial.TrialState | None" = None,
) -> None:
    """Tell Optuna how a trial ended, unless another process (a worker and the sweeper advance
    the same search) told it first."""
    import optuna

    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        optuna_study.tell(number, value, state=state, skip_if_finished=True)


def best_trial(
    engine: Engine, study: Study, experiments: list[Experiment]
) -> dict[str, Any] | None:
    """The finished trial with the best value (the mean over its seeds), with its parameters
    and its first seed's experiment."""
    search = search_of(study)
    scored = [
        (value, next((run for run in runs if run.spec["seed"] == study.seeds[0]), runs[0]))
        for runs in by_trial(experiments).values()
        if (value := trial_value(engine, runs, search.metric)[0]) is not None
    ]
    if not scored:
        return None
    pick = max if search.direction == "maximize" else min
    value, experiment = pick(scored, key=lambda pair: pair[0])
    return {
        "number": experiment.trial_number,
        "value": value,
        "metric": search.metric,
        "direction": search.direction,
        "params": {key: _at(experiment.spec, key) for key in search.space},
        "experiment_id": experiment.id,
    }


def validate_space(
    study_preset: str, base: dict[str, Any], search: SearchSpec, seed: int, settings: Settings
) -> None:
    """Every searched field exists and accepts the ends of its range and every choice, each
    within the model budget, and the spec accepts every point of a grid; SpecError naming
    ``search.space.<key>`` otherwise. (A sampled point the spec refuses fails its trial.)"""
    for key, param in search.space.items():
        section, *fields = key.split(".")
        if section not in SECTIONS or not 1 <= len(fields) <= 2 or not all(fields):
            message = (
                "keys are section.field or section.field.key, "
                "e.g. model.dropout or training.lr_schedule.type"
            )
            raise SpecError([error_entry(("search", "space", key), message, key)])
        values = param.choices if isinstance(param, CategoricalParam) else [param.low, param.high]
        for value in values:
            spec = trial_spec(study_preset, base, {key: value}, seed)
            try:
                check_budget(spec, settings)
            except SpecError as exc:
                message = f"{_point({key: value})}: {exc.errors[0]['msg']}"
                raise SpecError([error_entry(("search", "space", key), message, value)]) from None
    if search.sampler == "grid":
        for point in search.grid():
            trial_spec(study_preset, base, point, seed)


class TrialReporter:
    """In the worker: reports each epoch's metric to the trial and asks its pruner."""

    def __init__(self, url: str, study: Study, trial_number: int) -> None:
        import optuna

        optuna_study = load(url, study)
        self.storage = optuna_storage(url)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(optuna_name(study.id)), trial_number
        )
        self.trial = optuna.trial.Trial(optuna_study, self.trial_id)
        self.metric = search_of(study).metric
        self.first_seed = study.seeds[0]

    def should_prune(self, epoch: int, logs: dict[str, Any], *, seed: int | None = None) -> bool:
        """The run with the study's first seed (or ``seed`` None) reports the epoch's metric and
        asks the pruner; a run with another seed stops once its trial has ended (pruned)."""
        import optuna

        if seed is not None and seed != self.first_seed:
            state = self.storage.get_trial(self.trial_id).state
            return bool(state != optuna.trial.TrialState.RUNNING)
        value = logs.get(self.metric)
        if value is None:
            return False
        self.trial.report(float(value), epoch)
        return bool(self.trial.should_prune())


def _at(spec: dict[str, Any], key: str) -> Any:
    value: Any = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _point(params: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value!r}" for key, value in params.items())


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
