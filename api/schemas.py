"""Request and response bodies of the HTTP contract (../shared/API.md)."""

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from core.runs import EpochMetrics
from core.tables import Status
from models.spec import ExperimentSpec


def _as_utc(value: datetime) -> datetime:
    """SQLite hands back naive timestamps; every stored one is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_as_utc)]

_SECTION = "Overrides merged key by key over the preset's {} (see ExperimentSpec)."


class ExperimentCreate(BaseModel):
    """A preset plus partial spec keys; nested objects merge over the preset, key by key."""

    model_config = ConfigDict(extra="forbid", strict=True)

    preset: str = Field("base", description="A name from GET /presets.")
    name: str | None = Field(None, max_length=200, description="A label for people.")
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
    seed: int | None = Field(None, description="Seeds Python, NumPy and TensorFlow.")

    def overrides(self) -> dict[str, Any]:
        """The spec keys the request set (everything but preset and name)."""
        return self.model_dump(exclude_unset=True, exclude={"preset", "name"})


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
