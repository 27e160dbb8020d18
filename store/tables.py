"""The SQL tables: one row per experiment, one row per finished epoch."""

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
)
from sqlmodel import Field, SQLModel

from models.status import Priority, Status


def utcnow() -> datetime:
    return datetime.now(UTC)


def _timestamp(*, index: bool = False) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), index=index)


class Notified(SQLModel):
    """Where to say that a run or study has ended (``jobs.notify``), and how that went."""

    notify_url: str | None = Field(default=None, max_length=2048)
    notify_state: str | None = Field(default=None, max_length=16, index=True)
    """pending until delivered or failed; None without a notify URL."""
    notify_attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    notify_next_at: datetime | None = _timestamp()
    """No attempt before this (the backoff after a failed one)."""
    notify_error: str | None = Field(default=None, sa_type=Text)
    """Why the last attempt failed."""

    @property
    def notification(self) -> dict[str, Any] | None:
        """How announcing its end went (None without a notify URL)."""
        if self.notify_state is None:
            return None
        return {
            "state": self.notify_state,
            "attempts": self.notify_attempts,
            "error": self.notify_error,
        }


class Study(Notified, table=True):
    """A group of experiments compared side by side: variants crossed with seeds."""

    __tablename__ = "convlab_studies"  # Optuna's tables share the database and own "studies"

    id: str = Field(primary_key=True, max_length=32)
    name: str | None = Field(default=None, max_length=200)
    kind: str = Field(max_length=16)
    """How the variants were given: template, presets, variants, grid or search."""
    owner: str | None = Field(default=None, max_length=64, index=True)
    definition: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The request as submitted; a search reads its space, sampler and pruner from here."""
    seeds: list[int] = Field(sa_column=Column(JSON, nullable=False))
    trials_started: int = 0
    """A search's trials created so far (claimed one at a time, so none is created twice)."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), index=True
    )
    cancel_requested: bool = False
    priority: Priority = Field(
        default=Priority.normal, sa_type=String(8), sa_column_kwargs={"server_default": "normal"}
    )
    """What its experiments inherit, search trials included."""
    epoch_seq: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})
    """How many epoch rows its experiments have recorded: each takes the next number as its
    ``study_seq`` (``store.runs.record_epoch``), in the order they commit."""


def _experiment_key() -> Any:
    """Part of a primary key: the experiment a row belongs to, deleted with it."""
    return Field(
        sa_column=Column(
            String(32), ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True
        )
    )


class Experiment(Notified, table=True):
    __tablename__ = "experiments"

    id: str = Field(primary_key=True, max_length=32)
    name: str | None = Field(default=None, max_length=200)
    preset: str = Field(max_length=64, index=True)
    status: Status = Field(default=Status.queued, sa_type=String(16), index=True)
    spec: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    study_id: str | None = Field(default=None, max_length=32, index=True)
    owner: str | None = Field(default=None, max_length=64, index=True)
    """The user who submitted it (None while auth is off)."""
    variant: str | None = Field(default=None, max_length=200)
    """Its row in the study's table (the seeds of one variant share it)."""
    trial_number: int | None = None
    """The Optuna trial it evaluates, in a search study."""
    created_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), index=True
    )
    started_at: datetime | None = _timestamp()
    finished_at: datetime | None = _timestamp()
    epochs_done: int = 0
    epochs_total: int
    attempts: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    final: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    best: dict[str, float] | None = Field(default=None, sa_column=Column(JSON))
    cancel_requested: bool = False
    dispatched_at: datetime | None = _timestamp()
    """When its message was last handed to the broker; None: the sweeper must (re)publish it."""
    lease_owner: str | None = Field(default=None, max_length=200)
    """The training process that holds the row: ``host/pid/start-time``."""
    lease_expires_at: datetime | None = _timestamp()
    workers_lost: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Attempts that ended with their process gone (killed, crashed, machine lost)."""
    tags: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    notes: str | None = Field(default=None, sa_type=Text)
    parent_id: str | None = Field(default=None, max_length=32, index=True)
    """The experiment it was rerun or continued from."""
    epoch_offset: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Epochs its parent had trained when it was continued: its epochs are numbered after."""
    pause_requested: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    priority: Priority = Field(
        default=Priority.normal, sa_type=String(8), sa_column_kwargs={"server_default": "normal"}
    )
    pinned: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    """Kept whatever the retention setting says."""
    preemptions: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Times it gave its worker up to a higher-priority run (``jobs.preemption``)."""
    yield_requested: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    """Asked to give its worker up: it checkpoints at its next batch and goes back queued."""
    preempt_asked: bool = Field(default=False, sa_column_kwargs={"server_default": "0"})
    """A queued run that has had a running one asked to yield for it (once per wait)."""
    queued_at: datetime | None = _timestamp()
    """When it last went back to the queue (None: it has waited since ``created_at``)."""
    dataset: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """What it trains on, recorded at submit: name, kind, shape, classes, counts, digest."""
    verifies_id: str | None = Field(default=None, max_length=32, index=True)
    """The experiment this one reruns to verify (``POST /experiments/{id}/verify``)."""
    verdict: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON(none_as_null=True)))
    """How its verification rerun compared with it, recorded on both runs (SQL NULL until
    then, so that the runs still to judge can be found)."""


class EpochRecord(SQLModel, table=True):
    """One finished epoch; the primary key keeps one row per (experiment, epoch)."""

    __tablename__ = "epochs"

    experiment_id: str = _experiment_key()
    epoch: int = Field(primary_key=True)
    loss: float
    accuracy: float
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float
    learning_rate: float | None = None
    """The optimizer's learning rate during the epoch."""
    recorded_at: datetime = Field(
        default_factory=utcnow, sa_type=DateTime(timezone=True), index=True
    )  # the metrics scrape reads the newest rows (store.monitoring.epochs_recorded_after)
    study_seq: int | None = Field(default=None, sa_type=BigInteger)
    """Its place among its study's epoch rows in commit order (None outside a study): what a
    study's event stream resumes after."""

    __table_args__ = (Index("ix_epochs_experiment_id_study_seq", "experiment_id", "study_seq"),)


