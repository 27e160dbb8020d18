"""Request and response bodies of the HTTP contract (docs/API.md)."""

import math
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from models.epochs import EpochMetrics
from models.errors import error_entry
from models.search import SearchSpec
from models.spec import MAX_EPOCHS, ExperimentSpec
from models.status import Status
from models.studies import MAX_GRID_KEYS, MAX_GRID_VALUES, MAX_SEEDS, SECTIONS, StudyAsked
from store.experiments import MAX_TAGS, SpecValue
from views.report import TableRow


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive timestamps; every stored one is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]


def _printable(value: str) -> str:
    if any(unicodedata.category(character) == "Cc" for character in value):
        raise ValueError("must not hold control characters (NUL, tab, newline, escape)")
    return value


Label = Annotated[str, AfterValidator(_printable)]
"""A name people read: any Unicode text but control characters."""


def _all_printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must be printable characters (no control, format or line characters)")
    return value


def _text(value: str) -> str:
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise ValueError("must not hold control characters other than tab and line breaks")
    return value


Tag = Annotated[str, Field(min_length=1, max_length=64), AfterValidator(_all_printable)]
"""A label an experiment carries to be found by: 1 to 64 printable characters."""
Notes = Annotated[str, Field(max_length=10_000), AfterValidator(_text)]
"""Free text about an experiment: lines of any Unicode text."""

_SECTION = "Overrides merged key by key over the preset's {} (see ExperimentSpec)."


class SpecKeys(BaseModel):
    """A preset plus partial spec keys; nested objects merge over the preset, key by key."""

    model_config = ConfigDict(extra="forbid", strict=True)

    preset: str = Field("base", description="A name from GET /presets.")
    dataset: dict[str, Any] | None = Field(None, description=_SECTION.format("dataset"))
    model: dict[str, Any] | None = Field(None, description=_SECTION.format("model"))
    optimizer: dict[str, Any] | None = Field(
        None,
        description=(
            _SECTION.format("optimizer")
            + " Naming another optimizer starts from that optimizer's defaults."
        ),
    )
    training: dict[str, Any] | None = Field(None, description=_SECTION.format("training"))
    resources: dict[str, Any] | None = Field(
        None,
        description='What a worker must have to take the run: {"accelerator": "any" | "gpu" | '
        '"cpu" | a part of a GPU\'s name, "min_memory_mb": N} (default any; see Resources).',
    )

    def overrides(self) -> dict[str, Any]:
        """The spec keys the request set, without the preset (and without any own fields)."""
        return self.model_dump(exclude_unset=True, include={*SECTIONS, "seed"})


NotifyUrl = Annotated[
    str | None,
    Field(
        max_length=2048,
        description="A URL the server POSTs a signed JSON body to when this ends (docs/API.md, "
        "'Notifications'); loopback and private hosts only if the server allows them.",
    ),
]


PriorityName = Annotated[
    Literal["low", "normal", "high"],
    Field(
        description="Which queued runs start first; within one, users take turns. high: admins "
        "only."
    ),
]


class Notification(BaseModel):
    state: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="Deliveries tried so far.")
    error: str | None = Field(description="Why the last attempt failed.")


class ExperimentCreate(SpecKeys):
    name: Label | None = Field(None, max_length=200, description="A label for people.")
    notify: NotifyUrl = None
    priority: PriorityName = Field(
        "normal",
        description="With from, the default is that experiment's, lowered to normal where the "
        "caller may not submit high.",
    )
    seed: int | None = Field(None, description="Seeds Python, NumPy and TensorFlow.")
    from_: str | None = Field(
        None,
        alias="from",
        max_length=64,
        description=(
            "Rerun with changes: start from this experiment's resolved spec instead of a "
            "preset and merge the other keys over it."
        ),
    )


class ContinueCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    epochs: int = Field(ge=1, le=MAX_EPOCHS, description="Epochs to train after the parent's last.")
    priority: PriorityName | None = Field(
        None,
        description="Default: the parent's, lowered to normal where the caller may not submit "
        "high.",
    )


class VariantCreate(SpecKeys):
    """One row of a study: a name and overrides over the study's base."""

    name: Label = Field(min_length=1, max_length=200)
    preset: str | None = Field(None, description="Default: the study's preset.")  # type: ignore[assignment]


