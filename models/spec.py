"""The experiment spec: everything a run of the chapter varies, each number bounded."""

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from models.datasets import DATASETS

Activation = Literal[
    "relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish"
]
DatasetName = Literal["cifar10", "cifar100", "mnist", "fashion_mnist", "digits"]
Metric = Literal["val_loss", "val_accuracy", "loss", "accuracy"]

LearningRate = Annotated[float, Field(gt=0, le=10, description="Step size, (0, 10].")]
Epsilon = Annotated[float, Field(gt=0, le=1, description="Numerical-stability term.")]
Decay = Annotated[float, Field(ge=0, lt=1)]

MAX_EPOCHS = 1000
"""The most epochs one experiment may train (the chapter ran 50 to 200)."""


CROSS_FIELD_ERRORS: dict[str, tuple[str, ...]] = {"too_many_blocks": ("model", "conv_filters")}
"""The field each whole-spec check blames, so an error can name it."""


class StrictModel(BaseModel):
    """Unknown keys are an error, types are not coerced, NaN and infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)


class DatasetSpec(StrictModel):
    name: DatasetName = Field("cifar10", description="A name from GET /datasets.")
    train_size: int | None = Field(
        None, ge=10, description="Class-balanced, seed-determined training subset (null: all)."
    )
    test_size: int | None = Field(
        None, ge=10, description="Class-balanced, seed-determined test subset (null: all)."
    )

    @field_validator("train_size", "test_size")
    @classmethod
    def _size_fits_dataset(cls, size: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if size is None or name is None:
            return size
        facts = DATASETS[name]
        available = facts.train_count if info.field_name == "train_size" else facts.test_count
        if size > available:
            part = "training" if info.field_name == "train_size" else "test"
            raise ValueError(
                f"{info.field_name} {size} is larger than the {available} {part} images of {name}"
            )
        return size


class ModelSpec(StrictModel):
    conv_filters: list[Annotated[int, Field(ge=1, le=1024)]] = Field(
        [32, 64, 128],
        min_length=1,
        max_length=8,
        description="Filters of each Conv2D block (conv, optional batch norm, 2x2 max pool).",
    )
    kernel_size: int = Field(3, ge=1, le=11, description="Square kernel side of every Conv2D.")
    dense_units: list[Annotated[int, Field(ge=1, le=8192)]] = Field(
        [128], max_length=4, description="Hidden Dense layers between Flatten and the softmax."
    )
    activation: Activation = Field("relu", description="Activation of every hidden layer.")
    batch_norm: bool = Field(False, description="BatchNormalization after each Conv2D.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout rate after Flatten (0: none).")
    l2: float = Field(0.0, ge=0, le=1, description="L2 factor on the Conv2D kernels (0: none).")


class SGD(StrictModel):
    name: Literal["sgd"] = "sgd"
    learning_rate: LearningRate = 0.01


class Momentum(StrictModel):
    name: Literal["momentum"] = "momentum"
    learning_rate: LearningRate = 0.01
    momentum: Decay = 0.9
    nesterov: bool = False


class RMSprop(StrictModel):
    name: Literal["rmsprop"] = "rmsprop"
    learning_rate: LearningRate = 0.001
    rho: Decay = 0.9
    epsilon: Epsilon = 1e-7


class Adam(StrictModel):
    name: Literal["adam"] = "adam"
    learning_rate: LearningRate = 0.001
    beta_1: Decay = 0.9
    beta_2: Decay = 0.999
    epsilon: Epsilon = 1e-7


Optimizer = Annotated[SGD | Momentum | RMSprop | Adam, Field(discriminator="name")]


class EarlyStopping(StrictModel):
    monitor: Metric = "val_loss"
    patience: int = Field(3, ge=0, le=1000)
    min_delta: float = Field(0.0, ge=0, le=10)
    restore_best_weights: bool = False


class TrainingSpec(StrictModel):
    epochs: int = Field(50, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(1024, ge=1, le=8192)
    early_stopping: EarlyStopping | None = None
    validation_split: float | None = Field(
        None,
        gt=0,
        le=0.5,
        description=(
            "Hold out this fraction of the training set for validation; "
            "null validates on the test set, the chapter's way."
        ),
    )

    def monitored(self) -> tuple[Metric, float]:
        """What the ``best`` weights are best at, and by how much an epoch must beat them to
        replace them: early stopping's monitor and min_delta, else val_loss by any amount."""
        stopping = self.early_stopping
        return ("val_loss", 0.0) if stopping is None else (stopping.monitor, stopping.min_delta)

    def restores_best(self) -> bool:
        """Whether a model holds its best weights after fit (early stopping restores them)."""
        return self.early_stopping is not None and self.early_stopping.restore_best_weights


class ExperimentSpec(StrictModel):
    """A fully resolved experiment: a preset with every override applied."""

    preset: str = Field("base", description="The preset this spec started from.")
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    optimizer: Optimizer = Adam()
    training: TrainingSpec = TrainingSpec()
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds Python, NumPy and TensorFlow.")

    @model_validator(mode="after")
    def _pooling_fits_images(self) -> "ExperimentSpec":
        side = min(DATASETS[self.dataset.name].shape[:2])
        if 2 ** len(self.model.conv_filters) > side:
            raise PydanticCustomError(
                "too_many_blocks",
                "{blocks} conv blocks halve {side}x{side} images below one pixel; "
                "use at most {most} for {dataset}",
                {
                    "blocks": len(self.model.conv_filters),
                    "side": side,
                    "most": side.bit_length() - 1,
                    "dataset": self.dataset.name,
                },
            )
        return self


def fields_at(loc: tuple[str | int, ...]) -> list[str]:
    """The field names of the spec object at ``loc``, a pydantic error location (the
    optimizer's union tag included); empty where ``loc`` names no object of the spec."""
    models: list[type[BaseModel]] = [ExperimentSpec]
    for part in loc:
        models = _inside(models, str(part))
    return list(models[0].model_fields) if len(models) == 1 else []


def _inside(models: list[type[BaseModel]], part: str) -> list[type[BaseModel]]:
    """Where ``part`` leads from ``models``: the member of a union that ``part`` tags, else
    the object types the field ``part`` may hold."""
    if len(models) > 1:
        return [model for model in models if model.model_fields["name"].default == part]
    field = models[0].model_fields.get(part) if models else None
    if field is None:
        return []
    members = get_args(field.annotation) or (field.annotation,)
    return [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
