"""Dataset uploads are bounded per user: they count toward the storage quota with the runs'
weights, a user keeps at most 10 of them, and checking one runs
apart from the request threads. Through a real API on SQLite with auth on."""

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.limits import MAX_UPLOADS_PER_USER
from api.main import create_app
from core.config import Settings
from store.db import Session, get_engine
from store.tokens import create_token
from tests.services import Stack, stack_on
from tests.test_custom_datasets import dataset, npz, stored, upload

pytestmark = pytest.mark.slow

QUOTA_MB = 0.1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("upload-quota")
    with stack_on("sqlite", home, auth="true", storage_quota_mb=str(QUOTA_MB)) as running:
        yield running


def _client(stack: Stack, user: str) -> httpx.Client:
    token = stack.token(user)
    return httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {token}"})


def _incoming(data_dir: Path) -> list[str]:
    """Files of uploads still being checked, or left behind by one that failed."""
    return [name for name in stored(data_dir) if ".incoming-" in name]


def test_a_user_keeps_at_most_the_cap_of_uploads_and_others_are_not_held_back(
    stack: Stack,
) -> None:
    data_dir = Path(stack.env["CONVLAB_HOME"]) / "data"
    small = npz(**dataset())
    with _client(stack, "alice") as alice, _client(stack, "carol") as carol:
        names = [f"alice-{n}" for n in range(MAX_UPLOADS_PER_USER)]
        for name in names:
            assert upload(alice, name, small).status_code == 201
        refused = upload(alice, "alice-more", small)
        assert refused.status_code == 403, refused.text
        assert refused.json()["detail"] == (
            f"alice keeps 10 dataset uploads ({', '.join(names[:5])}, ...); the cap is 10. "
            "Delete one you no longer need (convlab datasets delete NAME) to upload another."
        )
        assert "alice-more" not in [d["name"] for d in alice.get("/datasets").json()]
        assert upload(carol, "carol-one", small).status_code == 201
        assert alice.delete("/datasets/alice-1").status_code == 204
        assert upload(alice, "alice-more", small).status_code == 201
    assert _incoming(data_dir) == []


def test_uploads_count_toward_the_quota_and_one_that_would_pass_it_stores_nothing(
    stack: Stack,
) -> None:
    data_dir = Path(stack.env["CONVLAB_HOME"]) / "data"
    first = npz(**dataset(n_train=900, n_test=100))  # about 70 kB: 8x8 pictures and labels
    with _client(stack, "bob") as bob:
        assert upload(bob, "bob-big", first).status_code == 201
        (line,) = bob.get("/usage").json()
        assert (line["uploads"], line["upload_bytes"]) == (1, len(first))
        assert line["quota_bytes"] == int(QUOTA_MB * 2**20)
        listed = sorted(stored(data_dir))
        refused = upload(bob, "bob-bigger", first)
        assert refused.status_code == 403, refused.text
        detail = refused.json()["detail"]
        assert detail.startswith(
            f"bob's runs hold 0.0 MB of weights and their dataset uploads "
            f"{len(first) / 2**20:.1f} MB; this upload would add {len(first) / 2**20:.1f} MB; "
            "the storage quota is 0.1 MB."
        ), detail
        assert sorted(stored(data_dir)) == listed  # nothing written, nothing left behind
        assert bob.delete("/datasets/bob-big").status_code == 204
        assert upload(bob, "bob-bigger", first).status_code == 201


def test_a_submission_is_refused_when_uploads_fill_the_quota(tmp_path: Path) -> None:
    """An upload stored under one quota, then the server restarted with a smaller one."""
    body = npz(**dataset(n_train=900, n_test=100))
    settings = Settings(home=tmp_path, auth=True)
    with TestClient(create_app(settings)) as client:
        with Session(get_engine(settings.resolved_database_url)) as session:
            token = create_token(session, user="dora", admin=False)[1]
            session.commit()
        client.headers["Authorization"] = f"Bearer {token}"
        assert upload(client, "dora-big", body).status_code == 201
    smaller = settings.model_copy(update={"storage_quota_mb": len(body) / 2**20})
    with TestClient(create_app(smaller), headers={"Authorization": f"Bearer {token}"}) as client:
        spec = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
        refused = client.post("/experiments", json=spec)
        assert refused.status_code == 403, refused.text
        assert "their dataset uploads 0.1 MB" in refused.json()["detail"]
        assert upload(client, "dora-small", npz(**dataset())).status_code == 403


@pytest.fixture(scope="module")
def one_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server with one thread for its sync routes."""
    with stack_on("sqlite", tmp_path_factory.mktemp("one-thread"), api_threads="1") as running:
        yield running


def _slow_to_check() -> bytes:
    """A small file whose arrays unpack to 150 MB: checking it reads them all through."""
    pictures = np.zeros((48_000, 32, 32, 3), np.uint8)
    labels = np.arange(48_000) % 2
    return npz(
        compressed=True,
        **dataset(x_train=pictures, y_train=labels, x_test=pictures[:100], y_test=labels[:100]),
    )


def test_checking_uploads_leaves_the_request_threads_free(one_thread: Stack) -> None:
    body, data_dir = _slow_to_check(), Path(one_thread.env["CONVLAB_HOME"]) / "data"
    answered: list[tuple[str, float]] = []

    def send(name: str) -> None:
        with one_thread.client() as client:
            response = upload(client, name, body)
        assert response.status_code == 201, response.text
        answered.append((name, time.monotonic()))

    senders = [threading.Thread(target=send, args=(f"slow-{n}",)) for n in range(4)]
    for sender in senders:
        sender.start()
    while not _incoming(data_dir):  # an upload is being copied and checked
        time.sleep(0.005)
    with one_thread.client() as client:
        assert client.get("/experiments").status_code == 200
    read_at = time.monotonic()
    for sender in senders:
        sender.join(timeout=120)
    assert len(answered) == 4
    assert read_at < min(at for _, at in answered), "the read waited for an upload's check"
