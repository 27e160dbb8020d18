"""Optuna searches over spec fields, orchestrated. Each trial is an ordinary experiment;
Optuna's storage is convlab's own database (``jobs.optuna_adapter``), so a search survives
restarts and any worker can report to it; a trial's spec is ``models.trials``' business.

``advance`` is the one place where Optuna hears how trials ended and new trials start: the
worker calls it after each trial, the API after creating or cancelling the search, the sweeper
every pass.

A search with several seeds runs each trial once per seed (one experiment each, sharing the
trial's number); the trial's value is the mean of its runs' values, so that noise between seeds
does not pick the winner. The run with the study's first seed reports each epoch to the pruner;
the others stop at their next epoch once the trial has ended (pruned)."""

import logging
import statistics
import zlib
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from celery import Celery

from core.config import Settings
from jobs import optuna_adapter
from jobs.optuna_adapter import TrialReporter
from jobs.queueing import publish
from models.search import SearchSpec
from models.status import ACTIVE, Status
from models.study_state import pruned
from models.trials import base_of, most_epochs, spec_or_refusal, trial_label, value_at
from store.db import Engine
from store.searches import (
    TrialRun,
    best_metric,
    experiment_count,
    search_with_trials,
    store_trial,
)
from store.singleton import SEARCHES_LOCK, one_at_a_time
from store.tables import Experiment, Study

if TYPE_CHECKING:
    import optuna


log = logging.getLogger(__name__)

ADVANCE_WAIT_S = 10.0
"""How long ``advance`` waits for another process advancing the same search (a second or less
but for one that hangs)."""


def search_of(study: Study) -> SearchSpec:
    return SearchSpec.model_validate(study.definition["search"])


def trials_to_come(study: Study) -> bool:
    """Whether a search will start more trials (False for other studies)."""
    if study.kind != "search" or study.cancel_requested:
        return False
    return study.trials_started < search_of(study).n_trials


def create(url: str, study: Study) -> None:
    """Create the Optuna study for a new search study."""
    optuna_adapter.create(url, study.id, search_of(study))


def reporter(url: str, study: Study, trial_number: int) -> TrialReporter:
    """What a worker's run of the trial reports its epochs to."""
    search = search_of(study)
    epochs = _most_epochs(study, search)
    return TrialReporter(url, study.id, search, study.seeds[0], trial_number, epochs)


def _most_epochs(study: Study, search: SearchSpec) -> int | None:
    """The most epochs a trial of the search trains, where its pruner needs it: a hyperband's
    default ``max_resource`` (None for every other pruner)."""
    if search.pruner.type != "hyperband" or search.pruner.max_resource is not None:
        return None
    preset, base = base_of(study.definition)
    return most_epochs(preset, base, search)


def _load(url: str, study: Study) -> "optuna.Study":
    search = search_of(study)
    return optuna_adapter.load(url, study.id, search, study.seeds[0], _most_epochs(study, search))


MIN_TRIALS_FOR_IMPORTANCE = 2
"""Completed trials a search needs before its parameters' importances mean anything."""


class TooFewTrials(Exception):
    """A search with fewer than MIN_TRIALS_FOR_IMPORTANCE completed trials."""

    def __init__(self, completed: int) -> None:
        super().__init__(completed)
        self.completed = completed


def importances(url: str, study: Study) -> tuple[dict[str, float], int]:
    """Each searched parameter's importance to the completed trials' values, summing to 1,
    and how many completed trials they rest on; TooFewTrials below MIN_TRIALS_FOR_IMPORTANCE."""
    search = search_of(study)
    optuna_study = _load(url, study)
    completed = optuna_adapter.completed_trials(optuna_study)
    if completed < MIN_TRIALS_FOR_IMPORTANCE:
        raise TooFewTrials(completed)
    return optuna_adapter.importances(optuna_study, search), completed


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
    instead). One process at a time: a worker ending a trial and the sweeper would otherwise
    both ask Optuna for the next trial, and the one that lost the count would leave Optuna a
    failed trial that never ran."""
    with one_at_a_time(engine, lock_key(study_id), "searches", wait_s=ADVANCE_WAIT_S) as mine:
        if not mine:  # the holder hangs: the sweeper's next pass tries again
            log.warning(
                "search %s is being advanced elsewhere for over %ss", study_id, ADVANCE_WAIT_S
            )
            return []
        return _advanced(engine, celery, settings, study_id)


def lock_key(study_id: str) -> int:
    """The key of the lock ``advance`` holds for a search (on PostgreSQL; SQLite has one)."""
    return SEARCHES_LOCK << 32 | zlib.crc32(study_id.encode())


def _advanced(engine: Engine, celery: Celery, settings: Settings, study_id: str) -> list[str]:
    found = search_with_trials(engine, study_id)
    if found is None:
        return []
    study, experiments = found
    search = search_of(study)
    optuna_study = _load(settings.resolved_database_url, study)
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
    sampler_seed = study.seeds[0] * 100_003 + experiment_count(engine, study.id)
    number, params = optuna_adapter.ask(optuna_study, search, sampler_seed)
    specs = [spec_or_refusal(study.definition, params, seed, settings) for seed in study.seeds]
    refusal = next((refused for _, refused in specs if refused is not None), None)
    label = trial_label(params)
    several = len(specs) > 1
    runs = store_trial(
        engine,
        study,
        number=number,
        runs=[
            TrialRun(f"trial {number}" + (f", seed {seed}" if several else "") + f": {label}", spec)
            for seed, (spec, _) in zip(study.seeds, specs, strict=True)
        ],
        n_trials=search.n_trials,
        parallel=search.parallel,
        refusal=refusal,
    )
    if not runs or refusal is not None:
        optuna_adapter.tell(optuna_study, number, ending="failed")
    return runs


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
    running = optuna_adapter.running(optuna_study)
    for number, runs in by_trial(experiments).items():
        if number not in running:
            continue
        value, active = trial_value(engine, runs, search.metric)
        if value is not None:
            optuna_adapter.tell(optuna_study, number, value)
        elif any(pruned(run) for run in runs):
            optuna_adapter.tell(optuna_study, number, ending="pruned")
        elif not active:
            optuna_adapter.tell(optuna_study, number, ending="failed")
    if not trials_to_come(study):
        orphans = running - {experiment.trial_number for experiment in experiments}
        for number in orphans:
            optuna_adapter.tell(optuna_study, number, ending="failed")


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
        "params": {key: value_at(experiment.spec, key) for key in search.space},
        "experiment_id": experiment.id,
    }
