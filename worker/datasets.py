"""Dataset loaders for the training process: official archives first, Keras' download second.

Archives in ``CONVLAB_DATA_DIR`` are parsed in memory, and their pickles may hold nothing but
numpy arrays. TensorFlow is imported only when an archive is missing and Keras must download it.
Custom datasets come from the same directory: uploaded ``.npz`` files (no pickles) and folders
of pictures, read as Keras' ``image_dataset_from_directory`` reads them.
"""

import functools
import gzip
import hashlib
import pickle
import socket
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from core.config import get_settings
from models.dataset_record import DatasetRecord, record_of, what_changed
from models.datasets import (
    BUILT_IN,
    DATASETS,
    FOLDERS,
    PICTURES,
    DatasetInfo,
    find_custom,
    find_deleted,
    folder_classes,
    unavailable_sentence,
)

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(x_train, y_train, x_test, y_test)`` as read, before normalisation."""

_FILE_SOURCES = {file: info.source for info in BUILT_IN.values() for file in info.archive_files}
_PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }
)
_UNREADABLE = (
    OSError,  # includes gzip.BadGzipFile
    EOFError,  # a truncated gzip stream
    ValueError,
    KeyError,
    TypeError,
    IndexError,
    zlib.error,
    tarfile.TarError,
    zipfile.BadZipFile,
    pickle.UnpicklingError,
)
_DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout for Keras' download, so a network that drops packets fails instead of hanging."""


class DatasetUnavailable(Exception):
    """A dataset's archive is missing or unreadable, and Keras could not provide it either."""


class DatasetChanged(DatasetUnavailable):
    """A run's dataset no longer holds what it held when the run was submitted."""


@dataclass(frozen=True)
class Split:
    """Train and test images ``(N, H, W, C)`` with their int64 labels ``(N,)``."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and numpy arrays, and refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a dataset pickle")
        return super().find_class(module, name)


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn any parse failure inside the block into a DatasetUnavailable naming ``path``."""
    try:
        yield
    except _UNREADABLE as exc:
        raise DatasetUnavailable(
            f"{path} is corrupt, truncated or not the official file ({exc}): replace it with "
            f"the official one from {_FILE_SOURCES[path.name]}."
        ) from exc


def _read_cifar(path: Path, folder: str, train: list[str], test: list[str], label: bytes) -> Arrays:
    """Read CIFAR batch pickles from the tar.gz in memory; images come out (N, 32, 32, 3)."""
    with _reading(path):
        wanted = {f"{folder}/{name}": name for name in train + test}
        batches: dict[str, Any] = {}
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                stream = tar.extractfile(member) if member.name in wanted else None
                if stream is not None:
                    batches[wanted[member.name]] = _NumpyUnpickler(stream, encoding="bytes").load()
        if missing := sorted(set(wanted.values()) - batches.keys()):
            raise ValueError(f"no {', '.join(missing)} in {folder}/")
        arrays = []
        for names in (train, test):
            x = np.concatenate([np.asarray(batches[name][b"data"]) for name in names])
            arrays += [
                x.reshape(len(x), 3, 32, 32).transpose(0, 2, 3, 1),
                np.concatenate([np.asarray(batches[name][label]) for name in names]),
            ]
        return arrays[0], arrays[1], arrays[2], arrays[3]


def _read_npz(path: Path) -> Arrays:
    """Read the four arrays of Keras' ``mnist.npz`` (no pickles allowed)."""
    with _reading(path), np.load(path, allow_pickle=False) as npz:
        return npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]


def _read_idx(path: Path) -> np.ndarray:
    """Read one gzipped IDX file of unsigned bytes (big-endian header, then the payload)."""
    with _reading(path):
        raw = gzip.decompress(path.read_bytes())
        if raw[:3] != b"\x00\x00\x08":
            raise ValueError("not an IDX file of unsigned bytes")
        dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(raw[3])]
        return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims)).reshape(dims)


def _read_archives(name: str, files: list[Path]) -> Arrays:
    """Read a dataset from its official files, in the catalogue's order."""
    match name:
        case "cifar10":
            batches = [f"data_batch_{i}" for i in range(1, 6)]
            return _read_cifar(files[0], "cifar-10-batches-py", batches, ["test_batch"], b"labels")
        case "cifar100":
            return _read_cifar(files[0], "cifar-100-python", ["train"], ["test"], b"fine_labels")
        case "mnist":
            return _read_npz(files[0])
        case _:  # fashion_mnist: train images, train labels, test images, test labels
            x_train, y_train, x_test, y_test = map(_read_idx, files)
            return x_train, y_train, x_test, y_test


