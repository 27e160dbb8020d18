"""One experiment's training run: claim it, resume from its newest checkpoint or start fresh,
fit, and record every epoch the moment it ends, with a checkpoint when one is due
(``worker.checkpoints.Checkpointer``).

Every database call waits out an outage (``store.outages``): training waits at the epoch's end
until its row can be written, and a cancel poll that cannot be made is skipped."""

import contextlib
import logging
import math
import os
import threading
import time
from typing import Any

import keras
from celery.exceptions import Reject
from pydantic import ValidationError

from core.config import get_settings
from jobs.optuna_adapter import TrialReporter
from jobs.search import advance, reporter
from jobs.verify import settle
from models.build import as_input, build_model
from models.datasets import DATASETS
from models.epochs import EpochMetrics
from models.spec import ExperimentSpec
from models.status import Status
from models.study_state import PRUNED
from store.db import Engine, get_engine
from store.dispatch import undispatch
from store.experiments import epochs_of
from store.outages import DATABASE_ERRORS, DatabaseUnavailable, is_transient
from store.runs import (
    LeaseLost,
    checkpoints,
    record_epoch,
    renew_lease,
    requested_stop,
    rewind,
)
from store.searches import search_study
from store.tables import Experiment, Study
from store.transitions import claim_next, finish, release
from worker.backends import compile_steps, configure, determinism, is_out_of_memory
from worker.best import BestKeeper
from worker.celery_app import app
from worker.checkpoints import Checkpointer, newest_loadable
from worker.datasets import DatasetUnavailable, prepare
from worker.environment import environment
from worker.evaluation import record_evaluation
from worker.fidelity import BuiltDiffers, check_built
from worker.heartbeat import accelerator
from worker.job import Job
from worker.leases import is_gone, this_process
from worker.resident import feed, wanted
from worker.schedules import ScheduledRate, current_rate
from worker.slots import held_slot, threads
from worker.stop import stop_requested

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5
"""How often a training job re-reads its cancel flag (at the first batch end after it)."""


_slot = held_slot()
configure(get_settings(), threads(_slot), _slot.memory_mb)  # worker.backends, worker.slots


class Cancelled(Exception):
    """Someone asked the experiment to stop."""


class Interrupted(Exception):
    """The worker is shutting down; the job goes back to the queue."""


class Paused(Interrupted):
    """Someone paused the experiment: it waits, checkpointed, until it is resumed."""


class Yielded(Interrupted):
    """Asked to give the worker up to a higher-priority run (``jobs.preemption``): it goes
    back to the queue, checkpointed."""


class TrainingDiverged(Exception):
    """The loss stopped being a finite number."""


class SpecNoLongerValid(Exception):
    """The stored spec does not validate on this worker any more."""


class Pruned(Exception):
    """A search's pruner judged the trial hopeless."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"{PRUNED} {epoch}")


def reset_seed(seed: int, *, deterministic: bool = False) -> None:
    """The chapter's ``reset_seed`` (hash seed, Python, NumPy, the backend), plus Keras 3's
    global seed generator, which a warm process would otherwise carry from job to job; op
    determinism on for a deterministic run and off again for the next one in the process."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)
    determinism(deterministic)


class LeaseKeeper(threading.Thread):
    """Renews the run's lease in the background, also through long compiles and validations."""

    def __init__(self, job: Job) -> None:
        super().__init__(name=f"lease-{job.experiment_id}", daemon=True)
        self.job = job
        self.done = threading.Event()

    def run(self) -> None:
        every = self.job.settings.lease_seconds / 4
        while not self.done.wait(every):
            try:
                held = renew_lease(
                    self.job.engine,
                    self.job.experiment_id,
                    self.job.owner,
                    lease_seconds=self.job.settings.lease_seconds,
                )
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("could not renew the lease of %s", self.job.experiment_id)
                continue
            if not held:
                self.job.lease_lost.set()
                return


