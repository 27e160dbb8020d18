"""Uploaded datasets on disk, in the data directory every worker reads: stored whole or not at
all, and deleted (``store.datasets.using`` says which experiments use one)."""

import contextlib
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from models.datasets import (
    UPLOADS,
    DatasetInfo,
    deleted_metadata,
    find_custom,
    upload_metadata,
)
from models.uploads import UploadFacts

_CHUNK = 1 << 20
INCOMING = ".incoming-"
"""How the files of an upload still being checked begin (never listed)."""
ABANDONED_S = 86_400


class NameTaken(Exception):
    """Another upload took the name first."""


def receive(data_dir: Path, source: IO[bytes]) -> tuple[Path, str, int]:
    """Copy ``source`` to a new hidden file in the uploads folder: its path, SHA-256, size."""
    folder = data_dir / UPLOADS
    folder.mkdir(parents=True, exist_ok=True)
    _forget_abandoned(folder)
    path = folder / f"{INCOMING}{uuid.uuid4().hex}.npz"
    digest, size = hashlib.sha256(), 0
    try:
        with path.open("xb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, digest.hexdigest(), size


def _forget_abandoned(folder: Path) -> None:
    """Remove what uploads cut short by a crash left behind (a day old: none still running)."""
    for path in folder.glob(f"{INCOMING}*"):
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > ABANDONED_S:
                path.unlink()


def publish(
    data_dir: Path,
    name: str,
    received: tuple[Path, str, int],
    facts: UploadFacts,
    owner: str | None,
) -> DatasetInfo:
    """Give a received, checked file its name: the arrays are renamed into place, then the
    metadata appears in one step (a hard link, which fails if the name is taken), so readers
    see the whole dataset or none of it. NameTaken if the name is someone else's by now."""
    path, sha256, size = received
    folder = data_dir / UPLOADS
    stored = folder / f"{name}-{uuid.uuid4().hex[:12]}.npz"
    meta = {
        "name": name,
        "file": stored.name,
        "owner": owner,
        "created_at": datetime.now(UTC).isoformat(),
        "shape": list(facts.shape),
        "classes": facts.classes,
        "class_names": list(facts.class_names) if facts.class_names else None,
        "train_size": facts.train_count,
        "test_size": facts.test_count,
        "bytes": size,
        "sha256": sha256,
    }
    draft = folder / f"{INCOMING}{uuid.uuid4().hex}.json"
    draft.write_text(json.dumps(meta, indent=1))
    try:
        os.replace(path, stored)
        try:
            os.link(draft, upload_metadata(data_dir, name))
        except FileExistsError:
            stored.unlink(missing_ok=True)
            raise NameTaken(name) from None
    finally:
        draft.unlink(missing_ok=True)
    info = find_custom(name, data_dir)
    assert info is not None, f"{name} was just stored"
    return info


def remove(data_dir: Path, info: DatasetInfo) -> None:
    """Delete an upload: its metadata moves aside (kept for the experiments that trained on it,
    and gone at once from the catalogue for everyone), then its file goes."""
    metadata = upload_metadata(data_dir, info.name)
    kept = deleted_metadata(data_dir, info.name)
    kept.parent.mkdir(exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        meta = json.loads(metadata.read_text()) | {"deleted_at": datetime.now(UTC).isoformat()}
        draft = kept.parent / f"{INCOMING}{uuid.uuid4().hex}.json"
        draft.write_text(json.dumps(meta, indent=1))
        os.replace(draft, kept)
        metadata.unlink()
    with contextlib.suppress(FileNotFoundError):
        (data_dir / info.archive_files[0]).unlink()
