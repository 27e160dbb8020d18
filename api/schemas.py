"""Request and response bodies of the HTTP contract (../shared/API.md)."""

import unicodedata
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from models.search import SearchSpec
from models.spec import ExperimentSpec
from models.studies import SECTIONS
from store.tables import EpochMetrics, Status
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

    def overrides(self) -> dict[str, Any]:
        """The spec keys the request set, without the preset (and without any own fields)."""
        return self.model_dump(exclude_unset=True, include={*SECTIONS, "seed"})


class ExperimentCreate(SpecKeys):
    name: Label | None = Field(None, max_length=200, description="A label for people.")
    seed: int | None = Field(None, description="Seeds Python, NumPy and TensorFlow.")


class VariantCreate(SpecKeys):
    """One row of a study: a name and overrides over the study's base."""

    name: Label = Field(min_length=1, max_length=200)
    preset: str | None = Field(None, description="Default: the study's preset.")  # type: ignore[assignment]


class StudyCreate(SpecKeys):
    """The spec keys are the base of every experiment; exactly one of template, presets,
    variants, grid or search says what varies; each variant runs once per seed."""

    name: Label | None = Field(None, max_length=200)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field([0], min_length=1, max_length=20)
    template: Literal["chapter"] | None = Field(None, description="chapter: its 13 presets.")
    presets: list[str] | None = Field(None, min_length=1, max_length=100)
    variants: list[VariantCreate] | None = Field(None, min_length=1, max_length=100)
    grid: dict[str, list[Any]] | None = Field(
        None,
        description='Values per spec field, e.g. {"optimizer.name": ["sgd", "adam"]}.',
        min_length=1,
        max_length=8,
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
            if not 1 <= len(values) <= 20:
                raise ValueError(f"grid key {key!r} needs 1 to 20 values")
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


KINDS = ("template", "presets", "variants", "grid", "search")


class Final(BaseModel):
    accuracy: float
    loss: float
    val_accuracy: float | None
    val_loss: float | None


class Best(BaseModel):
    epoch: int
    val_accuracy: float | None
    val_loss: float | None


class ExperimentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    status: Status
    spec: dict[str, Any] = Field(
        description="The resolved spec, as stored at submission (see ExperimentSpec)."
    )
    study_id: str | None
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


class ExperimentPage(BaseModel):
    items: list[ExperimentPublic]
    next_cursor: str | None


class History(BaseModel):
    experiment_id: str
    status: Status
    epochs: list[EpochMetrics]


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
    shape: tuple[int, int, int]
    train_size: int
    test_size: int
    class_names: list[str] | None
    files: list[str] = Field(description="Archive files looked up in CONVLAB_DATA_DIR.")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    database: str
    broker: str


class BestTrial(BaseModel):
    number: int
    value: float
    params: dict[str, Any]
    experiment_id: str


class StudyPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    kind: str
    status: Status
    created_at: Timestamp
    seeds: list[int]
    variants: list[str]
    progress: dict[str, int] = Field(description="Experiments per status; epochs done and planned.")
    experiment_ids: list[str]
    table: list[TableRow]
    best_trial: BestTrial | None = Field(None, description="A search's best finished trial.")


class StudyPage(BaseModel):
    items: list[StudyPublic]
    next_cursor: str | None


class Comparison(BaseModel):
    table: list[TableRow]
