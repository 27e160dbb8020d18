"""What each dataset is, without loading it: shapes, sizes, class names and archive files.

Besides the built-in datasets, a server has the ones in its data directory: ``.npz`` files
uploaded through ``POST /datasets`` (``uploads/<name>.json`` says what each holds) and folders
of pictures, ``custom/<name>/{train,test}/<class>/*.png|jpg``. ``DATASETS`` finds both in the
data directory this process was told to ``use``.
"""

import functools
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from PIL import Image, UnidentifiedImageError

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
    kind: Literal["built-in", "upload", "folder"] = "built-in"
    owner: str | None = None
    """Who uploaded it (None: auth off, or not an upload)."""
    created_at: str | None = None
    """When it was uploaded (ISO 8601), or when its folder last changed."""
    size_bytes: int | None = None
    """The uploaded file's size."""
    sha256: str | None = None
    """The uploaded file's SHA-256."""
    identity: str = ""
    """Changes whenever its contents may have: what a worker's cache of its arrays is keyed by."""
    problem: str | None = None
    """Why a folder dataset cannot be used (its layout), or None."""
    deleted_at: str | None = None
    """When an upload was deleted: its facts are kept for the experiments that trained on it."""

    def labels(self) -> tuple[str, ...]:
        """The class names, or the class numbers as text where the dataset names none."""
        return self.class_names or tuple(str(index) for index in range(self.classes))

    def available(self, data_dir: Path) -> bool:
        """Whether the dataset loads without a network: archives in ``data_dir`` or Keras' cache."""
        if self.problem is not None or self.deleted_at is not None:
            return False
        if self.kind != "built-in":
            return all((data_dir / file).is_file() for file in self.archive_files)
        cache = keras_home() / "datasets"
        return all((data_dir / file).is_file() for file in self.archive_files) or all(
            (cache / file).is_file() for file in self.keras_cache_files
        )


def unavailable_sentence(info: DatasetInfo, data_dir: Path) -> str:
    """What to do about a dataset that is not on this machine (the worker adds why Keras'
    download failed)."""
    if info.problem is not None:
        return f"Dataset {info.name} cannot be used: {info.problem}"
    if info.deleted_at is not None:
        return f"Dataset {info.name} was deleted at {info.deleted_at}; upload it again to use it"
    if info.kind != "built-in":
        return (
            f"Dataset {info.name}'s file {data_dir.resolve() / info.archive_files[0]} is gone; "
            "upload it again"
        )
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