class EpochRecorder(keras.callbacks.Callback):
    """Writes each finished epoch's row, and a checkpoint when one is due, the moment the
    epoch ends."""

    def __init__(
        self,
        job: Job,
        saver: Checkpointer,
        spec: ExperimentSpec,
        trial: TrialReporter | None,
    ) -> None:
        super().__init__()
        self.job = job
        self.saver = saver
        self.learning_rate = spec.optimizer.learning_rate
        self.epochs = spec.training.epochs
        self.trial = trial
        self.seed = spec.seed
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()
        self.saver.epoch_began()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        self.saver.at_train_end()  # before early stopping restores its best weights

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        number = epoch + 1
        if not math.isfinite(logs["loss"]):
            became = "NaN" if math.isnan(logs["loss"]) else "infinite"
            raise TrainingDiverged(
                f"loss became {became} at epoch {number} "
                f"(learning rate {self.learning_rate} too high?)"
            )
        metrics = EpochMetrics(
            epoch=number,
            loss=float(logs["loss"]),
            accuracy=float(logs["accuracy"]),
            val_loss=_finite_or_none(logs.get("val_loss")),
            val_accuracy=_finite_or_none(logs.get("val_accuracy")),
            seconds=time.perf_counter() - self.started,
            learning_rate=current_rate(self.model.optimizer),
        )
        checkpoint = self.saver.at_epoch_end(last=number == self.epochs)
        job = self.job
        job.durably(
            f"recording epoch {number}",
            lambda: record_epoch(
                job.engine,
                job.experiment_id,
                job.owner,
                metrics,
                checkpoint=checkpoint,
                lease_seconds=job.settings.lease_seconds,
            ),
        )
        log.info("experiment %s epoch %d: %s", job.experiment_id, number, metrics)
        trial = self.trial
        if trial is not None and job.durably(
            "reporting to the search", lambda: trial.should_prune(number, logs, seed=self.seed)
        ):
            raise Pruned(number)


