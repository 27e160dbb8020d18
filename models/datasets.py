"""What each dataset is, without loading it: shapes, sizes, class names and archive files."""

import os
from dataclasses import dataclass
from pathlib import Path

from models.errors import Loc, SpecError, error_entry

_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_KERAS_STORE = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset, known to the API without touching TensorFlow."""

    name: str
    description: str
    shape: tuple[int, int, int]
    classes: int
    train_count: int
    test_count: int
    archive_files: tuple[str, ...]
    """Files that must lie in ``CONVLAB_DATA_DIR`` for an offline load (empty: always there)."""
    keras_cache_files: tuple[str, ...] = ()
    """What Keras' own loader leaves in its cache (``$KERAS_HOME/datasets``) once downloaded."""
    class_names: tuple[str, ...] | None = None
    pixel_max: int = 255
    """The largest pixel value; training scales pixels by it, inside the model."""
    source: str = ""
    """Where the official archive files are published."""

    def labels(self) -> tuple[str, ...]:
        """The class names, or the class numbers as text where the dataset names none."""
        return self.class_names or tuple(str(index) for index in range(self.classes))

    def available(self, data_dir: Path) -> bool:
        """Whether the dataset loads without a network: archives in ``data_dir`` or Keras' cache."""
        cache = keras_home() / "datasets"
        return all((data_dir / file).is_file() for file in self.archive_files) or all(
            (cache / file).is_file() for file in self.keras_cache_files
        )


def unavailable_sentence(info: DatasetInfo, data_dir: Path) -> str:
    """What to do about a dataset that is not on this machine (the worker adds why Keras'
    download failed)."""
    return (
        f"Dataset {info.name} is not available: put {', '.join(info.archive_files)} "
        f"(from {info.source}) in {data_dir.resolve()}, or give this machine "
        "internet access so Keras can download it"
    )


def check_available(name: str, data_dir: Path, loc: Loc) -> None:
    """SpecError at ``loc`` when ``data_dir`` exists (this process sees the server's data)
    and the dataset is neither there nor in Keras' cache; nothing when the directory is
    absent, since a worker elsewhere may have it."""
    info = DATASETS[name]
    if data_dir.is_dir() and not info.available(data_dir):
        raise SpecError([error_entry(loc, unavailable_sentence(info, data_dir) + ".", name)])


def keras_home() -> Path:
    """Keras' cache directory, as Keras itself resolves it."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))


_DIGITS = tuple(str(d) for d in range(10))
_CIFAR100 = tuple(
    [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ]
)
"""CIFAR-100's fine labels, in label order (its archive's ``meta`` file)."""

DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="cifar10",
            description="CIFAR-10: 32x32 colour photos in 10 classes (the chapter's dataset).",
            shape=(32, 32, 3),
            classes=10,
            train_count=50_000,
            test_count=10_000,
            archive_files=("cifar-10-python.tar.gz",),
            keras_cache_files=("cifar-10-batches-py-target/cifar-10-batches-py/test_batch",),
            source=_CIFAR_PAGE,
            class_names=(
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ),
        ),
        DatasetInfo(
            name="cifar100",
            description="CIFAR-100: 32x32 colour photos in 100 fine-grained classes.",
            shape=(32, 32, 3),
            classes=100,
            train_count=50_000,
            test_count=10_000,
            archive_files=("cifar-100-python.tar.gz",),
            keras_cache_files=("cifar-100-python-target/cifar-100-python/test",),
            source=_CIFAR_PAGE,
            class_names=_CIFAR100,
        ),
        DatasetInfo(
            name="mnist",
            description="MNIST: 28x28 grayscale handwritten digits.",
            shape=(28, 28, 1),
            classes=10,
            train_count=60_000,
            test_count=10_000,
            archive_files=("mnist.npz",),
            keras_cache_files=("mnist.npz",),
            source=_KERAS_STORE + "mnist.npz",
            class_names=_DIGITS,
        ),
        DatasetInfo(
            name="fashion_mnist",
            description="Fashion-MNIST: 28x28 grayscale photos of clothing in 10 classes.",
            shape=(28, 28, 1),
            classes=10,
            train_count=60_000,
            test_count=10_000,
            archive_files=(
                "train-images-idx3-ubyte.gz",
                "train-labels-idx1-ubyte.gz",
                "t10k-images-idx3-ubyte.gz",
                "t10k-labels-idx1-ubyte.gz",
            ),
            keras_cache_files=tuple(
                f"fashion-mnist/{part}-ubyte.gz"
                for part in (
                    "train-images-idx3",
                    "train-labels-idx1",
                    "t10k-images-idx3",
                    "t10k-labels-idx1",
                )
            ),
            source=_KERAS_STORE,
            class_names=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
        ),
        DatasetInfo(
            name="digits",
            description=(
                "scikit-learn's bundled 8x8 handwritten digits (1,797 images, fixed stratified "
                "80/20 split); always available offline."
            ),
            shape=(8, 8, 1),
            classes=10,
            train_count=1_437,
            test_count=360,
            archive_files=(),
            pixel_max=16,
            class_names=_DIGITS,
        ),
    )
}