Seed = Annotated[int, Field(ge=0, le=2**31 - 1)]


class SeedsCreate(BaseModel):
    """More seeds for a study's variants: exactly one of ``seeds`` and ``add``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    seeds: list[Seed] | None = Field(
        None,
        min_length=1,
        max_length=MAX_SEEDS,
        description="These seeds, none of which the study has run (else a 422 naming them).",
    )
    add: int | None = Field(
        None, ge=1, le=MAX_SEEDS, description="This many seeds, those after its highest."
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and len(set(seeds)) != len(seeds):
            raise ValueError("seeds repeat")
        return seeds

    @model_validator(mode="after")
    def _one_way(self) -> "SeedsCreate":
        if (self.seeds is None) == (self.add is None):
            raise ValueError("give exactly one of seeds (a list) and add (a count)")
        return self


class StudyCreate(SpecKeys):
    """The spec keys are the base of every experiment; exactly one of template, presets,
    variants, grid or search says what varies; each variant runs once per seed."""

    name: Label | None = Field(None, max_length=200)
    notify: NotifyUrl = None
    priority: PriorityName = "normal"
    seeds: list[Seed] = Field([0], min_length=1, max_length=MAX_SEEDS)
    template: Literal["chapter"] | None = Field(None, description="chapter: its 13 presets.")
    presets: list[str] | None = Field(None, min_length=1, max_length=100)
    variants: list[VariantCreate] | None = Field(None, min_length=1, max_length=100)
    grid: dict[str, list[Any]] | None = Field(
        None,
        description='Values per spec field, e.g. {"optimizer.name": ["sgd", "adam"]}.',
        min_length=1,
        max_length=MAX_GRID_KEYS,
    )
    search: SearchSpec | None = Field(
        None, description="An Optuna search: trials are experiments, hopeless ones pruned."
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds repeat")
        return seeds

    @field_validator("grid")
    @classmethod
    def _grid_values(cls, grid: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        for key, values in (grid or {}).items():
            if not 1 <= len(values) <= MAX_GRID_VALUES:
                raise ValueError(f"grid key {key!r} needs 1 to {MAX_GRID_VALUES} values")
        return grid

    @model_validator(mode="after")
    def _one_kind(self) -> "StudyCreate":
        given = [kind for kind in KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)} (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in KINDS if getattr(self, kind) is not None)

    def asked(self) -> StudyAsked:
        """The request as ``models.studies`` expands and checks it."""
        return StudyAsked(
            kind=self.kind,
            preset=self.preset,
            base=self.overrides(),
            seeds=self.seeds,
            presets=self.presets,
            variants=[item.model_dump(exclude_unset=True) for item in self.variants or []],
            grid=self.grid,
            search=self.search,
        )


KINDS = ("template", "presets", "variants", "grid", "search")


class ExperimentUpdate(BaseModel):
    """What people change of an experiment: any subset of its name, tags, notes and pin."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Label | None = Field(None, max_length=200, description="A label for people.")
    tags: list[Tag] = Field(
        [], max_length=MAX_TAGS, description="Replaces its tags (at most 32; repeats are dropped)."
    )
    add_tags: list[Tag] = Field(
        [], max_length=MAX_TAGS, description="Added to its tags, in one step with any other change."
    )
    remove_tags: list[Tag] = Field(
        [], max_length=MAX_TAGS, description="Removed from its tags (after add_tags)."
    )
    notes: Notes | None = Field(None, description="Free text; null removes it.")
    pinned: bool = Field(
        False, description="Keep its weights whatever the retention setting says (true)."
    )

    @field_validator("tags", "add_tags", "remove_tags")
    @classmethod
    def _once_each(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))


def _scalar_fields(annotation: Any, path: str) -> Iterator[tuple[str, type]]:
    """The scalar fields at and under ``path`` of a spec type, each with the type its values
    compare as (bool, float for any number, or str); lists are left out."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _scalar_fields(get_args(annotation)[0], path)
    elif origin in (Union, UnionType):
        for member in get_args(annotation):
            yield from _scalar_fields(member, path)
    elif origin is Literal:
        yield path, type(get_args(annotation)[0])
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from _scalar_fields(field.annotation, f"{path}.{name}")
    elif annotation in (bool, int, float, str):
        yield path, float if annotation is int else annotation


SPEC_FIELDS = dict(_scalar_fields(ExperimentSpec, "spec"))
"""The ``spec.<dotted.path>`` parameters a listing filters on, with their values' types."""