@contextmanager
def _download_timeout() -> Iterator[None]:
    """Give sockets opened inside the block a timeout, unless the process already set one."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(previous or _DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _download(info: DatasetInfo, data_dir: Path) -> Arrays:
    """Load through Keras, from its cache in ``~/.keras/datasets`` or by downloading."""
    import keras  # here, not at the top: TensorFlow loads only when an archive is missing

    loaders = {
        "cifar10": keras.datasets.cifar10.load_data,
        "cifar100": functools.partial(keras.datasets.cifar100.load_data, label_mode="fine"),
        "mnist": keras.datasets.mnist.load_data,
        "fashion_mnist": keras.datasets.fashion_mnist.load_data,
    }
    try:
        with _download_timeout():
            (x_train, y_train), (x_test, y_test) = loaders[info.name]()
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise DatasetUnavailable(
            f"{unavailable_sentence(info, data_dir)} (download failed: {reason})."
        ) from exc
    return x_train, y_train, x_test, y_test


def _problem(info: DatasetInfo, x: np.ndarray, y: np.ndarray) -> str | None:
    """What is wrong with one part's images ``x`` and labels ``y``, if anything."""
    if x.dtype != np.uint8:
        return f"images are {x.dtype}, not uint8"
    if x.shape[1:] != info.shape:
        return f"images are {x.shape[1:]}, not {info.shape}"
    if len(y) != len(x):
        return f"{len(y)} labels for {len(x)} images"
    if len(y) and not 0 <= y.min() <= y.max() < info.classes:
        return f"labels outside 0..{info.classes - 1}"
    return None


def _checked(info: DatasetInfo, arrays: Arrays, source: str, *, uploaded: bool = False) -> Split:
    """Add the channel axis, flatten labels to int64 and check both against the catalogue."""
    remedy = (
        "upload it again" if uploaded else f"replace it with the official files from {info.source}"
    )
    parts: list[np.ndarray] = []
    for x, y in (arrays[:2], arrays[2:]):
        x = np.ascontiguousarray(x[..., np.newaxis] if x.ndim == 3 else x)
        y = np.asarray(y).reshape(-1).astype(np.int64)
        if problem := _problem(info, x, y):
            expected = "as uploaded" if uploaded else "as expected"
            raise DatasetUnavailable(
                f"{source} does not hold {info.name} {expected} ({problem}): {remedy}."
            )
        parts += [x, y]
    return Split(*parts)


def _digits() -> Split:
    """scikit-learn's bundled 8x8 digits (values 0..16 as uint8), split 80/20 by class."""
    bunch = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images.astype(np.uint8)[..., np.newaxis],
        bunch.target.astype(np.int64),
        test_size=0.2,
        stratify=bunch.target,
        random_state=0,
    )
    return Split(x_train, y_train, x_test, y_test)


DATASETS.use(lambda: get_settings().resolved_data_dir)  # specs may name custom datasets


def load_dataset(name: str, data_dir: Path) -> Split:
    """The whole dataset as raw pixels, read once per process and kept for the next jobs.

    Built-in datasets: the official files from ``data_dir`` when they are all there, else
    Keras. Custom ones: the upload or folder called ``name`` in ``data_dir``, read again when
    it changed (a deleted and re-uploaded name never serves the old arrays).
    Raises ValueError for an unknown name and DatasetUnavailable when no source works.
    The arrays are read-only, since every later job of this process shares them.
    """
    return _read(_found(name, data_dir), data_dir)


def _found(name: str, data_dir: Path) -> DatasetInfo:
    """The facts of the dataset called ``name`` now; ValueError for an unknown name."""
    info = BUILT_IN.get(name) or find_custom(name, data_dir) or find_deleted(name, data_dir)
    if info is None:
        known = [*BUILT_IN, *(n for n in DATASETS if n not in BUILT_IN)]
        raise ValueError(f"Unknown dataset {name!r}: choose one of {', '.join(known)}.")
    return info


def _read(info: DatasetInfo, data_dir: Path) -> Split:
    """``info``'s arrays, from this process's cache while its contents are the same."""
    if info.deleted_at is not None:
        raise DatasetUnavailable(unavailable_sentence(info, data_dir) + ".")
    identity = _fingerprint(info, data_dir) if info.kind == "folder" else info.identity
    return _load(info, data_dir, identity)


def clear_cache() -> None:
    """Forget every dataset this process has read."""
    _load.cache_clear()


@functools.lru_cache(maxsize=2)
def _load(info: DatasetInfo, data_dir: Path, identity: str) -> Split:
    """``load_dataset``'s work, cached by ``identity`` (what changes with the contents)."""
    files = [data_dir / file for file in info.archive_files]
    if info.kind == "upload":
        split = _upload(info, files[0])
    elif info.kind == "folder":
        split = _folder(info, data_dir / FOLDERS / info.name)
    elif info.name == "digits":
        split = _digits()
    elif all(file.is_file() for file in files):
        split = _checked(info, _read_archives(info.name, files), ", ".join(map(str, files)))
    else:
        split = _checked(info, _download(info, data_dir), f"Keras' copy of {info.name}")
    for field in fields(split):
        getattr(split, field.name).flags.writeable = False
    return split