class Checkpoint(SQLModel, table=True):
    """Weights and optimizer state after ``epoch`` finished epochs (a ``.keras`` archive)."""

    __tablename__ = "checkpoints"

    experiment_id: str = _experiment_key()
    epoch: int = Field(primary_key=True)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Evaluation(SQLModel, table=True):
    """A finished run's test set, class by class: evaluated once, when the run ends."""

    __tablename__ = "evaluations"

    experiment_id: str = _experiment_key()
    weights: str = Field(max_length=8)
    """The weights evaluated: ``best`` or ``last``."""
    classes: list[str] = Field(sa_column=Column(JSON, nullable=False))
    per_class_accuracy: list[float] = Field(sa_column=Column(JSON, nullable=False))
    confusion: list[list[int]] = Field(sa_column=Column(JSON, nullable=False))
    """Rows: the true class; columns: the predicted one."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class BestCheckpoint(SQLModel, table=True):
    """The model after the epoch with the best monitored value so far (the early-stopping
    monitor, else val_loss), kept apart from the rolling checkpoints."""

    __tablename__ = "best_checkpoints"

    experiment_id: str = _experiment_key()
    epoch: int
    monitor: str = Field(max_length=16)
    value: float
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ApiToken(SQLModel, table=True):
    """A bearer token: only a hash of its secret is stored; the token is shown once."""

    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=16)
    user: str = Field(max_length=64, index=True)
    admin: bool = False
    secret_sha256: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    revoked_at: datetime | None = _timestamp()


class WorkerRecord(SQLModel, table=True):
    """A training process, as its last heartbeat described it."""

    __tablename__ = "workers"

    name: str = Field(primary_key=True, max_length=200)
    """The process as a lease owner: ``host/pid/start`` (an experiment's ``worker``)."""
    host: str = Field(max_length=120)
    pid: int
    accelerator: str = Field(max_length=200)
    """The GPU's name as its driver reports it, or "cpu"."""
    accelerator_memory_mb: int | None = None
    started_at: datetime = Field(sa_type=DateTime(timezone=True))
    heartbeat_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    gpu_utilization: int | None = None
    """Percent of the last sample period its GPU was busy (NVML); None without one."""
    gpu_memory_used_mb: int | None = None
    slot: int | None = None
    """Which of its worker's slots it is (0 first; None: beaten before slots)."""
    slots: int | None = None
    """How many slots its worker has (``CONVLAB_JOBS_PER_GPU`` on each GPU, or on the CPU)."""
    gpu_memory_limit_mb: int | None = None
    """The GPU memory its TensorFlow may take (None: grown as needed, or no GPU)."""


class Attempt(SQLModel, table=True):
    """One claim of an experiment: which process ran it, on which accelerator, from when."""

    __tablename__ = "attempts"

    experiment_id: str = _experiment_key()
    number: int = Field(primary_key=True)
    worker: str = Field(max_length=200)
    accelerator: str | None = Field(default=None, max_length=200)
    accelerator_memory_mb: int | None = None
    started_at: datetime = Field(sa_type=DateTime(timezone=True), index=True)
    environment: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    """What it ran with: Python, TensorFlow, Keras, CUDA, cuDNN, GPU and driver, convlab."""
