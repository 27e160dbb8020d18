"""What an uploaded ``.npz`` must hold, checked from its zip directory and array headers and
by reading it through once in small pieces, so that no upload is ever unpacked whole here."""

import zipfile
from dataclasses import dataclass
from typing import IO

import numpy as np

REQUIRED = ("x_train", "y_train", "x_test", "y_test")
OPTIONAL = ("class_names",)
_CHUNK = 1 << 20
_PICKLE_START = (b"\x80", b"(", b"}", b"]")
"""How pickles begin (protocol 2 and later, then protocols 0 and 1)."""


class BadUpload(ValueError):
    """An upload that is no dataset this server accepts; the message says why and what to do."""


class TooLarge(BadUpload):
    """An upload whose arrays unpack to more than the server takes."""


@dataclass(frozen=True)
class UploadFacts:
    """What a checked upload holds."""

    shape: tuple[int, int, int]
    classes: int
    class_names: tuple[str, ...] | None
    train_count: int
    test_count: int


@dataclass(frozen=True)
class _Header:
    shape: tuple[int, ...]
    dtype: np.dtype
    data_offset: int


def check_npz(file: IO[bytes], max_bytes: int) -> UploadFacts:
    """The facts of the ``.npz`` in ``file`` (a seekable binary file), or BadUpload.

    Arrays must be ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
    ``class_names``; images uint8 ``(N, H, W)`` or ``(N, H, W, C)`` with C 1 or 3, the same
    H, W, C in both splits; labels integers ``(N,)`` in ``0..classes-1``, where classes is
    ``len(class_names)`` or the largest label plus one (at least 2). The arrays together may
    unpack to at most ``max_bytes``. No array may hold Python objects (pickles).
    """
    archive = _opened(file)
    with archive:
        members = _members(archive)
        headers = {key: _header(archive, info) for key, info in members.items()}
        unpacked = sum(info.file_size for info in members.values())
        if unpacked > max_bytes:
            raise TooLarge(
                f"The arrays unpack to {unpacked:,} bytes; this server takes datasets of at "
                f"most {max_bytes:,} bytes (CONVLAB_MAX_DATASET_BYTES), unpacked or not."
            )
        shape = _image_shape(headers)
        train, test = (
            _labels(archive, members, headers, "train"),
            _labels(archive, members, headers, "test"),
        )
        names = _class_names(archive, members.get("class_names"), headers.get("class_names"))
        classes = _classes(train, test, names)
        for key in ("x_train", "x_test"):
            _read_through(archive, members[key])
    return UploadFacts(
        shape=shape,
        classes=classes,
        class_names=names,
        train_count=len(train),
        test_count=len(test),
    )


