"""One settings object for the API and the worker, read from ``CONVLAB_*`` variables."""

from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where state lives, which services to talk to, and the limits: each field is a row of the
    table in docs/config.md (tests/test_settings_documented.py holds them together); timings no
    operator needs of their own are derived below or are constants where they are used."""

    model_config = SettingsConfigDict(env_prefix="CONVLAB_", extra="ignore")

    # Server
    auth: bool = Field(
        False, description="Require 'Authorization: Bearer <token>' on every path but /health."
    )
    reads_owner_only: bool = Field(
        False, description="With auth on: users see only their own experiments and studies."
    )
    token_cache_seconds: float = Field(
        2.0,
        ge=0,
        le=60,
        description=(
            "How long an API process trusts a token it found live before it looks it up again "
            "(with auth): a revoked token stops working within this time; 0 looks every "
            "request's token up."
        ),
    )
    allowed_hosts: list[str] = Field(
        [],
        description=(
            "Host names (a JSON list) the API answers to besides localhost, 127.0.0.1, [::1] "
            "and the address a request came in on. With auth off any other Host header is a "
            "400 (DNS rebinding); with auth on, Host headers are checked only when this is set."
        ),
    )
    cors_origins: list[str] = Field(
        [], description="Browser origins allowed to call the API (none by default)."
    )
    api_threads: int = Field(
        2,
        ge=1,
        le=200,
        description=(
            "Worker threads for the API's sync routes (each runs one at a time); more only "
            "take turns at the GIL, and stretch the slowest answers (bench/queries.py)."
        ),
    )
    sweep_interval_s: float = Field(5, gt=0, description="How often the API's sweeper runs.")

    # Database and broker
    database_url: str | None = Field(None, description="Default: SQLite at HOME/convlab.sqlite.")
    broker_url: str | None = Field(
        None, description="Default: kombu's SQLAlchemy transport on SQLite at HOME/broker.sqlite."
    )
    lease_seconds: float = Field(
        60,
        gt=0,
        description="A run whose worker has not renewed its lease for this long is requeued.",
    )
    redispatch_after_s: float = Field(
        90,
        gt=0,
        description=(
            "A queued run unclaimed this long after its message was sent is published again "
            "when the broker holds fewer messages than there are queued runs (one was lost)."
        ),
    )
    db_outage_s: float = Field(
        300,
        ge=0,
        description=(
            "How long a worker waits out an unreachable database (retrying with backoff) "
            "before it gives its message or run back."
        ),
    )

    # Worker and training
    worker_name: str | None = Field(
        None,
        max_length=120,
        pattern=r"^[^/]+$",
        description=(
            "This machine's name in leases and the experiment's 'worker' (default: its host "
            "name); workers that share a name must share a machine."
        ),
    )
    worker_nice: int = Field(
        10,
        ge=0,
        le=19,
        description=(
            "The niceness training processes run at (0: as the worker; 19: the lowest "
            "priority): an API on the same machine keeps answering while they train."
        ),
    )
    worker_max_jobs: int = Field(
        50, ge=1, description="A training process is replaced after this many jobs."
    )
    max_workers_lost: int = Field(
        3, ge=1, description="A run whose worker died this many times fails instead of retrying."
    )
    checkpoint_seconds: float = Field(
        30,
        ge=0,
        description=(
            "A running job saves its weights at an epoch's end at most this often (0: every "
            "epoch), and always when it stops; a worker that dies loses at most this much "
            "training."
        ),
    )
    jobs_per_gpu: int = Field(
        1,
        ge=1,
        le=64,
        description=(
            "Runs a worker trains at once on each GPU it is given, each in its own training "
            "process with its share of the GPU's memory (on a CPU worker: runs at once, "
            "splitting its cores)."
        ),
    )
    gpu_memory_per_job_mb: int | None = Field(
        None,
        ge=64,
        description=(
            "The GPU memory each training process may take (default: its GPU's memory shared "
            "among CONVLAB_JOBS_PER_GPU, less each process's CUDA context; with one job per "
            "GPU, it grows as needed)."
        ),
    )
    require_gpu: bool = Field(
        False,
        description="A worker that sees no GPU (through NVIDIA's driver) refuses to start.",
    )
    train_data_on_device: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Keep a job's pictures on the accelerator for its whole run (auto: on a GPU).",
    )
    mixed_precision: Literal["off", "bf16", "fp16"] = Field(
        "off", description="16-bit compute with float32 weights and softmax (for GPUs)."
    )
    preempt_after_s: float = Field(
        30,
        ge=0,
        description=(
            "A high-priority run queued this long with no free worker it fits has the "
            "lowest-priority running run asked to yield (checkpoint and requeue)."
        ),
    )
    preempt_low: bool = Field(
        False, description="Normal-priority runs preempt low-priority ones too (after the wait)."
    )
    max_preemptions: int = Field(
        3, ge=0, description="A run preempted this many times is not asked to yield again."
    )
    keras_backend: str = Field(
        "tensorflow",
        description="The Keras backend a worker trains on: tensorflow, jax or torch (checked "
        "when the worker starts).",
    )

    # Limits
    max_parameters: int = Field(50_000_000, ge=1, description="Largest model accepted.")
    max_activation_mb: int = Field(
        8192, ge=1, description="Largest estimated activation memory of one batch accepted."
    )
    max_active_per_user: int = Field(
        200, ge=1, description="Queued plus running experiments one user may have (with auth)."
    )
    max_running_per_user: int | None = Field(
        None,
        ge=1,
        description=(
            "Runs one user may have training at once, on all workers together (unset: no cap); "
            "the claim enforces it in the database."
        ),
    )
    max_submissions_per_minute: int = Field(
        120, ge=1, description="POSTs one user may make a minute (with auth)."
    )
    max_reads_per_minute: int = Field(
        1200,
        ge=1,
        description=(
            "GET and HEAD requests one user may make a minute (with auth; 429 over it). "
            "/health and the dashboard's files are never counted."
        ),
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body.")
    max_dataset_bytes: int = Field(
        200_000_000,
        ge=1024,
        description="Largest dataset upload (POST /datasets): the body, and its arrays unpacked.",
    )
    max_upload_pixels: int = Field(
        262_144,
        ge=1024,
        description=(
            "Largest picture a prediction decodes, in pixels, read from its header before any "
            "decoding: 512x512, 256 times the largest dataset's 32x32, so a picture needs no "
            "exact size, yet decoding one costs a few MB at most (a 12000x12000 PNG of 20 KB "
            "took about 1 GB)."
        ),
    )
    max_predictions_per_user: int = Field(
        2,
        ge=1,
        description=(
            "Predictions one user (with auth off: one client address) may have running at "
            "once; more are a 429."
        ),
    )
    max_event_streams_per_user: int = Field(
        50,
        ge=1,
        description=(
            "Event streams one user (with auth off: one client address) may have open: a "
            "dashboard tab holds one or two, a script following a search's trials a few "
            "dozen; ten users at this cap fit under max_event_streams."
        ),
    )
    max_event_streams: int = Field(
        500,
        ge=1,
        description=(
            "Event streams the server may have open in all (with a Redis broker, across its API "
            "processes; else in each process): each holds a socket (a "
            "process commonly may open 1024 files) and reads the database every "
            "half second (500 streams: about 1000 small reads a second)."
        ),
    )

    # Notifications
    notify_secret: str | None = Field(
        None,
        min_length=16,
        description=(
            "The key notifications are signed with (HMAC-SHA256, header X-Convlab-Signature); "
            "without it the server sends none and refuses 'notify'."
        ),
    )
    notify_allowed_hosts: str = Field(
        "",
        description=(
            "Comma-separated host names a 'notify' URL may name although they are loopback or "
            "private addresses (refused otherwise: the server must not be a way into the LAN)."
        ),
    )
    notify_attempts: int = Field(6, ge=1, le=20, description="Deliveries tried per notification.")
    notify_timeout_s: float = Field(
        5, gt=0, description="How long one delivery attempt may take in all, answer included."
    )

    # Storage
    home: Path = Field(Path("var"), description="State: SQLite files and anything else on disk.")
    data_dir: Path | None = Field(
        None, description="Dataset archives, looked up before any download (default HOME/data)."
    )
    retention_days: float | None = Field(
        None,
        gt=0,
        description=(
            "Runs that ended longer ago than this keep only what retention_keep says (pinned "
            "runs keep everything); unset: every run keeps its weights for good."
        ),
    )
    retention_keep: Literal["final", "best-of-study", "none"] = Field(
        "final",
        description=(
            "What an old run keeps: final (its trained model, with the optimizer's state; the "
            "best epoch's copy goes), best-of-study (as final, but in a study only its best "
            "run's), none (no weights)."
        ),
    )
    storage_quota_mb: float | None = Field(
        None,
        gt=0,
        description=(
            "What one user may store, their runs' weights (checkpoints and best-epoch copies) "
            "and their dataset uploads together, before a new submission or upload of theirs "
            "is refused; unset: no quota."
        ),
    )

    @field_validator("notify_secret", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """An empty CONVLAB_NOTIFY_SECRET (as compose passes an unset one) means none."""
        return None if value == "" else value

    @property
    def db_pool_size(self) -> int:
        """Pooled connections per process: the sync routes' threads, and ten for the token
        and event-stream threads and the loops, so no thread waits for a connection held by a
        request that is itself waiting for a thread."""
        return self.api_threads + 10

    @property
    def dispatch_grace_s(self) -> float:
        """A queued row unpublished this long is published by the sweeper: two sweeps, well
        past the moment between a submission's commit and its own publish."""
        return 2 * self.sweep_interval_s

    @property
    def heartbeat_seconds(self) -> float:
        """How often each training process tells the database it is alive: six beats a lease."""
        return self.lease_seconds / 6

    @property
    def workers_seen_s(self) -> float:
        """GET /workers lists the processes heard from within a lease (those not heard from
        for longer lose their runs to the sweeper anyway)."""
        return self.lease_seconds

    @property
    def notify_retry_s(self) -> float:
        """The wait after a failed delivery, doubled after each further one: two deadlines."""
        return 2 * self.notify_timeout_s

    @property
    def notify_hosts(self) -> frozenset[str]:
        """The hosts of ``notify_allowed_hosts``, lower case."""
        hosts = (host.strip().lower() for host in self.notify_allowed_hosts.split(","))
        return frozenset(host for host in hosts if host)

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.home / "data"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'convlab.sqlite'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.home.resolve() / 'broker.sqlite'}"

    @property
    def broker_is_redis(self) -> bool:
        """Whether the broker is a Redis (the compose stack's), where the API's processes
        count the per-user limits together."""
        return self.resolved_broker_url.startswith(("redis://", "rediss://"))


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings
