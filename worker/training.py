"""One experiment's training run: claim it, resume from its newest checkpoint or start fresh,
fit, and record every epoch with a checkpoint the moment it ends."""

import gc
import logging
import math
import os
import threading
import time
from typing import Any

import keras
import tensorflow as tf
from celery.exceptions import Reject
from sqlalchemy import Engine

from core.catalog import DATASETS
from core.config import Settings, get_settings
from core.db import get_engine, session_scope
from core.experiments import history
from core.leases import this_process
from core.runs import (
    EpochMetrics,
    LeaseLost,
    cancel_requested,
    checkpoints,
    claim,
    finish,
    record_epoch,
    release,
    renew_lease,
    rewind,
)
from core.search import PRUNED, TrialReporter, advance
from core.tables import Experiment, Status, Study
from models.build import Speed, as_input, build_model
from models.spec import ExperimentSpec
from worker.celery_app import app
from worker.checkpoints import newest_loadable, to_bytes
from worker.cores import cores_given
from worker.datasets import DatasetUnavailable, prepare
from worker.resident import feed, wanted
from worker.stop import stop_requested

log = logging.getLogger(__name__)


def _configure_tensorflow(settings: Settings) -> None:
    """Process-wide choices, made before TensorFlow runs its first op."""
    for gpu in tf.config.list_physical_devices("GPU"):
        tf.config.experimental.set_memory_growth(gpu, True)  # share nothing it does not use
    threads = settings.train_threads or cores_given()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    policies = {"bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
    if settings.mixed_precision in policies:
        keras.mixed_precision.set_global_policy(policies[settings.mixed_precision])


_configure_tensorflow(get_settings())


class Cancelled(Exception):
    """Someone asked the experiment to stop."""


class Interrupted(Exception):
    """The worker is shutting down; the job goes back to the queue."""


class TrainingDiverged(Exception):
    """The loss stopped being a finite number."""


class Pruned(Exception):
    """A search's pruner judged the trial hopeless."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"{PRUNED} {epoch}")


def reset_seed(seed: int) -> None:
    """The chapter's ``reset_seed`` (hash seed, Python, NumPy, TensorFlow), plus Keras 3's
    global seed generator, which a warm process would otherwise carry from job to job."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    keras.utils.set_random_seed(seed)


class Job:
    """What the callbacks share: which experiment, which process holds it, how to write."""

    def __init__(self, engine: Engine, experiment_id: str, owner: str, settings: Settings) -> None:
        self.engine = engine
        self.experiment_id = experiment_id
        self.owner = owner
        self.settings = settings
        self.lease_lost = threading.Event()


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
            except Exception:
                log.exception("could not renew the lease of %s", self.job.experiment_id)
                continue
            if not held:
                self.job.lease_lost.set()
                return


class EpochRecorder(keras.callbacks.Callback):
    """Writes each finished epoch's row and checkpoint the moment the epoch ends."""

    def __init__(
        self, job: Job, saved: keras.Model, learning_rate: float, trial: TrialReporter | None
    ) -> None:
        super().__init__()
        self.job = job
        self.saved = saved
        self.learning_rate = learning_rate
        self.trial = trial
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

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
        )
        record_epoch(
            self.job.engine,
            self.job.experiment_id,
            self.job.owner,
            metrics,
            checkpoint=to_bytes(self.saved),
            lease_seconds=self.job.settings.lease_seconds,
            keep_checkpoints=self.job.settings.keep_checkpoints,
        )
        log.info("experiment %s epoch %d: %s", self.job.experiment_id, number, metrics)
        if self.trial is not None and self.trial.should_prune(number, logs):
            raise Pruned(number)


