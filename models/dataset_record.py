"""What a run trains on: the identity of its dataset, recorded on the experiment when it is
submitted (``Experiment.dataset``), and what has changed in the dataset of that name since.

A record is a JSON object: ``name``, ``kind`` (built-in, upload, folder), ``shape`` [h, w, c],
``classes`` (how many), ``class_names`` (or null), ``train_count``, ``test_count`` and
``digest``, the SHA-256 of what the data is read from (null where that is not on this machine).
Digests are cached by each file's path, size and modification time, so a submit hashes a file
only the first time it sees it (or when it changed); an upload's was taken when it arrived.
"""

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

from models.datasets import BUILT_IN, DATASETS, FOLDERS, DatasetInfo, folder_pictures

DatasetRecord = dict[str, Any]
"""A dataset's identity as ``Experiment.dataset`` holds it (see the module's docstring)."""

_KINDS = {"built-in": "built in", "upload": "an upload", "folder": "a folder of pictures"}
_NAMES_SHOWN = 5
_Known = dict[str, tuple[int, int, str]]
"""SHA-256 digests of files by path, with the size and modification time they were taken at."""
_ARCHIVES: _Known = {}
_FOLDERS: dict[Path, _Known] = {}
"""Per folder dataset, its pictures' digests."""


def record_of(info: DatasetInfo, data_dir: Path | None) -> DatasetRecord:
    """The record of a run that trains on ``info`` (custom datasets in ``data_dir``)."""
    return {
        "name": info.name,
        "kind": info.kind,
        "shape": list(info.shape),
        "classes": info.classes,
        "class_names": list(info.class_names) if info.class_names else None,
        "train_count": info.train_count,
        "test_count": info.test_count,
        "digest": content_digest(info, data_dir),
    }


def current_record(name: str) -> DatasetRecord | None:
    """The record a run submitted now would get for dataset ``name`` (None: no such dataset,
    or a folder that cannot be read, which the spec's own check reports)."""
    info = DATASETS.get(name)
    if info is None or info.problem is not None:
        return None
    return record_of(info, DATASETS.data_dir)


def content_digest(info: DatasetInfo, data_dir: Path | None) -> str | None:
    """The SHA-256 of what ``info``'s data is read from: an upload's file; for a folder, of the
    ``sha256sum`` lines of its pictures (``<digest>  <split>/<class>/<file>``, in reading
    order); a built-in's archive (fashion_mnist: of its four files' ``sha256sum`` lines);
    scikit-learn's bundled file for ``digits``. None for a built-in whose archive is not in
    ``data_dir`` (Keras will download it), and where the files cannot be read."""
    if info.kind == "upload":
        return info.sha256
    try:
        if info.name == "digits":
            files = [_digits_file()]
        elif data_dir is None:
            return None
        elif info.kind == "folder":
            return _folder_digest(data_dir / FOLDERS / info.name)
        else:
            files = [data_dir / file for file in info.archive_files]
        if not all(file.is_file() for file in files):
            return None
        digests = [(_digest(str(f), f.stat(), _ARCHIVES, _ARCHIVES), f.name) for f in files]
    except OSError:
        return None
    return digests[0][0] if len(digests) == 1 else _sum_of(digests)


def _digits_file() -> Path:
    """scikit-learn's bundled digits, found without importing scikit-learn."""
    found = importlib.util.find_spec("sklearn")
    if found is None or found.origin is None:
        raise FileNotFoundError("scikit-learn is not installed")
    return Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz"


def _folder_digest(root: Path) -> str:
    """The digest of a folder dataset's pictures, each hashed again only when it changed."""
    known = _FOLDERS.get(root, {})
    now: _Known = {}
    digests = []
    for relative, entry in folder_pictures(root):
        digests.append((_digest(entry.path, entry.stat(), known, now), relative))
    _FOLDERS[root] = now  # forgets the pictures that are gone
    return _sum_of(digests)


def _digest(path: str, stat: os.stat_result, known: _Known, now: _Known) -> str:
    """The SHA-256 of the file at ``path``, from ``known`` while its size and modification
    time are those of ``stat``; remembered in ``now``."""
    entry = known.get(path)
    if entry is None or entry[:2] != (stat.st_size, stat.st_mtime_ns):
        with open(path, "rb") as file:
            entry = (
                stat.st_size,
                stat.st_mtime_ns,
                hashlib.file_digest(file, "sha256").hexdigest(),
            )
    now[path] = entry
    return entry[2]


