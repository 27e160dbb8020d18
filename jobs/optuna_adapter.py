"""The one place convlab speaks Optuna: a search study's Optuna study in convlab's own database,
its sampler, pruner and distributions, asking for trials, telling how they ended, and the
worker's per-epoch reports. Optuna is imported when first used, never with the API."""

import contextlib
import threading
import warnings
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


def _pruner(search: SearchSpec, epochs: int | None) -> "optuna.pruners.BasePruner":
    """The search's pruner; Optuna's steps are epochs (the worker reports epoch k as step k),
    and a hyperband's ``max_resource`` defaults to ``epochs``, the most a trial trains."""
    import optuna

    spec = search.pruner
    match spec.type:
        case "none":
            return optuna.pruners.NopPruner()
        case "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(
                min_resource=spec.min_resource,
                reduction_factor=spec.reduction,
                min_early_stopping_rate=spec.min_early_stopping_rate,
                bootstrap_count=spec.bootstrap_count,
            )
        case "hyperband":
            highest = spec.max_resource or epochs
            assert highest is not None, "a hyperband pruner needs its max_resource"
            return optuna.pruners.HyperbandPruner(
                min_resource=spec.min_resource,
                max_resource=highest,
                reduction_factor=spec.reduction,
                bootstrap_count=spec.bootstrap_count,
            )
    percentile = 50.0 if spec.type == "median" else spec.percentile
    return optuna.pruners.PercentilePruner(
        percentile, n_startup_trials=spec.n_startup_trials, n_warmup_steps=spec.n_warmup_steps
    )


SEQUENCES = ("grid", "qmc")
"""Samplers that walk one sequence through the trials in storage: seeded once, by the
search's first seed, never per trial."""


def _sampler(search: SearchSpec, seed: int) -> "optuna.samplers.BaseSampler":
    import optuna

    match search.sampler:
        case "grid":
            return optuna.samplers.GridSampler(search.choices(), seed=seed)
        case "random":
            return optuna.samplers.RandomSampler(seed=seed)
        case "cmaes":
            # Its state is in the trials' storage; categorical parameters are drawn at random
            # (Optuna logs a warning saying so).
            return optuna.samplers.CmaEsSampler(seed=seed)
        case "qmc":
            with warnings.catch_warnings():  # experimental since Optuna 3.0, and still there
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.QMCSampler(scramble=True, seed=seed)
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


def load(
    url: str, study_id: str, search: SearchSpec, seed: int, epochs: int | None
) -> "optuna.Study":
    """The Optuna study behind a search study, with its sampler (seeded with ``seed``) and
    pruner (``epochs``: the most a trial trains, for a hyperband without ``max_resource``)."""
    import optuna

    return optuna.load_study(
        study_name=optuna_name(study_id),
        storage=optuna_storage(url),
        sampler=_sampler(search, seed),
        pruner=_pruner(search, epochs),
    )


def ask(optuna_study: "optuna.Study", search: SearchSpec, seed: int) -> tuple[int, dict[str, Any]]:
    """A new trial's number and point. A fresh ``seed`` per trial: samplers are not stored, and
    one seeded alike every time would propose the same point again. Not for the grid and qmc
    samplers: their seed fixes the sequence they walk through the trials found in storage."""
    if search.sampler not in SEQUENCES:
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


def importances(optuna_study: "optuna.Study", search: SearchSpec) -> dict[str, float]:
    """Each searched parameter's importance to the completed trials' values (PED-ANOVA,
    Optuna's default evaluator, which needs numpy alone), most important first, summing to 1.
    Ask it of two completed trials at least: with fewer, every parameter weighs alike."""
    import optuna

    evaluator = optuna.importance.PedAnovaImportanceEvaluator()
    values = optuna.importance.get_param_importances(
        optuna_study, evaluator=evaluator, params=list(search.space)
    )
    return {key: float(value) for key, value in values.items()}


def completed_trials(optuna_study: "optuna.Study") -> int:
    """How many of the search's trials completed with a value."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE,)
    return len(optuna_study.get_trials(deepcopy=False, states=states))


class TrialReporter:
    """In the worker: reports each epoch's metric to the trial and asks its pruner."""

    def __init__(
        self,
        url: str,
        study_id: str,
        search: SearchSpec,
        first_seed: int,
        trial_number: int,
        epochs: int | None,
    ) -> None:
        import optuna

        optuna_study = load(url, study_id, search, first_seed, epochs)
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
