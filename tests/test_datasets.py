"""Dataset loaders, on tiny archives written here in the official formats."""

import os
import pickle
import socket
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from models.datasets import find_custom
from models.upload_files import publish, receive, remove
from models.uploads import check_npz
from tests.archives import (
    images,
    save_npz,
    write_cifar10,
    write_fashion,
    write_mnist,
    write_tar,
)
from worker.datasets import DatasetUnavailable, clear_cache, load_dataset, prepare

ROOT = Path(__file__).resolve().parents[1]

Writer = Callable[[Path], dict[str, np.ndarray]]


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    clear_cache()
    yield
    clear_cache()


def test_load_dataset_round_trips_cifar10_pixels(tmp_path: Path) -> None:
    expected = write_cifar10(tmp_path)

    data = load_dataset("cifar10", tmp_path)

    assert data.x_train.shape == (20, 32, 32, 3) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (4, 32, 32, 3)
    # The first image is 80 * channel + row + 2 * column: a wrong transpose cannot match.
    assert data.x_train[0, 3, 5, 0] == 13
    assert data.x_train[0, 3, 5, 1] == 93
    assert data.x_train[0, 3, 5, 2] == 173
    assert data.x_train[0, 31, 0, 2] == 191
    np.testing.assert_array_equal(data.x_train, expected["x_train"])
    np.testing.assert_array_equal(data.x_test, expected["x_test"])
    assert data.y_train.dtype == np.int64 and data.y_train.shape == (20,)
    np.testing.assert_array_equal(data.y_train, expected["y_train"])
    np.testing.assert_array_equal(data.y_test, expected["y_test"])


def test_load_dataset_reads_cifar100_fine_labels(tmp_path: Path) -> None:
    x_train, x_test = images(6, (32, 32, 3)), images(3, (32, 32, 3))
    fine_train, fine_test = np.array([99, 0, 42, 7, 7, 64]), np.array([5, 98, 0])

    def batch(images: np.ndarray, fine: np.ndarray) -> bytes:
        # Protocol 2 from Python 3 stores bytes through _codecs.encode, which must be allowed.
        data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
        return pickle.dumps(
            {b"data": data, b"fine_labels": fine.tolist(), b"coarse_labels": [1] * len(fine)},
            protocol=2,
        )

    write_tar(
        tmp_path / "cifar-100-python.tar.gz",
        {
            "cifar-100-python/train": batch(x_train, fine_train),
            "cifar-100-python/test": batch(x_test, fine_test),
            "cifar-100-python/meta": pickle.dumps({b"fine_label_names": []}),
        },
    )

    data = load_dataset("cifar100", tmp_path)

    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_train, fine_train)
    np.testing.assert_array_equal(data.y_test, fine_test)


@pytest.mark.parametrize(
    ("name", "write"), [("mnist", write_mnist), ("fashion_mnist", write_fashion)]
)
def test_load_dataset_adds_channel_axis_to_grayscale(
    tmp_path: Path, name: str, write: Writer
) -> None:
    expected = write(tmp_path)

    data = load_dataset(name, tmp_path)

    assert data.x_train.shape == (6, 28, 28, 1) and data.x_train.dtype == np.uint8
    assert data.x_test.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(data.x_train[..., 0], expected["x_train"])
    np.testing.assert_array_equal(data.x_test[..., 0], expected["x_test"])
    assert data.y_train.dtype == np.int64
    np.testing.assert_array_equal(data.y_train, expected["y_train"])
    np.testing.assert_array_equal(data.y_test, expected["y_test"])


def test_prepare_keeps_the_raw_uint8_pixels_for_the_model_to_scale(tmp_path: Path) -> None:
    expected = write_cifar10(tmp_path)

    data = prepare("cifar10", tmp_path, train_size=None, test_size=None, seed=0)

    assert data.x_train.dtype == np.uint8 and data.x_test.dtype == np.uint8
    np.testing.assert_array_equal(data.x_train, expected["x_train"])
    np.testing.assert_array_equal(data.y_train, expected["y_train"])


def test_load_dataset_splits_digits_80_20_by_class() -> None:
    data = load_dataset("digits", Path("unused"))

    assert data.x_train.shape == (1437, 8, 8, 1) and data.x_test.shape == (360, 8, 8, 1)
    assert data.x_train.dtype == np.uint8 and data.x_train.max() == 16
    assert data.y_train.dtype == np.int64 and data.y_test.shape == (360,)
    assert set(np.bincount(data.y_test)) <= {35, 36, 37}


def test_prepare_takes_every_digit_when_no_size_is_given() -> None:
    raw = load_dataset("digits", Path("unused"))

    data = prepare("digits", Path("unused"), train_size=None, test_size=None, seed=0)

    assert sorted(map(bytes, data.x_train)) == sorted(map(bytes, raw.x_train))
    np.testing.assert_array_equal(np.sort(data.y_test), np.sort(raw.y_test))