def spec_filters(query: Iterable[tuple[str, str]]) -> list[tuple[str, SpecValue]]:
    """The dotted spec paths and values of a listing's ``spec.*`` parameters, each value as its
    field's type ("null": a null or absent field); a 422 naming the parameter otherwise."""
    return [
        (name.removeprefix("spec."), _spec_value(name, text))
        for name, text in query
        if name.startswith("spec.")
    ]


def _spec_value(name: str, text: str) -> SpecValue:
    kind = SPEC_FIELDS.get(name)
    if kind is None:
        choices = ", ".join(SPEC_FIELDS)
        raise _bad_parameter(name, text, f"{name} is no spec field; use one of {choices}")
    if text == "null":
        return None
    if kind is str:
        return text
    if kind is bool:
        if text not in ("true", "false"):
            raise _bad_parameter(name, text, f"{name} takes true, false or null")
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise _bad_parameter(name, text, f"{name} takes a number or null")
    return number


def _bad_parameter(name: str, value: str, message: str) -> RequestValidationError:
    return RequestValidationError([error_entry(("query", name), message, value)])


class Final(BaseModel):
    accuracy: float
    loss: float
    val_accuracy: float | None
    val_loss: float | None


class Best(BaseModel):
    epoch: int
    val_accuracy: float | None
    val_loss: float | None


class AcceleratorPublic(BaseModel):
    name: str = Field(description='The GPU as its driver names it, or "cpu".')
    memory_mb: int | None


class DatasetRecordPublic(BaseModel):
    """The data an experiment trains on, as it was when the experiment was submitted."""

    name: str
    kind: Literal["built-in", "upload", "folder"]
    shape: list[int] = Field(description="Height, width, channels of every image.")
    classes: int
    class_names: list[str] | None = Field(description="null: the classes are numbered.")
    train_count: int
    test_count: int
    digest: str | None = Field(
        description="SHA-256 of what the data is read from (docs/API.md, 'The dataset a run "
        "trained on'); null for a built-in whose archive was not in CONVLAB_DATA_DIR."
    )


class EnvironmentPublic(BaseModel):
    """What the training process ran with (null: not known to it, or not recorded by the
    worker that ran it)."""

    python: str | None = None
    backend: str | None = Field(
        None,
        description="The Keras backend that trained it: tensorflow, jax or torch (null: "
        "recorded before workers said; those trained on tensorflow).",
    )
    tensorflow: str | None = Field(None, description="Its version, when it was the backend.")
    jax: str | None = Field(None, description="Its version, when it was the backend.")
    torch: str | None = Field(None, description="Its version, when it was the backend.")
    keras: str | None = None
    cuda: str | None = Field(None, description="The CUDA version the backend was built with.")
    cudnn: str | None = Field(None, description="The cuDNN version the backend was built with.")
    gpu: str | None = Field(None, description='The GPU as its driver names it, or "cpu".')
    driver: str | None = Field(None, description="NVIDIA's driver version (null on a CPU).")
    convlab: str | None = Field(None, description="convlab's version.")
    commit: str | None = Field(
        None, description="The git commit of convlab's checkout (null when not run from one)."
    )


class AttemptPublic(BaseModel):
    number: int = Field(description="1 for the first claim; a resume after a loss is the next.")
    worker: str = Field(description="The process, host/pid/start, as GET /workers names it.")
    accelerator: AcceleratorPublic | None = Field(description="null where it was not recorded.")
    started_at: Timestamp
    environment: EnvironmentPublic | None = Field(
        None, description="What it ran with; null for attempts from before it was recorded."
    )


class Difference(BaseModel):
    original: Any
    rerun: Any


class Verdict(BaseModel):
    """How a verification rerun compared with the run it verifies (docs/API.md: "Verifying a
    run")."""

    original_id: str
    rerun_id: str
    outcome: Literal["identical", "within", "diverged"] = Field(
        description="identical: every epoch's metrics equal; within: the largest difference "
        "below 1e-6; diverged: not."
    )
    epochs: int = Field(description="Epochs compared (the longer history's).")
    diverged_at: int | None = Field(
        description="The first epoch that differs by 1e-6 or more, or that one run lacks."
    )
    largest_difference: float = Field(
        description="The largest absolute difference of one metric at one epoch."
    )
    largest_at: dict[str, Any] | None = Field(
        description='Where it is: {"epoch": k, "metric": name}; null when all are equal.'
    )
    summary: str = Field(description="The verdict in a sentence.")
    environment_differences: dict[str, Difference] = Field(
        description="Each environment field that differs between the attempts that ended them."
    )


class ExperimentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    tags: list[str]
    notes: str | None
    status: Status
    spec: dict[str, Any] = Field(
        description="The resolved spec, as stored at submission (see ExperimentSpec)."
    )
    dataset: DatasetRecordPublic | None = Field(
        None,
        description="What it trains on, recorded when it was submitted: predictions, model "
        "downloads and evaluation use it, whatever its dataset's name holds now (null: "
        "submitted before records were kept).",
    )
    study_id: str | None
    parent_id: str | None = Field(description="The experiment it was rerun or continued from.")
    epoch_offset: int = Field(
        description="Epochs before its first: a continued experiment's parent's, else 0 (a rerun "
        "starts afresh)."
    )
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    epochs_done: int
    epochs_total: int
    attempts: int
    workers_lost: int = Field(description="Attempts whose worker died (killed, out of memory).")
    worker: str | None = Field(
        validation_alias="lease_owner", description="The process training it: host/pid/start."
    )
    error: str | None
    final: Final | None
    best: Best | None
    notify: str | None = Field(validation_alias="notify_url")
    notification: Notification | None = Field(description="How announcing its end went.")
    priority: PriorityName
    pinned: bool = Field(description="Kept whatever the retention setting says.")
    queue_position: int | None = Field(
        None, description="While queued: its place in line, 1 = the next run a worker starts."
    )
    eta_seconds: float | None = Field(
        None,
        description="While queued: seconds until it should start, from recent seconds per epoch "
        "of similar runs on the workers up now (null when unknown).",
    )
    workers_up: int | None = Field(
        None,
        description="While queued: the workers heard from lately; 0: none is running, so the run "
        "waits until one starts.",
    )
    waiting_for: str | None = Field(
        None,
        description="While queued with workers up but none whose accelerator its resources "
        'accept: what it waits for, e.g. "a GPU with at least 40000 MB" (queue_position and '
        "eta_seconds are null then).",
    )
    preemptions: int = Field(
        0,
        description="Times it gave its worker up to a higher-priority run (docs/API.md, "
        "'Preemption'), training on from its checkpoint afterwards.",
    )
    warnings: list[str] = Field(
        [],
        description="In a submit's answer: what may keep it from running (e.g. no worker seen "
        "in the last day may take its resources); empty elsewhere.",
    )
    attempt_log: list[AttemptPublic] = Field(
        [],
        description="Each attempt: the process that ran it, its accelerator, its start, its "
        "environment.",
    )
    verifies_id: str | None = Field(
        None, description="The experiment this one reruns to verify (POST .../verify)."
    )
    verdict: Verdict | None = Field(
        None,
        description="How the verification rerun compared, on both runs; null until one "
        "succeeded (the original keeps its newest).",
    )


class ExperimentPage(BaseModel):
    items: list[ExperimentPublic]
    next_cursor: str | None


class History(BaseModel):
    experiment_id: str
    status: Status
    epochs: list[EpochMetrics]


class LineagePart(BaseModel):
    experiment_id: str
    first_epoch: int
    last_epoch: int


class JoinedHistory(History):
    """A continued experiment's history joined to its parents' (``lineage=true``)."""

    lineage: list[LineagePart] = Field(
        description="The runs whose epochs ``epochs`` joins, oldest first (this one last)."
    )


class ClassProbability(BaseModel):
    label: str = Field(description="The class name (its index when the dataset names none).")
    index: int
    probability: float


class Prediction(BaseModel):
    """What a trained model makes of one picture."""

    experiment_id: str
    epoch: int = Field(description="The epoch whose weights answered.")
    top: str = Field(description="The most probable class.")
    probabilities: list[ClassProbability] = Field(description="Every class, most probable first.")


class PresetPublic(BaseModel):
    name: str
    description: str
    spec: ExperimentSpec