class StopCheck(keras.callbacks.Callback):
    """Stops training at a batch boundary: cancel flag, worker shutdown or a lost lease."""

    def __init__(self, job: Job) -> None:
        super().__init__()
        self.job = job
        self.checked = 0.0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._check()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        due = time.monotonic() - self.checked >= self.job.settings.cancel_poll_seconds
        if due or stop_requested.is_set() or self.job.lease_lost.is_set():
            self._check()

    def _check(self) -> None:
        if self.job.lease_lost.is_set():
            raise LeaseLost(self.job.experiment_id)
        if stop_requested.is_set():
            raise Interrupted
        self.checked = time.monotonic()
        if cancel_requested(self.job.engine, self.job.experiment_id):
            raise Cancelled


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
    trial: TrialReporter | None = None,
) -> None:
    """Train ``spec`` the chapter's way (seeded, test set as validation unless told otherwise),
    from ``resume_from``'s epoch and model, or from scratch."""
    data = prepare(
        spec.dataset.name,
        job.settings.resolved_data_dir,
        train_size=spec.dataset.train_size,
        test_size=spec.dataset.test_size,
        seed=spec.seed,
    )
    reset_seed(spec.seed)
    initial_epoch, model = resume_from
    if model is None:
        settings = job.settings
        speed = Speed(
            steps_per_execution=settings.train_steps_per_execution,
            jit_compile=settings.train_jit_compile,
        )
        model = build_model(spec, speed)
    pixel_max = DATASETS[spec.dataset.name].pixel_max
    x_train, x_test = (as_input(model, x, pixel_max) for x in (data.x_train, data.x_test))
    inputs = feed(model, x_train, x_test, on_device=wanted(job.settings.train_data_on_device))
    callbacks: list[keras.callbacks.Callback] = [
        StopCheck(job),
        EpochRecorder(job, model, spec.optimizer.learning_rate, trial),
    ]
    if spec.training.early_stopping is not None:
        past = _past_logs(job, initial_epoch)
        callbacks.append(ResumableEarlyStopping(past, **spec.training.early_stopping.model_dump()))
    validation: dict[str, Any] = (
        {"validation_data": (inputs.x_test, data.y_test)}
        if spec.training.validation_split is None
        else {"validation_split": spec.training.validation_split}
    )
    try:
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
    except Interrupted:
        release(job.engine, job.experiment_id, job.owner, to_bytes(model))
        raise


def run_experiment(experiment_id: str) -> None:
    """Claim, train and close one experiment; every outcome ends in its row.

    A worker that is shutting down hands the message back to the broker instead.
    """
    if stop_requested.is_set():
        raise Reject("worker shutting down", requeue=True)
    settings = get_settings()
    engine = get_engine()
    job = Job(engine, experiment_id, this_process(), settings)
    claimed = claim(
        engine,
        experiment_id,
        job.owner,
        lease_seconds=settings.lease_seconds,
        max_lost=settings.max_workers_lost,
    )
    if claimed is None:
        log.info(
            "experiment %s is not claimable (finished, or held by a live worker)", experiment_id
        )
        return
    keeper = LeaseKeeper(job)
    keeper.start()
    study = _search_study(engine, claimed.experiment)
    try:
        trial = None
        if study is not None and claimed.experiment.trial_number is not None:
            url = settings.resolved_database_url
            trial = TrialReporter(url, study, claimed.experiment.trial_number)
        _train_and_close(job, claimed.experiment.spec, trial)
    except LeaseLost:
        log.warning("experiment %s: lease lost to another worker; stopped", experiment_id)
    finally:
        keeper.done.set()
        keras.backend.clear_session()
        gc.collect()
    if study is not None:
        advance(engine, app, settings, study.id)


def _train_and_close(job: Job, stored_spec: dict[str, Any], trial: TrialReporter | None) -> None:
    spec = ExperimentSpec.model_validate(stored_spec)
    epoch, model = newest_loadable(checkpoints(job.engine, job.experiment_id))
    rewind(job.engine, job.experiment_id, job.owner, to_epoch=epoch)
    if epoch:
        log.info("experiment %s resumes after epoch %d", job.experiment_id, epoch)
    try:
        fit(spec, job, (epoch, model), trial)
    except Cancelled:
        finish(job.engine, job.experiment_id, job.owner, Status.cancelled)
    except Pruned as exc:
        finish(job.engine, job.experiment_id, job.owner, Status.cancelled, str(exc))
    except Interrupted:
        log.info("experiment %s interrupted by shutdown; back in the queue", job.experiment_id)
        raise Reject("worker shutting down", requeue=True) from None
    except (DatasetUnavailable, TrainingDiverged) as exc:
        finish(job.engine, job.experiment_id, job.owner, Status.failed, str(exc))
    except tf.errors.ResourceExhaustedError:
        finish(
            job.engine,
            job.experiment_id,
            job.owner,
            Status.failed,
            "Ran out of memory while training; lower training.batch_size or the model's size.",
        )
    except LeaseLost:
        raise
    except Exception as exc:
        log.exception("experiment %s crashed", job.experiment_id)
        finish(
            job.engine,
            job.experiment_id,
            job.owner,
            Status.failed,
            f"Training crashed: {type(exc).__name__}: {exc}",
        )
    else:
        finish(job.engine, job.experiment_id, job.owner, Status.succeeded)


def _search_study(engine: Engine, experiment: Experiment) -> Study | None:
    """The search study the experiment is a trial of, if it is one."""
    if experiment.study_id is None:
        return None
    with session_scope(engine) as session:
        study = session.get(Study, experiment.study_id)
    return study if study is not None and study.kind == "search" else None


def _past_logs(job: Job, up_to: int) -> list[dict[str, float | None]]:
    """The recorded epochs 1..up_to as Keras logs, to rebuild early stopping's state."""
    with session_scope(job.engine) as session:
        rows = history(session, job.experiment_id)
    return [
        {key: getattr(row, key) for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
        for row in rows
        if row.epoch <= up_to
    ]


def _finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