def test_prepare_balances_classes_in_subsets() -> None:
    data = prepare("digits", Path("unused"), train_size=25, test_size=10, seed=7)

    assert data.x_train.shape == (25, 8, 8, 1) and data.x_test.shape == (10, 8, 8, 1)
    assert np.bincount(data.y_train).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    assert np.bincount(data.y_test).tolist() == [1] * 10
    assert sorted(data.y_train.tolist()) != data.y_train.tolist()  # shuffled, not class-sorted


def test_prepare_repeats_subsets_for_a_seed() -> None:
    first = prepare("digits", Path("unused"), train_size=50, test_size=20, seed=3)
    again = prepare("digits", Path("unused"), train_size=50, test_size=20, seed=3)
    other = prepare("digits", Path("unused"), train_size=50, test_size=20, seed=4)

    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.x_train, other.x_train)
    assert not np.array_equal(first.x_test, other.x_test)


def test_prepare_keeps_training_subset_when_test_size_changes() -> None:
    first = prepare("digits", Path("unused"), train_size=30, test_size=10, seed=5)
    other = prepare("digits", Path("unused"), train_size=30, test_size=None, seed=5)

    np.testing.assert_array_equal(first.x_train, other.x_train)
    assert other.x_test.shape == (360, 8, 8, 1)


def test_prepare_rejects_subset_larger_than_data() -> None:
    with pytest.raises(ValueError, match="between 1 and 1437"):
        prepare("digits", Path("unused"), train_size=1438, test_size=None, seed=0)


def test_prepare_rejects_subset_a_class_cannot_fill(tmp_path: Path) -> None:
    labels = np.array([0, *np.repeat(np.arange(1, 10), 2)], dtype=np.uint8)  # one 0, two of 1..9
    save_npz(tmp_path / "mnist.npz", {**write_mnist(tmp_path, n=19), "y_train": labels})

    with pytest.raises(ValueError, match="needs 2 images of class 0, but there are only 1"):
        prepare("mnist", tmp_path, train_size=19, test_size=None, seed=0)


def test_load_dataset_rejects_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown dataset 'imagenet'"):
        load_dataset("imagenet", tmp_path)


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


class _Exec:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (self.code,)


@pytest.mark.parametrize(
    "gadget",
    [
        lambda marker: _System(f"touch {marker}"),
        lambda marker: {b"data": _Exec(f"open({str(marker)!r}, 'w').close()"), b"labels": []},
    ],
    ids=["os.system", "builtins.exec"],
)
def test_load_dataset_refuses_malicious_pickle(
    tmp_path: Path, gadget: Callable[[Path], object]
) -> None:
    write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]
    members["cifar-10-batches-py/data_batch_3"] = pickle.dumps(gadget(marker))
    write_tar(archive, members)

    with pytest.raises(DatasetUnavailable, match=r"cifar-10-python\.tar\.gz is corrupt") as caught:
        load_dataset("cifar10", tmp_path)

    assert not marker.exists()
    assert "refusing" in str(caught.value)


@pytest.mark.parametrize(
    ("name", "write", "file"),
    [
        ("cifar10", write_cifar10, "cifar-10-python.tar.gz"),
        ("mnist", write_mnist, "mnist.npz"),
        ("fashion_mnist", write_fashion, "t10k-images-idx3-ubyte.gz"),
    ],
)
def test_load_dataset_names_truncated_file(
    tmp_path: Path, name: str, write: Writer, file: str
) -> None:
    write(tmp_path)
    path = tmp_path / file
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(DatasetUnavailable, match="is corrupt, truncated") as caught:
        load_dataset(name, tmp_path)

    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("arrays", "problem"),
    [
        ({"x_train": np.zeros((4, 27, 28), np.uint8)}, r"images are \(27, 28, 1\)"),
        ({"y_train": np.zeros(5, np.uint8)}, "5 labels for 6 images"),
        ({"x_test": np.zeros((3, 28, 28), np.float64)}, "images are float64"),
        ({"y_test": np.full(3, 10, np.uint8)}, r"labels outside 0\.\.9"),
    ],
)
def test_load_dataset_rejects_wrong_arrays(
    tmp_path: Path, arrays: dict[str, np.ndarray], problem: str
) -> None:
    save_npz(tmp_path / "mnist.npz", {**write_mnist(tmp_path), **arrays})

    with pytest.raises(DatasetUnavailable, match=problem) as caught:
        load_dataset("mnist", tmp_path)

    assert "mnist.npz" in str(caught.value)


def test_load_dataset_returns_cached_arrays(tmp_path: Path) -> None:
    write_mnist(tmp_path)
    first = load_dataset("mnist", tmp_path)
    (tmp_path / "mnist.npz").unlink()

    again = load_dataset("mnist", tmp_path)

    assert again is first
    assert not first.x_train.flags.writeable  # later jobs share these arrays


def _run_isolated(
    script: str, home: Path, proxy: str, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh Python with an empty Keras cache and every download proxied."""
    env = {**os.environ, "HOME": str(home), "KERAS_HOME": str(home / ".keras")}
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[key] = proxy
    for key in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _messages(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    lines = [line.split(" ", 2) for line in result.stdout.splitlines()]
    messages = {line[1]: line[2] for line in lines if line[0] == "UNAVAILABLE"}
    assert messages, result.stdout + result.stderr
    return messages


_LOAD_ALL = """
    import sys, time
    from pathlib import Path
    import worker.datasets
    worker.datasets._DOWNLOAD_TIMEOUT_S = float(sys.argv[2])
    for name in sys.argv[3:]:
        started = time.monotonic()
        try:
            worker.datasets.load_dataset(name, Path(sys.argv[1]))
        except worker.datasets.DatasetUnavailable as exc:
            print("UNAVAILABLE", name, f"{time.monotonic() - started:.1f}s", exc)
    """


def test_load_dataset_explains_missing_archive(tmp_path: Path) -> None:
    # A proxy that refuses connections fails Keras' download at once, network or not.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{probe.getsockname()[1]}"
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    names = {
        "cifar10": "cifar-10-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar.html)",
        "cifar100": "cifar-100-python.tar.gz (from https://www.cs.toronto.edu/~kriz/cifar.html)",
        "mnist": "mnist.npz (from https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
        "fashion_mnist": "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, ",
    }

    result = _run_isolated(_LOAD_ALL, tmp_path, refused, str(data_dir), "30", *names)

    messages = _messages(result)
    assert messages.keys() == names.keys()
    for name, files in names.items():
        assert files in messages[name]
        assert f"in {data_dir.resolve()}, or give this machine internet access" in messages[name]
        assert "download failed: " in messages[name]
    assert list(data_dir.iterdir()) == []  # Keras' attempts leave nothing in the data dir


def test_load_dataset_gives_up_on_silent_network(tmp_path: Path) -> None:
    # A proxy that accepts connections and never answers stands for a firewall dropping packets.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        proxy = f"http://127.0.0.1:{silent.getsockname()[1]}"

        result = _run_isolated(_LOAD_ALL, tmp_path, proxy, str(tmp_path), "1", "mnist", timeout=90)

    message = _messages(result)["mnist"]
    assert float(message.split("s ", 1)[0]) < 20
    assert "mnist.npz" in message and "timed out" in message


def test_import_leaves_tensorflow_unloaded() -> None:
    script = """
        import sys
        from pathlib import Path
        from worker.datasets import prepare
        prepare("digits", Path("unused"), train_size=10, test_size=10, seed=0)
        print(sorted(m for m in sys.modules if m.split(".")[0] in {"keras", "tensorflow"}))
        """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.stdout.strip() == "[]", result.stderr


def _upload(data_dir: Path, name: str, arrays: dict[str, Any]) -> None:
    """Store ``arrays`` as the upload ``name``, the way POST /datasets does."""
    path = data_dir / f"{name}.source.npz"
    np.savez(path, **arrays)
    with path.open("rb") as source:
        received = receive(data_dir, source)
    with received[0].open("rb") as file:
        facts = check_npz(file, 10**8)
    publish(data_dir, name, received, facts, owner=None)


def _labelled(value: int) -> dict[str, np.ndarray]:
    return {
        "x_train": np.full((4, 6, 6), value, np.uint8),
        "y_train": np.array([0, 1, 0, 1]),
        "x_test": np.full((2, 6, 6), value, np.uint8),
        "y_test": np.array([1, 0]),
    }


def test_load_dataset_reads_an_upload_and_never_serves_a_deleted_ones_arrays(
    tmp_path: Path,
) -> None:
    _upload(tmp_path, "mine", _labelled(7))
    first = load_dataset("mine", tmp_path)
    assert first.x_train.shape == (4, 6, 6, 1) and first.x_train.max() == 7
    assert first.y_test.dtype == np.int64 and list(first.y_test) == [1, 0]
    assert load_dataset("mine", tmp_path) is first  # cached

    info = find_custom("mine", tmp_path)
    assert info is not None
    remove(tmp_path, info)
    _upload(tmp_path, "mine", _labelled(9))

    assert load_dataset("mine", tmp_path).x_train.max() == 9


def test_load_dataset_reads_a_folder_as_keras_does(tmp_path: Path) -> None:
    root = tmp_path / "custom" / "pets"
    pictures = {
        ("train", "dog"): [np.full((4, 6), 200, np.uint8)],
        ("train", "cat"): [np.full((4, 6), 10, np.uint8), np.full((8, 12), 50, np.uint8)],
        ("test", "dog"): [np.full((4, 6), 190, np.uint8)],
    }
    for (split, name), arrays in pictures.items():
        (root / split / name).mkdir(parents=True)
        for index, array in enumerate(arrays):
            Image.fromarray(array).save(root / split / name / f"{index}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not a picture")

    data = load_dataset("pets", tmp_path)

    assert data.x_train.shape == (3, 4, 6, 1)  # the first picture's size; the 8x12 one resized
    assert list(data.y_train) == [0, 0, 1]  # cat, cat, dog: sorted folder names
    assert [int(x.max()) for x in data.x_train] == [10, 50, 200]
    assert list(data.y_test) == [1] and int(data.x_test.max()) == 190
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(root / "train" / "dog" / "1.png")
    assert len(load_dataset("pets", tmp_path).x_train) == 4  # a new picture: read again