class DatasetPublic(BaseModel):
    name: str
    description: str
    available: bool
    classes: int
    shape: list[int] = Field(
        min_length=3, max_length=3, description="Height, width, channels of every image."
    )
    train_size: int
    test_size: int
    class_names: list[str] | None
    files: list[str] = Field(
        description="Archive files looked up in CONVLAB_DATA_DIR (an upload's stored .npz, a "
        "folder dataset's folder)."
    )
    kind: Literal["built-in", "upload", "folder"] = Field(
        description="Built into the server, uploaded (POST /datasets), or a folder of pictures "
        "under CONVLAB_DATA_DIR/custom/."
    )
    owner: str | None = Field(description="Who uploaded it (null: auth off, or not an upload).")
    created_at: datetime | None = Field(
        description="When it was uploaded, or when its folder last changed."
    )
    bytes: int | None = Field(description="The uploaded file's size.")
    problem: str | None = Field(
        description="Why a folder dataset cannot be used (its layout); null when it can."
    )


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    broker: str
    workers: int | None = Field(
        description="Training processes heard from in the last CONVLAB_WORKERS_SEEN_S (null: "
        "the database does not answer)."
    )
    note: str | None = Field(
        None, description="What to do when no worker has been heard from; else null."
    )


class BestTrial(BaseModel):
    number: int
    value: float
    metric: str = Field(description="What ``value`` measures: val_accuracy or val_loss.")
    direction: Literal["maximize", "minimize"]
    params: dict[str, Any]
    experiment_id: str


class StudyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    kind: str
    status: Status
    priority: PriorityName = Field(description="What its experiments (and trials) inherit.")
    created_at: Timestamp
    seeds: list[int]
    variants: list[str]
    progress: dict[str, int] = Field(description="Experiments per status; epochs done and planned.")
    experiment_ids: list[str]
    table: list[TableRow]
    best_trial: BestTrial | None = Field(None, description="A search's best finished trial.")
    notify: str | None = None
    notification: Notification | None = Field(None, description="How announcing its end went.")
    warnings: list[str] = Field(
        [],
        description="In a submit's answer: what may keep its runs from running (e.g. no worker "
        "seen in the last day may take their resources); empty elsewhere.",
    )


class UsagePublic(BaseModel):
    user: str | None = Field(description="null: runs submitted while auth was off.")
    running: int
    queued: int
    paused: int
    stored_bytes: int = Field(description="Weights its runs hold: checkpoints and best epochs.")
    uploads: int = Field(description="Dataset uploads kept (POST /datasets).")
    upload_bytes: int = Field(description="What those uploads' files hold.")
    quota_bytes: int | None = Field(
        description="CONVLAB_STORAGE_QUOTA_MB, for stored_bytes and upload_bytes together; "
        "null: no quota."
    )


class WorkerPublic(BaseModel):
    name: str = Field(description="The process, host/pid/start: an Experiment's worker.")
    host: str
    pid: int
    accelerator: AcceleratorPublic
    experiment_id: str | None = Field(description="The experiment it is training now.")
    started_at: Timestamp
    heartbeat_at: Timestamp
    slot: int | None = Field(
        None, description="Which of its worker's slots this process is (0 first)."
    )
    slots: int | None = Field(
        None, description="Its worker's slots: CONVLAB_JOBS_PER_GPU on each GPU, or on the CPU."
    )
    gpu_memory_limit_mb: int | None = Field(
        None, description="The GPU memory this slot may take (null: grown as needed, or no GPU)."
    )


class StudyPage(BaseModel):
    items: list[StudyPublic]
    next_cursor: str | None


class ComparedRow(TableRow):
    """A comparison's row: one experiment, named as the csv and markdown tables name it."""

    experiment_id: str
    name: str | None
    preset: str
    status: Status
    group: str = Field(description="The label of its row in groups.")


class StudyTable(BaseModel):
    baseline: str | None = Field(
        description="The label of the row the others are compared with (null: no rows)."
    )
    table: list[TableRow]


class Comparison(BaseModel):
    baseline: str | None = Field(
        description="The label of the group of runs the others are compared with (null: none)."
    )
    table: list[ComparedRow]
    groups: list[TableRow] = Field(
        description="The runs pooled by spec less seed (the plot's bands), one row each, "
        "labelled by the first run's name (and how many runs, when over one); each run's "
        "difference is its group's."
    )