def _opened(file: IO[bytes]) -> zipfile.ZipFile:
    """The upload as a zip archive (what ``numpy.savez`` writes), or a sentence on what it is."""
    start = file.read(8)
    file.seek(0)
    if start.startswith(b"\x93NUMPY"):
        raise BadUpload(
            "The file is a single .npy array, not an .npz archive: save the four arrays "
            "together with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        )
    if start[:1] in _PICKLE_START and not start.startswith(b"PK"):
        raise BadUpload(
            "The file is a Python pickle, not an .npz archive; pickles are refused. Save the "
            "arrays with numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        )
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise BadUpload(
            f"The file is not an .npz archive ({exc}): save the arrays with "
            "numpy.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)."
        ) from None


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's arrays by name; BadUpload for a missing, unknown or repeated one."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if key not in REQUIRED + OPTIONAL or not info.filename.endswith(".npy"):
            raise BadUpload(
                f"The archive holds {info.filename!r}; a dataset holds only the arrays "
                f"{', '.join(REQUIRED)} and optionally class_names."
            )
        if key in members:
            raise BadUpload(f"The archive holds {info.filename!r} twice.")
        members[key] = info
    if missing := [key for key in REQUIRED if key not in members]:
        raise BadUpload(
            f"The archive has no {', '.join(missing)}: a dataset needs x_train, y_train, x_test "
            "and y_test."
        )
    return members


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Header:
    """One array's shape and dtype from its .npy header; BadUpload for a pickled array."""
    key = info.filename.removesuffix(".npy")
    try:
        with archive.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(stream)
            offset = stream.tell()
    except zipfile.BadZipFile as exc:
        raise BadUpload(f"{key} is corrupt or truncated ({exc}); upload the file again.") from None
    except (ValueError, OSError, EOFError, RuntimeError) as exc:
        raise BadUpload(f"{key} is not a readable .npy array ({exc}).") from None
    if dtype.hasobject:
        raise BadUpload(
            f"{key} holds Python objects (a pickle), which are refused: give numbers "
            "(or, for class_names, strings: numpy.array(['cat', 'dog']))."
        )
    if fortran:
        raise BadUpload(f"{key} is stored in Fortran order; save a C-ordered array.")
    if info.file_size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise BadUpload(f"{key}'s data does not match its header's shape {shape}.")
    return _Header(tuple(shape), dtype, offset)


def _image_shape(headers: dict[str, _Header]) -> tuple[int, int, int]:
    """(H, W, C) of both splits' images, which must agree."""
    shapes = []
    for key in ("x_train", "x_test"):
        header = headers[key]
        if header.dtype != np.uint8:
            raise BadUpload(
                f"{key} is {header.dtype}; images must be uint8 (0..255): convert with "
                "x.astype(numpy.uint8) after scaling."
            )
        shape = (*header.shape, 1) if len(header.shape) == 3 else header.shape
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise BadUpload(
                f"{key} has shape {header.shape}; images must be (N, H, W) or (N, H, W, C) "
                "with C 1 (grayscale) or 3 (RGB)."
            )
        if not (shape[0] >= 1 and 2 <= shape[1] <= 1024 and 2 <= shape[2] <= 1024):
            raise BadUpload(
                f"{key} has shape {header.shape}; a split needs at least one image, each side "
                "2 to 1024 pixels."
            )
        shapes.append(shape[1:])
    if shapes[0] != shapes[1]:
        raise BadUpload(
            f"x_train's images are {shapes[0]} and x_test's {shapes[1]} (H, W, C); both splits "
            "must have the same shape."
        )
    return shapes[0][0], shapes[0][1], shapes[0][2]


def _labels(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    headers: dict[str, _Header],
    split: str,
) -> np.ndarray:
    """One split's labels as int64 ``(N,)``, one per image."""
    key = f"y_{split}"
    header = headers[key]
    if header.dtype.kind not in "iu":
        raise BadUpload(f"{key} is {header.dtype}; labels must be integers (class numbers).")
    images = headers[f"x_{split}"].shape[0]
    if header.shape not in ((images,), (images, 1)):
        raise BadUpload(
            f"{key} has shape {header.shape} for {images} images in x_{split}; give one label "
            f"per image, shape ({images},)."
        )
    labels = _read_array(archive, members[key])
    return np.asarray(labels).reshape(-1).astype(np.int64)


def _class_names(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo | None, header: _Header | None
) -> tuple[str, ...] | None:
    """The class names, if given: a 1-D array of distinct, non-empty strings."""
    if info is None or header is None:
        return None
    if header.dtype.kind not in "US" or len(header.shape) != 1:
        raise BadUpload(
            f"class_names is {header.dtype} of shape {header.shape}; give a 1-D array of "
            "strings: numpy.array(['cat', 'dog'])."
        )
    values = _read_array(archive, info)
    names = tuple(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values)
    if any(not name.strip() or len(name) > 100 for name in names):
        raise BadUpload("Every class name must be 1 to 100 characters, not blank.")
    if len(set(names)) != len(names):
        raise BadUpload("class_names holds a name twice; each class needs its own.")
    return names


def _classes(train: np.ndarray, test: np.ndarray, names: tuple[str, ...] | None) -> int:
    """How many classes the labels and names say there are (labels in 0..classes-1)."""
    labels = np.concatenate([train, test])
    lowest, highest = int(labels.min()), int(labels.max())
    classes = len(names) if names is not None else highest + 1
    if lowest < 0 or highest >= classes:
        named = f"the {classes} class_names" if names is not None else "the labels themselves"
        raise BadUpload(
            f"Labels run from {lowest} to {highest}, outside 0..{classes - 1} ({named}); "
            "labels must be class numbers from 0."
        )
    if classes < 2:
        raise BadUpload("A dataset needs at least 2 classes; every label here is 0.")
    return classes


def _read_array(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """A small array (labels, names), read whole; BadUpload if its bytes are damaged."""
    try:
        with archive.open(info) as stream:
            return np.asarray(np.lib.format.read_array(stream, allow_pickle=False))
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        key = info.filename.removesuffix(".npy")
        raise BadUpload(f"{key} is corrupt or truncated ({exc}); upload the file again.") from None


def _read_through(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read an array's bytes once, in pieces, so that a corrupt or truncated one fails its
    checksum here rather than in a worker."""
    try:
        with archive.open(info) as stream:
            while stream.read(_CHUNK):
                pass
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        key = info.filename.removesuffix(".npy")
        raise BadUpload(f"{key} is corrupt or truncated ({exc}); upload the file again.") from None
