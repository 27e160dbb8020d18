"""Tiny dataset archives in the official formats, for tests that must not download anything."""

import gzip
import io
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RNG = np.random.default_rng(1234)


def images(n: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random uint8 images, the first one row + 2 * column + 80 * channel, the last with a 255."""
    images = RNG.integers(0, 255, size=(n, *shape), dtype=np.uint8)
    images[0] = np.tensordot((1, 2, 80)[: len(shape)], np.indices(shape), axes=1)
    images[-1].flat[0] = 255
    return images


def add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in members.items():
            add_member(tar, name, payload)


def cifar_batch(images: np.ndarray, labels: np.ndarray, label_key: bytes, protocol: int) -> bytes:
    """A CIFAR batch pickle: (N, 3072) uint8 rows in channel, row, column order."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": b"a tiny batch",
        label_key: [int(label) for label in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=protocol)


def write_cifar10(
    data_dir: Path, per_batch: int = 4, draw: Callable[[np.ndarray], np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """A cifar-10-python.tar.gz with five training batches, a test batch and batches.meta;
    ``draw`` makes the (N, 32, 32, 3) uint8 pictures of N labels (default: random ones)."""
    y_train, y_test = np.arange(5 * per_batch) % 10, (np.arange(per_batch) + 3) % 10
    if draw is None:
        x_train, x_test = images(5 * per_batch, (32, 32, 3)), images(per_batch, (32, 32, 3))
    else:
        x_train, x_test = draw(y_train), draw(y_test)
    members = {
        f"cifar-10-batches-py/data_batch_{i + 1}": cifar_batch(
            x_train[i * per_batch : (i + 1) * per_batch],
            y_train[i * per_batch : (i + 1) * per_batch],
            b"labels",
            pickle.DEFAULT_PROTOCOL,
        )
        for i in range(5)
    }
    members["cifar-10-batches-py/test_batch"] = cifar_batch(
        x_test, y_test, b"labels", pickle.DEFAULT_PROTOCOL
    )
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {b"label_names": [b"airplane"] * 10, b"num_cases_per_batch": per_batch, b"num_vis": 3072}
    )
    write_tar(data_dir / "cifar-10-python.tar.gz", members)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def save_npz(path: Path, arrays: dict[str, Any]) -> None:
    np.savez_compressed(path, **arrays)


def write_mnist(data_dir: Path, n: int = 6) -> dict[str, np.ndarray]:
    """A mnist.npz as Keras publishes it: (N, 28, 28) uint8 images, uint8 labels."""
    arrays = {
        "x_train": images(n, (28, 28)),
        "y_train": (np.arange(n) % 10).astype(np.uint8),
        "x_test": images(n // 2, (28, 28)),
        "y_test": (np.arange(n // 2) % 10).astype(np.uint8),
    }
    save_npz(data_dir / "mnist.npz", arrays)
    return arrays


def idx_gz(array: np.ndarray) -> bytes:
    """A gzipped IDX file: zero, zero, type 0x08 (ubyte), dimension count, big-endian sizes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.tobytes())


def write_fashion(data_dir: Path, n: int = 6) -> dict[str, np.ndarray]:
    """The four gzipped IDX files of Fashion-MNIST."""
    arrays = {
        "x_train": images(n, (28, 28)),
        "y_train": (np.arange(n) % 10).astype(np.uint8),
        "x_test": images(n // 2, (28, 28)),
        "y_test": (np.arange(n // 2) % 10).astype(np.uint8),
    }
    for file, key in [
        ("train-images-idx3-ubyte.gz", "x_train"),
        ("train-labels-idx1-ubyte.gz", "y_train"),
        ("t10k-images-idx3-ubyte.gz", "x_test"),
        ("t10k-labels-idx1-ubyte.gz", "y_test"),
    ]:
        (data_dir / file).write_bytes(idx_gz(arrays[key]))
    return arrays


def write_learnable_cifar10(
    data_dir: Path, train_images: int, *, signal: float = 0.35, mirrored: bool = False
) -> Path:
    """A cifar-10-python.tar.gz of ``train_images`` pictures (and a fifth as many to test on)
    that a network can learn: each class a fixed random pattern, ``signal`` of each pixel, under
    noise; ``mirrored``: each pattern left-right symmetric (as a class of natural pictures is,
    for a run that flips its pictures)."""
    rng = np.random.default_rng(0)
    if mirrored:
        half = rng.integers(0, 256, size=(10, 32, 16, 3))
        patterns = np.concatenate([half, half[:, :, ::-1]], axis=2)
    else:
        patterns = rng.integers(0, 256, size=(10, 32, 32, 3))

    def draw(labels: np.ndarray) -> np.ndarray:
        noise = rng.integers(0, 256, size=(len(labels), 32, 32, 3))
        return (signal * patterns[labels] + (1 - signal) * noise).astype(np.uint8)

    data_dir.mkdir(parents=True, exist_ok=True)
    write_cifar10(data_dir, per_batch=train_images // 5, draw=draw)
    return data_dir