BUILT_IN: dict[str, DatasetInfo] = {
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

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
"""A custom dataset's name: a lowercase slug, as it is also a file or folder name."""
UPLOADS = "uploads"
FOLDERS = "custom"
PICTURES = frozenset({".png", ".jpg", ".jpeg"})
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def is_slug(name: str) -> bool:
    """Whether ``name`` may name a custom dataset."""
    return re.fullmatch(NAME_PATTERN, name) is not None


def upload_metadata(data_dir: Path, name: str) -> Path:
    """Where an uploaded dataset's metadata lies; the dataset exists while this file does."""
    return data_dir / UPLOADS / f"{name}.json"


def deleted_metadata(data_dir: Path, name: str) -> Path:
    """Where the metadata of a deleted upload is kept (the last one of that name)."""
    return data_dir / UPLOADS / ".deleted" / f"{name}.json"


def _uploaded(path: Path, name: str) -> DatasetInfo | None:
    """The upload called ``name``, from its metadata file ``path``, or None (none, or not one
    this server wrote)."""
    try:
        meta = json.loads(path.read_text())
        owner, names = meta["owner"], meta["class_names"]
        return DatasetInfo(
            name=name,
            description=f"Uploaded{f' by {owner}' if owner else ''} on {meta['created_at'][:10]}.",
            shape=tuple(meta["shape"]),  # type: ignore[arg-type]
            classes=meta["classes"],
            train_count=meta["train_size"],
            test_count=meta["test_size"],
            archive_files=(f"{UPLOADS}/{meta['file']}",),
            class_names=tuple(names) if names else None,
            kind="upload",
            owner=owner,
            created_at=meta["created_at"],
            size_bytes=meta["bytes"],
            sha256=meta["sha256"],
            identity=f"{meta['file']}:{meta['sha256']}",
            deleted_at=meta.get("deleted_at"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pictures(folder: Path) -> list[Path]:
    """The PNG and JPEG files directly in ``folder``, sorted by name."""
    return sorted(
        path for path in folder.iterdir() if path.suffix.lower() in PICTURES and path.is_file()
    )


def _subfolders(folder: Path) -> list[Path]:
    """The folders in ``folder`` by name, hidden ones (``.ipynb_checkpoints``) left out."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _signature(root: Path) -> tuple[tuple[str, int], ...]:
    """The modification times of a folder dataset's folders: any file added, removed or
    renamed changes one of them."""
    folders = [root]
    for split in ("train", "test"):
        if (root / split).is_dir():
            folders += [root / split, *_subfolders(root / split)]
    return tuple((str(folder), folder.stat().st_mtime_ns) for folder in folders)


def folder_classes(root: Path) -> tuple[str, ...]:
    """The class names of a folder dataset: its ``train`` subfolders, sorted (Keras' order)."""
    return tuple(folder.name for folder in _subfolders(root / "train"))


def folder_pictures(root: Path) -> list[tuple[str, os.DirEntry[str]]]:
    """The pictures a folder dataset is read from, in the order they are read (each class's in
    ``train/``, then in ``test/``), each as its ``<split>/<class>/<file>`` and its directory
    entry (a stat, once: a folder may hold tens of thousands)."""
    found = []
    for split in ("train", "test"):
        for name in folder_classes(root):
            if not (root / split / name).is_dir():
                continue
            with os.scandir(root / split / name) as entries:
                pictures = [
                    entry
                    for entry in entries
                    if os.path.splitext(entry.name)[1].lower() in PICTURES and entry.is_file()
                ]
            found += [(f"{split}/{name}/{e.name}", e) for e in sorted(pictures, key=_name)]
    return found


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


@functools.lru_cache(maxsize=64)
def _scanned(root: Path, signature: tuple[tuple[str, int], ...]) -> DatasetInfo:
    """A folder dataset's facts, read again only when ``signature`` changes."""
    identity = hashlib.sha256(repr(signature).encode()).hexdigest()[:16]
    changed = datetime.fromtimestamp(max(when for _, when in signature) / 1e9, UTC)
    facts = DatasetInfo(
        name=root.name,
        description=f"Pictures in {root}/{{train,test}}/<class>/.",
        shape=(0, 0, 0),
        classes=0,
        train_count=0,
        test_count=0,
        archive_files=(),
        kind="folder",
        created_at=changed.isoformat(),
        identity=identity,
    )
    try:
        return _layout(root, facts)
    except _BadFolder as bad:
        return replace(facts, problem=str(bad))


class _BadFolder(Exception):
    """A folder dataset laid out so that it cannot be read."""


def _layout(root: Path, facts: DatasetInfo) -> DatasetInfo:
    """``facts`` completed from the folder: classes, counts, and the first picture's shape."""
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise _BadFolder(f"it has no {split}/ folder ({root / split})")
    classes = folder_classes(root)
    if len(classes) < 2:
        raise _BadFolder(f"{root / 'train'} needs a folder per class, at least two")
    if extra := sorted({folder.name for folder in _subfolders(root / "test")} - set(classes)):
        raise _BadFolder(f"test/ has classes that train/ has not: {', '.join(extra)}")
    counts = {}
    for split in ("train", "test"):
        found = [
            _pictures(root / split / name) for name in classes if (root / split / name).is_dir()
        ]
        counts[split] = sum(map(len, found))
        if not counts[split]:
            raise _BadFolder(f"{root / split} holds no .png or .jpg pictures")
    first = next(files[0] for files in (_pictures(root / "train" / c) for c in classes) if files)
    try:
        with Image.open(first) as picture:
            width, height = picture.size
            channels = 1 if picture.mode in _GRAYSCALE_MODES else 3
    except (OSError, UnidentifiedImageError) as exc:
        raise _BadFolder(f"{first} is not a readable picture ({exc})") from None
    return replace(
        facts,
        shape=(height, width, channels),
        classes=len(classes),
        class_names=classes,
        train_count=counts["train"],
        test_count=counts["test"],
        description=(
            f"Pictures in {root}/{{train,test}}/<class>/, read as {height}x{width} "
            f"{'grayscale' if channels == 1 else 'RGB'} (the first picture's size)."
        ),
    )


def _folder(data_dir: Path, name: str) -> DatasetInfo | None:
    """The folder dataset called ``name``, or None."""
    root = data_dir / FOLDERS / name
    try:
        return _scanned(root, _signature(root)) if root.is_dir() else None
    except OSError:
        return None


def find_custom(name: str, data_dir: Path) -> DatasetInfo | None:
    """The upload or folder dataset called ``name`` in ``data_dir`` (an upload first), or None."""
    if name in BUILT_IN or not is_slug(name):
        return None
    return _uploaded(upload_metadata(data_dir, name), name) or _folder(data_dir, name)


def find_deleted(name: str, data_dir: Path) -> DatasetInfo | None:
    """The facts of the last upload called ``name`` that was deleted, or None: experiments that
    trained on it still need its shape and classes (a model download, a prediction)."""
    if not is_slug(name):
        return None
    return _uploaded(deleted_metadata(data_dir, name), name)


def custom_datasets(data_dir: Path) -> list[DatasetInfo]:
    """Every upload and folder dataset in ``data_dir``, by name."""
    uploads, folders = data_dir / UPLOADS, data_dir / FOLDERS
    names = {path.stem for path in uploads.glob("*.json")} if uploads.is_dir() else set()
    names |= {path.name for path in folders.iterdir()} if folders.is_dir() else set()
    found = (find_custom(name, data_dir) for name in sorted(names))
    return [info for info in found if info is not None]


def uploaded_by(data_dir: Path, owner: str | None) -> list[DatasetInfo]:
    """The uploads ``owner`` keeps in ``data_dir`` (None: those made while auth was off)."""
    return [
        info for info in custom_datasets(data_dir) if info.kind == "upload" and info.owner == owner
    ]


class Catalogue(Mapping[str, DatasetInfo]):
    """The built-in datasets, then the custom ones in the data directory this process uses
    (none until ``use`` is called). A deleted upload's name still looks up its facts, so that
    stored specs naming it stay valid, but is not listed; it is unavailable (no file), so a
    new experiment naming it is refused (``check_available``)."""

    def __init__(self, built_in: dict[str, DatasetInfo]) -> None:
        self.built_in = built_in
        self._data_dir: Callable[[], Path] | None = None

    def use(self, data_dir: Path | Callable[[], Path]) -> None:
        """Find custom datasets in ``data_dir`` (or the directory a callable returns, asked
        when first needed) from now on."""
        self._data_dir = data_dir if callable(data_dir) else (lambda: data_dir)

    @property
    def data_dir(self) -> Path | None:
        return self._data_dir() if self._data_dir is not None else None

    def __getitem__(self, name: str) -> DatasetInfo:
        if name in self.built_in:
            return self.built_in[name]
        data_dir = self.data_dir
        found = None
        if data_dir is not None:
            found = find_custom(name, data_dir) or find_deleted(name, data_dir)
        if found is None:
            raise KeyError(name)
        return found

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[str]:
        data_dir = self.data_dir
        customs = custom_datasets(data_dir) if data_dir is not None else []
        return iter([*self.built_in, *(info.name for info in customs)])

    def __len__(self) -> int:
        return sum(1 for _ in self)


DATASETS = Catalogue(BUILT_IN)
"""Every dataset a spec may name: the built-in ones and, once told where (``use``), custom ones."""