def _sum_of(digests: list[tuple[str, str]]) -> str:
    """The SHA-256 of ``sha256sum``'s lines for these (digest, name) pairs."""
    lines = "".join(f"{digest}  {name}\n" for digest, name in digests)
    return hashlib.sha256(lines.encode()).hexdigest()


def what_changed(before: DatasetRecord, now: DatasetRecord) -> list[str]:
    """What differs in ``now`` from ``before`` (two records of one name), in words; empty when
    nothing does. The content counts only where nothing else differs and both have a digest."""
    changes = []
    if now["kind"] != before["kind"]:
        changes.append(f"it is {_KINDS[now['kind']]}, not {_KINDS[before['kind']]}")
    if now["shape"] != before["shape"]:
        changes.append(f"its images are {_size(now['shape'])}, not {_size(before['shape'])}")
    if (now["classes"], now["class_names"]) != (before["classes"], before["class_names"]):
        changes.append(_classes_changed(before, now))
    counts = (now["train_count"], now["test_count"])
    if counts != (before["train_count"], before["test_count"]):
        changes.append(
            f"it holds {counts[0]} training and {counts[1]} test images, not "
            f"{before['train_count']} and {before['test_count']}"
        )
    digests = (before["digest"], now["digest"])
    if not changes and None not in digests and digests[0] != digests[1]:
        changes.append(
            f"its contents differ (digest {digests[1][:12]}, not {digests[0][:12]}), with the "
            "same shape, classes and counts"
        )
    return changes


def _size(shape: list[int]) -> str:
    return "x".join(map(str, shape))


def _classes_changed(before: DatasetRecord, now: DatasetRecord) -> str:
    """How the classes changed: names added, removed or reordered, or their number."""
    old, new = before["class_names"], now["class_names"]
    if old is None or new is None:
        if now["classes"] != before["classes"]:
            return f"it has {now['classes']} classes, not {before['classes']}"
        return f"its classes are named {_names(new)}, not {_names(old)}"
    added = [name for name in new if name not in old]
    removed = [name for name in old if name not in new]
    if not (added or removed):
        return f"its classes are in another order ({_names(new)}, not {_names(old)})"
    parts = [
        f"{_names(added)} added" if added else "",
        f"{_names(removed)} removed" if removed else "",
    ]
    return f"its classes changed: {'; '.join(part for part in parts if part)}"


def _names(names: list[str] | None) -> str:
    """A few class names, quoted, or 'by number' for none."""
    if names is None:
        return "by number"
    shown = ", ".join(repr(name) for name in names[:_NAMES_SHOWN])
    return shown + (f" and {len(names) - _NAMES_SHOWN} more" if len(names) > _NAMES_SHOWN else "")


def changes_since(record: DatasetRecord | None) -> str | None:
    """What changed in the dataset of ``record``'s name since it was recorded, in words; None
    when nothing did, for no record (a run submitted before records were kept), and for a
    dataset gone altogether (which the spec's own check reports)."""
    now = None if record is None else current_record(record["name"])
    changes = [] if record is None or now is None else what_changed(record, now)
    return "; ".join(changes) or None


def trained_on(name: str, record: DatasetRecord | None) -> DatasetInfo:
    """The facts of the data a run trained on (shape, classes, pixel scale): from its record,
    or for a run from before records were kept, today's dataset called ``name``."""
    if record is None:
        return DATASETS[name]
    built_in = BUILT_IN.get(record["name"]) if record["kind"] == "built-in" else None
    names = record["class_names"]
    return DatasetInfo(
        name=record["name"],
        description=built_in.description if built_in else f"As recorded: {record['name']}.",
        shape=tuple(record["shape"]),  # type: ignore[arg-type]
        classes=record["classes"],
        train_count=record["train_count"],
        test_count=record["test_count"],
        archive_files=(),
        class_names=tuple(names) if names else None,
        pixel_max=built_in.pixel_max if built_in else 255,
        kind=record["kind"],
    )
