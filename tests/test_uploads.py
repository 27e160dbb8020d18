"""Uploads to predict under abuse, through a real API and worker: pixel bombs are refused from
their header, only PNG and JPEG reach a decoder, and one user's predictions are capped."""

import io
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.pictures import blank_png, decode_seconds, peak_rss_kb
from tests.services import Stack, running_stack, wait_for_status

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("uploads"), max_predictions_per_user="1") as up:
        yield up


@pytest.fixture(scope="module")
def predict_url(stack: Stack) -> str:
    body = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 32}}
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=body).json()["id"]
        experiment = wait_for_status(client, experiment_id, {"succeeded", "failed"}, timeout=180)
    assert experiment["status"] == "succeeded", stack.log_tail()
    return f"/experiments/{experiment_id}/predict"


def _saved(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _digit() -> Image.Image:
    """The first of scikit-learn's digits (a 0), light on dark as the dataset draws it."""
    return Image.fromarray((load_digits().images[0] * 255 / 16).astype(np.uint8), mode="L")


def test_predictions_over_the_cap_are_429_with_retry_after(stack: Stack, predict_url: str) -> None:
    picture = _saved(_digit(), "PNG")
    start = threading.Barrier(6)
    answers: list[httpx.Response] = []

    def ask() -> None:
        with stack.client() as client:
            start.wait()
            answers.append(client.post(predict_url, files={"file": ("0.png", picture)}))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    statuses = sorted(answer.status_code for answer in answers)
    assert len(statuses) == 6 and set(statuses) == {200, 429}, statuses
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "CONVLAB_MAX_PREDICTIONS_PER_USER" in refused.json()["detail"]
    with stack.client() as client:  # the slot was given back
        assert client.post(predict_url, files={"file": ("0.png", picture)}).status_code == 200


def test_a_small_png_still_predicts(stack: Stack, predict_url: str) -> None:
    with stack.client() as client:
        response = client.post(predict_url, files={"file": ("0.png", _saved(_digit(), "PNG"))})
    assert response.status_code == 200, response.text
    assert len(response.json()["probabilities"]) == 10


def test_a_pixel_bomb_is_refused_from_its_header(stack: Stack, predict_url: str) -> None:
    bomb = blank_png(12000, 12000)
    assert len(bomb) < 100_000
    with stack.client() as client:
        client.post(predict_url, files={"file": ("0.png", _saved(_digit(), "PNG"))})  # warm
        before = peak_rss_kb(stack.api.pid)
        started = time.monotonic()
        response = client.post(predict_url, files={"file": ("bomb.png", bomb)})
        took = time.monotonic() - started
        after = peak_rss_kb(stack.api.pid)
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "The picture is 12000x12000 (144,000,000 pixels); this server decodes at most 262,144 "
        "(CONVLAB_MAX_UPLOAD_PIXELS). Scale it down first: the model sees 8x8."
    )
    decoding = decode_seconds(bomb)
    assert took < decoding / 2, f"a refusal took {took:.2f} s, decoding the bomb {decoding:.2f} s"
    assert after - before < 32_000, f"the API's peak memory grew by {after - before} KB"


def test_a_bomb_over_pillows_own_limit_is_a_413_too(stack: Stack, predict_url: str) -> None:
    with stack.client() as client:
        response = client.post(predict_url, files={"file": ("bomb.png", blank_png(20000, 20000))})
    assert response.status_code == 413, response.text
    detail = response.json()["detail"]
    assert detail.startswith("The picture has over ") and "CONVLAB_MAX_UPLOAD_PIXELS" in detail


@pytest.mark.parametrize(
    ("name", "upload"),
    [
        ("0.gif", lambda: _saved(_digit(), "GIF")),
        ("0.bmp", lambda: _saved(_digit(), "BMP")),
        ("0.webp", lambda: _saved(_digit(), "WEBP")),
        ("notes.txt", lambda: b"not a picture"),
        ("empty.png", lambda: b""),
        ("cut.png", lambda: _saved(_digit(), "PNG")[:60]),
        ("cut.jpg", lambda: _saved(_digit(), "JPEG")[:300]),
    ],
)
def test_what_is_not_a_png_or_jpeg_is_a_422_that_says_so(
    stack: Stack, predict_url: str, name: str, upload: Callable[[], bytes]
) -> None:
    with stack.client() as client:
        response = client.post(predict_url, files={"file": (name, upload())})
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "file"]
    assert error["msg"].startswith("The upload is not a PNG or JPEG picture this server can read")


def test_the_schema_documents_the_refusals(stack: Stack) -> None:
    with stack.client() as client:
        schema = client.get("/openapi.json").json()
    responses = schema["paths"]["/experiments/{experiment_id}/predict"]["post"]["responses"]
    assert "CONVLAB_MAX_UPLOAD_PIXELS" in responses["413"]["description"]
    assert "Retry-After" in responses["429"]["headers"]
    assert "422" in responses