class StopCheck(keras.callbacks.Callback):
    """Stops training at a batch boundary: cancel or pause flag, worker shutdown or a lost lease."""

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.checked = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        due = time.monotonic() - self.checked >= CANCEL_POLL_SECONDS
        if due or stop_requested.is_set() or self.job.lease_lost.is_set():
            self._check()

    def _check(self) -> None:
        if self.job.lease_lost.is_set():
            raise LeaseLost(self.job.experiment_id)
        if stop_requested.is_set():
            raise Interrupted
        self.checked = time.monotonic()
        try:
            wanted = requested_stop(self.job.engine, self.job.experiment_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            return  # the database is away: train on, and ask again at the next poll
        if wanted == Status.cancelled:
            raise Cancelled
        if wanted == Status.paused:
            raise Paused
        if wanted == Status.queued:
            raise Yielded


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' EarlyStopping, its patience count rebuilt from the epochs already recorded."""

    def __init__(self, past: list[dict[str, float | None]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.past = past

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        for epoch, past_logs in enumerate(self.past):
            super().on_epoch_end(epoch, past_logs)


def fit(
    spec: ExperimentSpec,
    job: Job,
    resume_from: tuple[int, keras.Model | None],
    saver: Checkpointer,
    keeper: BestKeeper,
    trial: TrialReporter | None = None,
) -> None:
    """Train ``spec`` the chapter's way (seeded, test set as validation unless told otherwise),
    from ``resume_from``'s epoch and model, or from scratch; ``saver`` checkpoints it."""
    data = prepare(
        spec.dataset.name,
        job.settings.resolved_data_dir,
        train_size=spec.dataset.train_size,
        test_size=spec.dataset.test_size,
        seed=spec.seed,
        record=job.dataset,
    )
    reset_seed(spec.seed, deterministic=spec.training.deterministic)
    initial_epoch, model = resume_from
    fresh = model is None
    if model is None:
        model = build_model(spec)
    check_built(model, spec, rate=fresh or spec.training.lr_schedule is None)
    compile_steps(model)
    saver.watch(model)
    keeper.watch(model, initial_epoch)
    pixel_max = DATASETS[spec.dataset.name].pixel_max
    x_train, x_test = (as_input(model, x, pixel_max) for x in (data.x_train, data.x_test))
    inputs = feed(model, x_train, x_test, on_device=wanted(job.settings.train_data_on_device))
    callbacks: list[keras.callbacks.Callback] = [
        StopCheck(job),
        EpochRecorder(job, saver, spec, trial),
        keeper,
    ]  # in this order: the recorder and the keeper see the last weights before a restore
    past = _past_logs(job, initial_epoch) if initial_epoch else []
    if spec.training.lr_schedule is not None:
        callbacks.insert(0, ScheduledRate(spec, past))  # each epoch's rate set before it begins
    if spec.training.early_stopping is not None:
        callbacks.append(ResumableEarlyStopping(past, **spec.training.early_stopping.model_dump()))
    validation: dict[str, Any] = (
        {"validation_data": (inputs.x_test, data.y_test)}
        if spec.training.validation_split is None
        else {"validation_split": spec.training.validation_split}
    )
    inputs.trainer.fit(
        inputs.x_train,
        data.y_train,
        batch_size=spec.training.batch_size,
        epochs=spec.training.epochs,
        initial_epoch=initial_epoch,
        callbacks=callbacks,
        verbose=0,
        **validation,
    )


def run_experiment(experiment_id: str) -> None:
    """Claim, train and close one experiment; every outcome ends in its row.

    A worker that is shutting down leaves the run to the sweeper to publish again; one that
    cannot reach the database hands the message back to the broker instead.
    """
    settings = get_settings()
    engine = get_engine()
    if stop_requested.is_set():
        _leave_to_the_sweeper(engine, experiment_id)
        return
    owner = this_process()
    try:
        claimed = Job(engine, experiment_id, owner, settings).durably(
            "claiming the next run",
            lambda: claim_next(
                engine,
                experiment_id,
                owner,
                lease_seconds=settings.lease_seconds,
                max_lost=settings.max_workers_lost,
                max_running_per_user=settings.max_running_per_user,
                accelerator=accelerator(),
                environment=environment(),
                holder_gone=is_gone,
            ),
            give_up=stop_requested,
        )
    except DatabaseUnavailable as exc:
        raise Reject(f"{exc}; message handed back", requeue=True) from None
    if claimed is None:
        log.info("woken for %s, but no run is waiting (taken, or finished)", experiment_id)
        return
    experiment = claimed.experiment
    experiment_id = experiment.id  # the fair-share order's choice, not always the message's
    job = Job(engine, experiment_id, owner, settings, experiment.dataset)
    keeper = LeaseKeeper(job)
    keeper.start()
    study = None
    try:
        study = job.durably("reading its study", lambda: _search_study(engine, experiment))
        _train_and_close(job, experiment, study)
    except LeaseLost:
        log.warning("experiment %s: lease lost to another worker; stopped", experiment_id)
    except DatabaseUnavailable as exc:
        log.error("experiment %s: %s; its lease will expire and it will resume", experiment_id, exc)
    finally:
        keeper.done.set()
        keras.backend.clear_session()  # and a full garbage collection (free_memory's default)
    if study is not None:
        job.durably("starting the next trial", lambda: advance(engine, app, settings, study.id))
    with contextlib.suppress(*DATABASE_ERRORS):  # what this misses, the sweeper judges
        settle(engine, experiment_id)  # if it is a verification rerun that succeeded


def _leave_to_the_sweeper(engine: Engine, experiment_id: str) -> None:
    """A message taken while stopping: the run stays queued, to be published again (handing
    the message back to the broker would give it straight back to this worker)."""
    try:
        undispatch(engine, experiment_id)
    except DATABASE_ERRORS as exc:
        raise Reject(f"worker shutting down ({exc}); message handed back", requeue=True) from None
    log.info("experiment %s not started: this worker is shutting down", experiment_id)


def _train_and_close(job: Job, experiment: Experiment, study: Study | None) -> None:
    """Everything from the claim to the end, the steps before the first epoch included: any
    of them that fails ends the run ``failed`` with its reason, its lease released."""
    saver = Checkpointer(job.settings.checkpoint_seconds)
    keeper = None
    try:
        spec = _resolved(experiment.spec)
        trial = _trial(job, study, experiment.trial_number)
        start = _starting_point(job)
        keeper = BestKeeper(job, spec)
        fit(spec, job, start, saver, keeper, trial)
        record_evaluation(job, spec, saver.model)
    except Interrupted as stopped:
        _hand_back(job, saver, keeper, stopped)
        return
    except (LeaseLost, DatabaseUnavailable):
        raise
    except Exception as exc:
        status, error = _ending(job, exc)
    else:
        status, error = Status.succeeded, None
    final = saver.at_stop() if status != Status.failed else None  # a failed run's are suspect
    job.durably(
        "recording its end",
        lambda: finish(job.engine, job.experiment_id, job.owner, status, error, checkpoint=final),
    )


def _resolved(stored: dict[str, Any]) -> ExperimentSpec:
    """The stored spec, validated again here: what it names (a folder dataset's layout, say)
    may have changed since it was submitted."""
    try:
        return ExperimentSpec.model_validate(stored)
    except ValidationError as exc:
        reasons = "; ".join(
            f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in exc.errors()
        )
        raise SpecNoLongerValid(
            f"its spec no longer holds on this worker ({reasons}); fix that, or rerun it "
            "with a spec the server accepts now"
        ) from None


def _trial(job: Job, study: Study | None, number: int | None) -> TrialReporter | None:
    """The search trial the run reports its epochs to, if it is one."""
    if study is None or number is None:
        return None
    url = job.settings.resolved_database_url
    return job.durably("opening its trial", lambda: reporter(url, study, number))


def _starting_point(job: Job) -> tuple[int, keras.Model | None]:
    """The newest loadable checkpoint's epoch and model (0 and None: from scratch), the
    epochs after it rewound."""
    candidates = job.durably(
        "reading checkpoints", lambda: checkpoints(job.engine, job.experiment_id)
    )
    epoch, model = newest_loadable(candidates)
    job.durably(
        "rewinding to its checkpoint",
        lambda: rewind(job.engine, job.experiment_id, job.owner, to_epoch=epoch),
    )
    if epoch:
        log.info("experiment %s resumes after epoch %d", job.experiment_id, epoch)
    return epoch, model


def _hand_back(
    job: Job, saver: Checkpointer, keeper: BestKeeper | None, stopped: Interrupted
) -> None:
    """A paused, yielded or interrupted run goes back with its weights, to resume later."""
    if keeper is not None:
        keeper.store()
    reached = saver.at_stop()
    job.durably(
        "handing the run back",
        lambda: release(job.engine, job.experiment_id, job.owner, reached),
    )
    how = {Paused: "paused", Yielded: "yielded to a higher priority"}.get(
        type(stopped), "interrupted by shutdown"
    )
    log.info("experiment %s %s; its weights kept, its worker free", job.experiment_id, how)


def _ending(job: Job, exc: Exception) -> tuple[Status, str | None]:
    """How a run that raised ``exc`` ends: its status and the sentence that says why."""
    if isinstance(exc, Cancelled):
        return Status.cancelled, None
    if isinstance(exc, Pruned):
        return Status.cancelled, str(exc)
    if isinstance(exc, DatasetUnavailable | TrainingDiverged | SpecNoLongerValid | BuiltDiffers):
        return Status.failed, str(exc)
    if is_out_of_memory(exc):
        return (
            Status.failed,
            "Ran out of memory while training; lower training.batch_size or the model's size.",
        )
    log.error("experiment %s failed", job.experiment_id, exc_info=exc)
    return Status.failed, f"Training crashed: {type(exc).__name__}: {exc}"


def _search_study(engine: Engine, experiment: Experiment) -> Study | None:
    """The search study the experiment is a trial of, if it is one."""
    return None if experiment.study_id is None else search_study(engine, experiment.study_id)


def _past_logs(job: Job, up_to: int) -> list[dict[str, float | None]]:
    """The recorded epochs 1..up_to as Keras logs, to rebuild early stopping's state."""

    rows = job.durably("reading its history", lambda: epochs_of(job.engine, job.experiment_id))
    return [
        {key: getattr(row, key) for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for row in rows
        if row.epoch <= up_to
    ]


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