def _upload(info: DatasetInfo, path: Path) -> Split:
    """An uploaded ``.npz``, checked again against what its metadata says (no pickles)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]
    except _UNREADABLE as exc:
        raise DatasetUnavailable(
            f"{path} (dataset {info.name}) is missing or unreadable ({exc}): upload it again."
        ) from exc
    return _checked(info, arrays, str(path), uploaded=True)


def _fingerprint(info: DatasetInfo, data_dir: Path) -> str:
    """What a folder dataset's pictures are now: every file's name, size and time."""
    root = data_dir / FOLDERS / info.name
    digest = hashlib.sha256(info.identity.encode())
    for path in sorted(root.glob("*/*/*")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _folder(info: DatasetInfo, root: Path) -> Split:
    """A folder of pictures per class, as ``keras.utils.image_dataset_from_directory`` reads
    it: classes are the train/ subfolders in sorted order, a picture's label its folder's
    index, and every picture converted to the dataset's channels and resized (bilinear) to
    its size (the first picture's)."""
    classes = folder_classes(root)
    parts: list[np.ndarray] = []
    for split in ("train", "test"):
        images: list[np.ndarray] = []
        labels: list[int] = []
        for label, name in enumerate(classes):
            folder = root / split / name
            found = sorted(folder.iterdir()) if folder.is_dir() else []
            for path in (p for p in found if p.suffix.lower() in PICTURES and p.is_file()):
                images.append(_picture(path, info.shape))
                labels.append(label)
        if not images:
            raise DatasetUnavailable(f"{root / split} holds no .png or .jpg pictures any more.")
        parts += [np.stack(images), np.array(labels, dtype=np.int64)]
    return Split(*parts)


def _picture(path: Path, shape: tuple[int, int, int]) -> np.ndarray:
    """One picture as uint8 ``shape`` (height, width, channels)."""
    height, width, channels = shape
    try:
        with Image.open(path) as opened:
            picture = opened.convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetUnavailable(
            f"{path} is not a readable picture ({exc}): replace or remove it."
        ) from exc
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(picture, dtype=np.uint8).reshape(height, width, channels)


def _balanced(
    labels: np.ndarray, size: int | None, seed: list[int], what: str
) -> np.ndarray | slice:
    """Indices of a shuffled, class-balanced subset of ``size`` (a slice of all for None).

    Each of the k classes gives ``size // k`` images, the first ``size % k`` classes one more.
    """
    if size is None:
        return slice(None)
    if not 1 <= size <= len(labels):
        raise ValueError(f"The {what} size must be between 1 and {len(labels)}, not {size}.")
    classes, counts = np.unique(labels, return_counts=True)
    quotas = np.full(len(classes), size // len(classes))
    quotas[: size % len(classes)] += 1
    for cls, count, quota in zip(classes, counts, quotas, strict=True):
        if count < quota:
            raise ValueError(
                f"A class-balanced {what} subset of {size} needs {quota} images of class {cls}, "
                f"but there are only {count}: ask for a smaller {what} size."
            )
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == cls))[:quota]
        for cls, quota in zip(classes, quotas, strict=True)
    ]
    return rng.permutation(np.concatenate(chosen))


def prepare(
    name: str,
    data_dir: Path,
    *,
    train_size: int | None,
    test_size: int | None,
    seed: int,
    record: DatasetRecord | None = None,
) -> Split:
    """What training uses: seed-determined class-balanced subsets of the raw uint8 pixels
    (the model scales them; see ``models.build``).

    A size of None takes the whole part. A size the data cannot satisfy raises ValueError.
    With the run's dataset ``record``, data that differs from it (shape, classes, counts,
    contents) raises DatasetChanged.
    """
    info = _found(name, data_dir)
    data = _read(info, data_dir)
    if record is not None:
        _check_unchanged(record, info, data, data_dir)
    train = _balanced(data.y_train, train_size, [seed, 0], f"{name} training")
    test = _balanced(data.y_test, test_size, [seed, 1], f"{name} test")
    return Split(
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_test[test],
        y_test=data.y_test[test],
    )


def _check_unchanged(record: DatasetRecord, info: DatasetInfo, data: Split, data_dir: Path) -> None:
    """DatasetChanged when what was loaded differs from what the run was submitted with."""
    loaded = record_of(info, data_dir)
    if info.kind != "built-in":  # a built-in's counts are its facts; its digest is its content
        loaded |= {
            "shape": list(data.x_train.shape[1:]),
            "train_count": len(data.y_train),
            "test_count": len(data.y_test),
        }
    if changes := what_changed(record, loaded):
        raise DatasetChanged(
            f"Dataset {info.name} changed since this run was submitted: {'; '.join(changes)}; "
            "rerun it to train on the new data."
        )
