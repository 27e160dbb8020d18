"""The one place convlab speaks Optuna: a search study's Optuna study in convlab's own database,
its sampler, pruner and distributions, asking for trials, telling how they ended, and the
worker's per-epoch reports. Optuna is imported when first used, never with the API."""

import contextlib
import threading
from typing import TYPE_CHECKING, Any, Literal

from models.search import FloatParam, IntParam, SearchSpec
from store.db import get_engine, is_sqlite, schema_lock

if TYPE_CHECKING:
    import optuna

Ending = Literal["failed", "pruned"]
"""How a trial ended without a value."""


def optuna_name(study_id: str) -> str:
    return f"convlab-{study_id}"


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
            sqlite = is_sqlite(url)
            kwargs = {"connect_args": {"timeout": 30}} if sqlite else {"pool_pre_ping": True}
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


def create(url: str, study_id: str, search: SearchSpec) -> None:
    """Create the Optuna study for a new search study."""
    import optuna

    optuna.create_study(
        study_name=optuna_name(study_id),
        storage=optuna_storage(url),
        direction=search.direction,
        load_if_exists=True,
    )


def load(url: str, study_id: str, search: SearchSpec, seed: int) -> "optuna.Study":
    """The Optuna study behind a search study, with its sampler (seeded with ``seed``) and
    pruner."""
    import optuna

    return optuna.load_study(
        study_name=optuna_name(study_id),
        storage=optuna_storage(url),
        sampler=_sampler(search, seed),
        pruner=_pruner(search),
    )


def ask(optuna_study: "optuna.Study", search: SearchSpec, seed: int) -> tuple[int, dict[str, Any]]:
    """A new trial's number and point. A fresh ``seed`` per trial: samplers are not stored, and
    one seeded alike every time would propose the same point again. Not for the grid sampler:
    its seed orders the grid, and it walks that order through the trials it finds in storage."""
    if search.sampler != "grid":
        optuna_study.sampler = _sampler(search, seed)
    trial = optuna_study.ask(_distributions(search))
    return trial.number, trial.params


def running(optuna_study: "optuna.Study") -> set[int]:
    """The numbers of the trials Optuna holds as running."""
    import optuna

    return {
        trial.number
        for trial in optuna_study.get_trials(deepcopy=False)
        if trial.state == optuna.trial.TrialState.RUNNING
    }


def tell(
    optuna_study: "optuna.Study",
    number: int,
    value: float | None = None,
    ending: Ending | None = None,
) -> None:
    """Tell Optuna a trial's value, or how it ended without one, unless another process (a
    worker and the sweeper advance the same search) told it first."""
    import optuna

    states = {"failed": optuna.trial.TrialState.FAIL, "pruned": optuna.trial.TrialState.PRUNED}
    state = states[ending] if ending is not None else None
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        optuna_study.tell(number, value, state=state, skip_if_finished=True)


class TrialReporter:
    """In the worker: reports each epoch's metric to the trial and asks its pruner."""

    def __init__(
        self, url: str, study_id: str, search: SearchSpec, first_seed: int, trial_number: int
    ) -> None:
        import optuna

        optuna_study = load(url, study_id, search, first_seed)
        self.storage = optuna_storage(url)
        self.trial_id = self.storage.get_trial_id_from_study_id_trial_number(
            self.storage.get_study_id_from_name(optuna_name(study_id)), trial_number
        )
        self.trial = optuna.trial.Trial(optuna_study, self.trial_id)
        self.metric = search.metric
        self.first_seed = first_seed

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
