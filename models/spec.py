"""The experiment spec: everything a run of the chapter varies, each number bounded."""

from typing import Annotated, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from models.datasets import DATASETS
from models.errors import did_you_mean

Activation = Literal[
    "relu", "sigmoid", "tanh", "leaky_relu", "prelu", "elu", "selu", "gelu", "swish"
]
DatasetName = Annotated[str, Field(min_length=1, max_length=64)]
"""A built-in dataset, or a custom one this process finds in its data directory."""
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

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        found = DATASETS.get(name)
        if found is None:
            hint = did_you_mean(name, DATASETS)
            choose = f"choose one of {', '.join(DATASETS)}"
            raise PydanticCustomError(
                "unknown_dataset",
                "unknown dataset; {hint} Or {choose}" if hint else "unknown dataset; {choose}",
                {"hint": hint, "choose": choose},
            )
        if found.problem is not None:
            raise PydanticCustomError(
                "unusable_dataset",
                "dataset {name} cannot be used: {problem}",
                {"name": name, "problem": found.problem},
            )
        return name

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


class Augmentation(StrictModel):
    """Random changes to each training batch, made by Keras preprocessing layers at the
    model's input; evaluation and prediction see the pictures as they are."""

    flip: Literal["horizontal", "vertical", "both"] | None = Field(
        None, description="Mirror at random: left-right, top-bottom or both (null: never)."
    )
    translate: float = Field(
        0.0, ge=0, le=0.5, description="Shift by up to this fraction of height and width."
    )
    rotate: float = Field(
        0.0, ge=0, le=0.5, description="Rotate by up to this fraction of a full turn."
    )
    zoom: float = Field(0.0, ge=0, le=0.5, description="Zoom in or out by up to this fraction.")
    contrast: float = Field(
        0.0, ge=0, le=1, description="Scale contrast by a factor in [1 - contrast, 1 + contrast]."
    )


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
    batch_norm_momentum: float = Field(
        0.99,
        gt=0,
        lt=1,
        description=(
            "Momentum of batch norm's moving mean and variance, which evaluation uses; Keras' "
            "0.99 needs a few hundred steps to settle, lower settles sooner. "
            "Ignored when batch_norm is false."
        ),
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout rate after Flatten (0: none).")
    l2: float = Field(0.0, ge=0, le=1, description="L2 factor on the Conv2D kernels (0: none).")
    conv_dropout: float = Field(
        0.0, ge=0, lt=1, description="Dropout rate after each conv block's pooling (0: none)."
    )
    augmentation: Augmentation | None = Field(
        None,
        description="Random flips, shifts, turns, zooms and contrast in training (null: none).",
    )


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


class AdamW(StrictModel):
    name: Literal["adamw"] = "adamw"
    learning_rate: LearningRate = 0.001
    weight_decay: float = Field(0.004, ge=0, le=1, description="Decoupled weight decay.")
    beta_1: Decay = 0.9
    beta_2: Decay = 0.999
    epsilon: Epsilon = 1e-7


Optimizer = Annotated[SGD | Momentum | RMSprop | Adam | AdamW, Field(discriminator="name")]
OPTIMIZER_NAMES = ("sgd", "momentum", "rmsprop", "adam", "adamw")


class EarlyStopping(StrictModel):
    monitor: Metric = "val_loss"
    patience: int = Field(3, ge=0, le=1000)
    min_delta: float = Field(0.0, ge=0, le=10)
    restore_best_weights: bool = False


Factor = Annotated[float, Field(gt=0, lt=1, description="What the rate is multiplied by.")]


class StepSchedule(StrictModel):
    """The rate times ``factor`` every ``every`` epochs."""

    type: Literal["step"] = "step"
    every: int = Field(10, ge=1, le=MAX_EPOCHS)
    factor: Factor = 0.5


class CosineSchedule(StrictModel):
    """A linear warm-up over ``warmup_epochs``, then a cosine from the rate down toward 0 by
    the last epoch."""

    type: Literal["cosine"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS)


class PlateauSchedule(StrictModel):
    """The rate times ``factor`` when ``monitor`` has not improved for ``patience`` epochs."""

    type: Literal["plateau"] = "plateau"
    monitor: Metric = "val_loss"
    factor: Factor = 0.5
    patience: int = Field(2, ge=0, le=1000)


Schedule = Annotated[StepSchedule | CosineSchedule | PlateauSchedule, Field(discriminator="type")]
SCHEDULE_TYPES = ("step", "cosine", "plateau")


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
    label_smoothing: float = Field(
        0.0, ge=0, le=0.5, description="Spread this much of each label over all classes."
    )
    lr_schedule: Schedule | None = Field(
        None, description="How the learning rate changes from epoch to epoch (null: constant)."
    )
    deterministic: bool = Field(
        False,
        description=(
            "Turn on TensorFlow's op determinism, so that a rerun of the same spec on the same "
            "software and hardware repeats every epoch's metrics bit for bit (slower on GPUs)."
        ),
    )

    @field_validator("lr_schedule")
    @classmethod
    def _warmup_fits(
        cls, schedule: StepSchedule | CosineSchedule | PlateauSchedule | None, info: ValidationInfo
    ) -> StepSchedule | CosineSchedule | PlateauSchedule | None:
        epochs = info.data.get("epochs")
        warmup = schedule.warmup_epochs if isinstance(schedule, CosineSchedule) else 0
        if epochs is not None and warmup >= epochs:
            raise ValueError(
                f"warmup_epochs {warmup} leaves none of the {epochs} epochs to decay over; "
                "warm up for fewer epochs than training.epochs"
            )
        return schedule

    def monitored(self) -> tuple[Metric, float]:
        """What the ``best`` weights are best at, and by how much an epoch must beat them to
        replace them: early stopping's monitor and min_delta, else val_loss by any amount."""
        stopping = self.early_stopping
        return ("val_loss", 0.0) if stopping is None else (stopping.monitor, stopping.min_delta)

    def restores_best(self) -> bool:
        """Whether a model holds its best weights after fit (early stopping restores them)."""
        return self.early_stopping is not None and self.early_stopping.restore_best_weights


ACCELERATOR_KINDS = ("any", "gpu", "cpu")
"""What ``resources.accelerator`` takes besides a part of a GPU's name."""


class Resources(StrictModel):
    """What a worker must have to take the run (``models.placement``)."""

    accelerator: str = Field(
        "any",
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 .\-]*$",
        description=(
            "any, gpu, cpu, or a part of a GPU's name as NVIDIA's driver gives it (e.g. A100, "
            "matched ignoring case)."
        ),
    )
    min_memory_mb: int | None = Field(
        None, ge=1, le=10_000_000, description="The least GPU memory, in MB (null: any)."
    )

    @field_validator("min_memory_mb")
    @classmethod
    def _gpu_memory(cls, memory: int | None, info: ValidationInfo) -> int | None:
        if memory is not None and str(info.data.get("accelerator", "")).lower() == "cpu":
            raise ValueError("min_memory_mb is a GPU's memory; a cpu run cannot ask for it")
        return memory


class ExperimentSpec(StrictModel):
    """A fully resolved experiment: a preset with every override applied."""

    preset: str = Field("base", description="The preset this spec started from.")
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    optimizer: Optimizer = Adam()
    training: TrainingSpec = TrainingSpec()
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seeds Python, NumPy and TensorFlow.")
    resources: Resources = Field(
        Resources(), description="What a worker must have to take it (default: any worker)."
    )

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
        return [model for model in models if union_tag(model) == part]
    field = models[0].model_fields.get(part) if models else None
    if field is None:
        return []
    return _object_types(field.annotation)


def union_tag(model: type[BaseModel]) -> object:
    """What names ``model`` in its union: its ``name`` (optimizers) or ``type`` (schedules)."""
    for key in ("name", "type"):
        if key in model.model_fields:
            return model.model_fields[key].default
    return None


def _object_types(annotation: object) -> list[type[BaseModel]]:
    """The spec objects an annotation allows, through ``Annotated`` and unions."""
    if get_origin(annotation) is not None:
        return [member for arg in get_args(annotation) for member in _object_types(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []
