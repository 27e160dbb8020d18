"""Your own datasets: .npz uploads and folders of pictures, checked, listed, trained on by a
real worker, and deleted (owner or admin, never while unfinished experiments use them)."""

import contextlib
import io
import pickle
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from api.main import create_app
from core.config import Settings
from models.datasets import DATASETS
from models.status import Status
from store.db import Session, get_engine
from store.tokens import create_token
from tests.services import Stack, Trainer, running_stack, wait_for, wait_for_status

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def quadrants(n: int, seed: int, side: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``n`` grayscale pictures of 4 classes, each bright in one quadrant, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CORNERS)
    pictures = rng.normal(40, 20, size=(n, side, side))
    half = side // 2
    for picture, label in zip(pictures, labels, strict=True):
        row, column = divmod(int(label), 2)
        picture[row * half : (row + 1) * half, column * half : (column + 1) * half] += 160
    return np.clip(pictures, 0, 255).astype(np.uint8), labels


def npz(compressed: bool = False, **arrays: Any) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def dataset(n_train: int = 40, n_test: int = 12, **changes: Any) -> dict[str, Any]:
    """The arrays of a small quadrants dataset, with ``changes`` (None removes an array)."""
    x_train, y_train = quadrants(n_train, 0)
    x_test, y_test = quadrants(n_test, 1)
    arrays = {
        "x_train": x_train,
        "y_train": y_train,
        "x_test": x_test,
        "y_test": y_test,
        "class_names": np.array(CORNERS),
    }
    arrays.update(changes)
    return {key: value for key, value in arrays.items() if value is not None}


def upload(client: TestClient | httpx.Client, name: str, data: bytes) -> httpx.Response:
    return client.post("/datasets", data={"name": name}, files={"file": (f"{name}.npz", data)})


def stored(data_dir: Path) -> list[str]:
    """Every file under the data directory."""
    return sorted(str(p.relative_to(data_dir)) for p in data_dir.rglob("*") if p.is_file())


def write_folder(root: Path, pictures: dict[str, dict[str, list[np.ndarray]]]) -> None:
    """PNG files ``root/<split>/<class>/<i>.png``."""
    for split, classes in pictures.items():
        for name, arrays in classes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for index, array in enumerate(arrays):
                Image.fromarray(array).save(root / split / name / f"{index:03}.png")


def quadrant_folder(root: Path, n_train: int, n_test: int) -> None:
    """The quadrants dataset as RGB PNGs in a folder per corner."""
    folders: dict[str, dict[str, list[np.ndarray]]] = {}
    for split, n, seed in (("train", n_train, 2), ("test", n_test, 3)):
        x, y = quadrants(n, seed)
        rgb = np.repeat(x[..., np.newaxis], 3, axis=3)
        folders[split] = {
            corner: [rgb[i] for i in np.flatnonzero(y == k)] for k, corner in enumerate(CORNERS)
        }
    write_folder(root, folders)


# Uploads through an in-process API (no worker): what is accepted, refused and listed.


@pytest.fixture
def small(tmp_path: Path) -> Iterator[tuple[TestClient, Path]]:
    """An app taking datasets of at most 60 kB, and its data directory."""
    settings = Settings(home=tmp_path, max_dataset_bytes=60_000)
    with TestClient(create_app(settings)) as client:
        yield client, settings.resolved_data_dir


def test_an_upload_is_listed_with_its_facts_and_stored_whole(
    client: TestClient, settings: Settings
) -> None:
    response = upload(client, "quads", npz(**dataset()))

    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/datasets/quads"
    entry = response.json()
    assert entry | {"created_at": None, "files": None, "bytes": None} == {
        "name": "quads",
        "description": "Uploaded on " + entry["created_at"][:10] + ".",
        "available": True,
        "classes": 4,
        "shape": [8, 8, 1],
        "train_size": 40,
        "test_size": 12,
        "class_names": list(CORNERS),
        "files": None,
        "kind": "upload",
        "owner": None,
        "created_at": None,
        "bytes": None,
        "problem": None,
    }
    listed = {item["name"]: item for item in client.get("/datasets").json()}
    assert listed["quads"] == entry and "digits" in listed
    assert client.get(response.headers["location"]).json() == entry
    data_dir = settings.resolved_data_dir
    npz_file = Path(entry["files"][0])
    assert stored(data_dir) == sorted(
        ["uploads/quads.json", str(npz_file.relative_to(data_dir.resolve()))]
    )
    assert npz_file.stat().st_size == entry["bytes"]


def test_an_upload_without_class_names_counts_classes_from_its_labels(
    client: TestClient,
) -> None:
    x, _ = quadrants(30, 0, side=6)
    body = npz(x_train=x, y_train=np.arange(30) % 3, x_test=x[:5], y_test=np.arange(5) % 3)

    entry = upload(client, "three", body).json()

    assert (entry["classes"], entry["class_names"], entry["shape"]) == (3, None, [6, 6, 1])


def _corrupt_member(body: bytes) -> bytes:
    """An uncompressed .npz with one byte of x_train's pixels changed (its CRC no longer
    matches)."""
    data = bytearray(body)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        info = archive.getinfo("x_train.npy")
    data[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    return bytes(data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


GOOD = npz(**dataset())

BAD_UPLOADS = [
    ("pickle", pickle.dumps(dataset()), "The file is a Python pickle, not an .npz archive"),
    ("text", b"x_train,y_train\n1,2\n", "The file is not an .npz archive"),
    ("truncated", GOOD[: len(GOOD) // 2], "The file is not an .npz archive"),
    ("npy", _npy(quadrants(4, 0)[0]), "The file is a single .npy array"),
    ("corrupt", _corrupt_member(GOOD), "x_train is corrupt or truncated"),
    (
        "objects",
        npz(**dataset(y_train=np.array([{"label": 1}] * 40, dtype=object))),
        "y_train holds Python objects (a pickle), which are refused",
    ),
    (
        "lengths",
        npz(**dataset(y_train=np.arange(39) % 4)),
        "y_train has shape (39,) for 40 images in x_train",
    ),
    (
        "range",
        npz(**dataset(y_test=np.full(12, 4))),
        "Labels run from 0 to 4, outside 0..3 (the 4 class_names)",
    ),
    ("negative", npz(**dataset(y_train=np.arange(40) % 4 - 1)), "Labels run from -1 to 3"),
    (
        "floats",
        npz(**dataset(x_train=quadrants(40, 0)[0] / 255.0)),
        "x_train is float64; images must be uint8",
    ),
    (
        "shapes",
        npz(**dataset(x_test=quadrants(12, 1, side=6)[0])),
        "x_train's images are (8, 8, 1) and x_test's (6, 6, 1)",
    ),
    (
        "channels",
        npz(**dataset(x_train=np.zeros((40, 8, 8, 2), np.uint8))),
        "x_train has shape (40, 8, 8, 2); images must be (N, H, W) or (N, H, W, C)",
    ),
    ("missing", npz(**dataset(y_test=None)), "The archive has no y_test"),
    ("extra", npz(**dataset(weights=np.zeros(3))), "The archive holds 'weights.npy'"),
    (
        "names",
        npz(**dataset(class_names=np.array(["a", "b", "a", "c"]))),
        "class_names holds a name twice",
    ),
    (
        "one-class",
        npz(**dataset(y_train=np.zeros(40, int), y_test=np.zeros(12, int), class_names=None)),
        "A dataset needs at least 2 classes",
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "sentence"), BAD_UPLOADS, ids=[case[0] for case in BAD_UPLOADS]
)
def test_a_bad_upload_is_a_422_at_file_and_stores_nothing(
    client: TestClient, settings: Settings, name: str, body: bytes, sentence: str
) -> None:
    response = upload(client, name, body)

    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert error["msg"].startswith(sentence), error["msg"]
    assert stored(settings.resolved_data_dir) == []
    assert name not in {item["name"] for item in client.get("/datasets").json()}


def test_an_upload_over_the_limit_is_a_413_before_it_is_read(
    small: tuple[TestClient, Path],
) -> None:
    client, data_dir = small
    response = upload(client, "big", b"\0" * 100_000)

    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The upload is over this server's limit of 60,000 bytes for a dataset "
        "(CONVLAB_MAX_DATASET_BYTES)."
    )
    assert stored(data_dir) == []


def test_a_streamed_upload_over_the_limit_is_a_413(small: tuple[TestClient, Path]) -> None:
    """No Content-Length (chunked): counted as it arrives (that the server stops reading it
    there is test_a_10_gb_stream_is_refused_after_the_first_megabytes, on a real server)."""
    client, data_dir = small

    def body() -> Iterator[bytes]:
        yield (
            b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n--b\r\n'
            b'Content-Disposition: form-data; name="file"; filename="big.npz"\r\n\r\n'
        )
        for _ in range(20):
            yield b"\0" * 10_000
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/datasets", content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
    )

    assert response.status_code == 413
    assert "CONVLAB_MAX_DATASET_BYTES" in response.json()["detail"]
    assert stored(data_dir) == []


def test_arrays_that_unpack_over_the_limit_are_a_413(small: tuple[TestClient, Path]) -> None:
    zeros = np.zeros((2000, 32, 32), np.uint8)  # 2 MB of zeros: a few kB compressed
    body = npz(True, **dataset(x_train=zeros, y_train=np.arange(2000) % 4))
    client, data_dir = small
    assert len(body) < 60_000

    response = upload(client, "bomb", body)

    assert response.status_code == 413
    assert response.json()["detail"].startswith("The arrays unpack to 2,0")
    assert stored(data_dir) == []


@pytest.mark.parametrize(
    ("name", "status", "sentence"),
    [
        ("Quads", 422, "a dataset name is 1 to 64 lowercase letters"),
        ("../etc", 422, "a dataset name is 1 to 64 lowercase letters"),
        ("x" * 65, 422, "a dataset name is 1 to 64 lowercase letters"),
        ("digits", 409, "A dataset called digits exists already (built into the server)"),
        ("taken", 409, "A dataset called taken exists already (uploaded); choose another"),
        ("pictures", 409, "A dataset called pictures exists already (a folder in "),
    ],
)
def test_a_name_must_be_a_free_slug(
    client: TestClient, settings: Settings, name: str, status: int, sentence: str
) -> None:
    assert upload(client, "taken", GOOD).status_code == 201
    quadrant_folder(settings.resolved_data_dir / "custom" / "pictures", 8, 4)
    before = stored(settings.resolved_data_dir)

    response = upload(client, name, GOOD)

    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    message = detail if status == 409 else detail[0]["msg"]
    assert message.startswith(sentence), message
    if status == 422:
        assert detail[0]["loc"] == ["body", "name"]
    assert stored(settings.resolved_data_dir) == before


def test_an_upload_without_its_file_is_a_422_at_file(client: TestClient) -> None:
    response = client.post("/datasets", data={"name": "nofile"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "file"]


def test_a_spec_names_an_upload_and_a_typo_gets_the_closest_name(client: TestClient) -> None:
    upload(client, "quadrants", GOOD)
    accepted = client.post("/experiments", json={"dataset": {"name": "quadrants"}})
    assert accepted.status_code == 201, accepted.text

    typo = client.post("/experiments", json={"dataset": {"name": "quadrant"}})
    too_many = client.post(
        "/experiments", json={"dataset": {"name": "quadrants", "train_size": 41}}
    )

    assert typo.status_code == 422
    [error] = typo.json()["detail"]
    assert error["loc"] == ["body", "dataset", "name"]
    assert error["msg"].startswith("unknown dataset; did you mean `quadrants`? Or choose one of")
    assert too_many.status_code == 422
    assert too_many.json()["detail"][0]["msg"] == (
        "Value error, train_size 41 is larger than the 40 training images of quadrants"
    )


# Folders of pictures


def test_a_folder_dataset_is_listed_with_sorted_classes(
    client: TestClient, settings: Settings
) -> None:
    root = settings.resolved_data_dir / "custom" / "shapes"
    gray = np.full((12, 10), 100, np.uint8)
    write_folder(
        root,
        {"train": {"zebra": [gray] * 3, "ant": [gray] * 2}, "test": {"ant": [gray]}},
    )

    listed = {item["name"]: item for item in client.get("/datasets").json()}

    entry = listed["shapes"]
    assert entry["kind"] == "folder" and entry["available"] is True
    assert (entry["shape"], entry["class_names"]) == ([12, 10, 1], ["ant", "zebra"])
    assert (entry["train_size"], entry["test_size"], entry["problem"]) == (5, 1, None)
    assert entry["files"] == [str(root.resolve())]


def test_a_broken_folder_is_listed_unavailable_and_a_spec_naming_it_is_a_422(
    client: TestClient, settings: Settings
) -> None:
    root = settings.resolved_data_dir / "custom" / "half"
    write_folder(root, {"train": {"a": [np.zeros((8, 8), np.uint8)], "b": []}})

    entry = next(item for item in client.get("/datasets").json() if item["name"] == "half")
    response = client.post("/experiments", json={"dataset": {"name": "half"}})

    assert entry["available"] is False
    assert entry["problem"] == f"it has no test/ folder ({root / 'test'})"
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == (
        f"dataset half cannot be used: it has no test/ folder ({root / 'test'})"
    )


# Deleting


def test_delete_removes_an_upload_and_its_files(client: TestClient, settings: Settings) -> None:
    upload(client, "gone", GOOD)

    response = client.delete("/datasets/gone")

    assert response.status_code == 204
    assert "gone" not in {item["name"] for item in client.get("/datasets").json()}
    assert stored(settings.resolved_data_dir) == ["uploads/.deleted/gone.json"]
    assert client.delete("/datasets/gone").json() == {"detail": "Dataset gone not found."}
    assert client.get("/datasets/gone").status_code == 404
    refused = client.post("/experiments", json={"dataset": {"name": "gone"}})
    assert refused.status_code == 422
    [error] = refused.json()["detail"]
    assert error["loc"] == ["body", "dataset", "name"]
    assert error["msg"].startswith("Dataset gone was deleted at ")
    assert error["msg"].endswith("; upload it again to use it.")
    assert upload(client, "gone", GOOD).status_code == 201  # the name is free again
    assert client.post("/experiments", json={"dataset": {"name": "gone"}}).status_code == 201


def test_a_deleted_uploads_facts_still_serve_the_experiments_that_used_it(
    client: TestClient, settings: Settings
) -> None:
    upload(client, "old", npz(**dataset()))
    client.delete("/datasets/old")

    facts = DATASETS["old"]  # what a stored spec naming it is validated and predicted with

    assert (facts.shape, facts.class_names, facts.available(settings.resolved_data_dir)) == (
        (8, 8, 1),
        CORNERS,
        False,
    )
    assert "old" not in list(DATASETS)


def test_built_in_and_folder_datasets_cannot_be_deleted(
    client: TestClient, settings: Settings
) -> None:
    quadrant_folder(settings.resolved_data_dir / "custom" / "pictures", 8, 4)

    built_in = client.delete("/datasets/digits")
    folder = client.delete("/datasets/pictures")

    assert built_in.status_code == 400
    assert built_in.json()["detail"] == (
        "Dataset digits is built into the server; only uploaded datasets can be deleted."
    )
    assert folder.status_code == 400
    assert folder.json()["detail"].startswith("Dataset pictures is a folder of pictures (")
    assert (settings.resolved_data_dir / "custom" / "pictures" / "train").is_dir()


def test_delete_is_a_409_while_an_experiment_uses_it_queued_or_running(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    upload(client, "busy", GOOD)
    body = {"dataset": {"name": "busy"}, "model": {"conv_filters": [8]}}
    first = client.post("/experiments", json=body).json()["id"]
    second = client.post("/experiments", json=body).json()["id"]
    client.post("/experiments", json={"dataset": {"name": "digits"}})  # another dataset's
    trainer.start(first)

    refused = client.delete("/datasets/busy")

    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith("Dataset busy is used by 2 unfinished experiment(s) (")
    assert first in detail and second in detail
    trainer.finish(first, Status.succeeded)
    client.post(f"/experiments/{second}/cancel")
    assert client.delete("/datasets/busy").status_code == 409  # finished ones: force=true
    assert client.delete("/datasets/busy", params={"force": "true"}).status_code == 204


def test_with_auth_only_the_uploader_or_an_admin_may_delete(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, auth=True)
    with TestClient(create_app(settings)) as client:
        engine = get_engine(settings.resolved_database_url)
        with Session(engine) as session:
            tokens = {
                user: create_token(session, user=user, admin=user == "root")[1]
                for user in ("alice", "bob", "root")
            }
            session.commit()

        def as_(user: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {tokens[user]}"}

        client.headers.update(as_("alice"))
        assert upload(client, "mine", GOOD).json()["owner"] == "alice"
        assert upload(client, "also-mine", GOOD).status_code == 201

        refused = client.delete("/datasets/mine", headers=as_("bob"))
        by_owner = client.delete("/datasets/mine")
        by_admin = client.delete("/datasets/also-mine", headers=as_("root"))
        anonymous = httpx.Client(transport=client._transport, base_url=str(client.base_url))

        assert refused.status_code == 403
        assert refused.json()["detail"] == "Only alice or an admin may delete dataset mine."
        assert (by_owner.status_code, by_admin.status_code) == (204, 204)
        assert anonymous.post("/datasets", data={"name": "x"}).status_code == 401


# Through a real worker


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("custom-datasets")
    with running_stack(home, max_dataset_bytes=str(MAX_BYTES)) as up:
        yield up


MAX_BYTES = 2_000_000


SMALL_NET = {
    "model": {"conv_filters": [16, 32], "dense_units": [32]},
    "optimizer": {"name": "adam", "learning_rate": 0.003},
    "training": {"epochs": 3, "batch_size": 32},
}


@pytest.mark.slow
def test_an_uploaded_dataset_trains_to_high_accuracy(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "quadrants.npz"
    x_train, y_train = quadrants(400, 10)
    x_test, y_test = quadrants(100, 11)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    uploaded = stack.convlab("datasets", "upload", "quadrants", str(path))
    assert uploaded.returncode == 0, uploaded.stderr
    assert "8x8x1" in uploaded.stdout

    with stack.client() as client:
        body = {"name": "quadrants", "dataset": {"name": "quadrants"}, **SMALL_NET}
        experiment_id = client.post("/experiments", json=body).json()["id"]
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=240)
        history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]

    assert done["status"] == "succeeded", stack.log_tail()
    assert history[-1]["val_accuracy"] > 0.9, [epoch["val_accuracy"] for epoch in history]
    refused = stack.convlab("datasets", "delete", "quadrants")  # an experiment trained on it
    assert refused.returncode != 0
    assert "Dataset quadrants is used by 1 experiment(s)" in refused.stdout + refused.stderr
    forced = stack.convlab("datasets", "delete", "quadrants", "--force")
    assert forced.returncode == 0, forced.stderr
    with stack.client() as client:  # deleted anyway, what it trained stays usable
        assert client.get(f"/experiments/{experiment_id}/model").status_code == 200
        picture = io.BytesIO()
        Image.fromarray(x_test[0]).save(picture, format="PNG")
        files = {"file": ("0.png", picture.getvalue())}
        predicted = client.post(f"/experiments/{experiment_id}/predict", files=files)
    assert predicted.status_code == 200, predicted.text
    assert predicted.json()["top"] == str(y_test[0])
    listed = stack.convlab("datasets")
    assert "quadrants" not in listed.stdout and "digits" in listed.stdout


@pytest.mark.slow
def test_a_folder_of_pngs_is_listed_and_trains(stack: Stack) -> None:
    data_dir = Path(stack.env["CONVLAB_HOME"]) / "data"
    quadrant_folder(data_dir / "custom" / "corners", 400, 100)

    with stack.client() as client:
        entry = next(d for d in client.get("/datasets").json() if d["name"] == "corners")
        body = {"dataset": {"name": "corners"}, **SMALL_NET}
        experiment_id = client.post("/experiments", json=body).json()["id"]
        done = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=240)
        history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]

    assert (entry["shape"], entry["class_names"]) == ([8, 8, 3], sorted(CORNERS))
    assert (entry["train_size"], entry["test_size"]) == (400, 100)
    assert done["status"] == "succeeded", stack.log_tail()
    assert history[-1]["val_accuracy"] > 0.9, [epoch["val_accuracy"] for epoch in history]


@pytest.mark.slow
def test_a_10_gb_stream_is_refused_after_the_first_megabytes(stack: Stack) -> None:
    """A chunked upload (no Content-Length to refuse up front) of 10 GB of zeros: the server
    answers 413 once the limit's worth has arrived and stops reading; nothing is stored."""
    host, port = stack.url.removeprefix("http://").split(":")
    head = (
        f"POST /datasets HTTP/1.1\r\nHost: {host}:{port}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
    ).encode()
    part = (
        b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nhuge\r\n--b\r\n'
        b'Content-Disposition: form-data; name="file"; filename="huge.npz"\r\n\r\n'
    )
    zeros = b"\0" * 16384
    chunk = f"{len(zeros):x}\r\n".encode() + zeros + b"\r\n"
    sent = 0
    received: list[bytes] = []
    with socket.create_connection((host, int(port)), timeout=60) as sock:

        def read() -> None:  # at once, before the server's close can reset the connection
            with contextlib.suppress(OSError):
                while data := sock.recv(65536):
                    received.append(data)

        reader = threading.Thread(target=read)
        reader.start()
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        while sent < 10 * 2**30 and not received:
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection
                break
            sent += len(zeros)
        with contextlib.suppress(AssertionError):
            wait_for(lambda: b"}" in b"".join(received), timeout=10, what="the whole answer")
        sock.shutdown(socket.SHUT_RDWR)
        reader.join(timeout=10)
    answer = b"".join(received)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"limit of 2,000,000 bytes for a dataset (CONVLAB_MAX_DATASET_BYTES)" in answer
    assert sent < 20 * MAX_BYTES
    data_dir = Path(stack.env["CONVLAB_HOME"]) / "data"
    assert not [path for path in stored(data_dir) if "huge" in path or ".incoming-" in path]
