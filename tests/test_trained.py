"""A finished run's model put to use, through a real API and worker: download the .keras file
and load it, ask for predictions on digit pictures."""

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from tests.services import Stack, running_stack, wait_for_status

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # Trained from a device table (as on a GPU): what is saved is still the picture model.
    home = tmp_path_factory.mktemp("trained")
    with running_stack(home, train_data_on_device="on") as running:
        yield running


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict[str, Any]:
    body = {"dataset": {"name": "digits"}, "training": {"epochs": 4, "batch_size": 32}}
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=body).json()["id"]
        experiment = wait_for_status(client, experiment_id, TERMINAL, timeout=180)
    assert experiment["status"] == "succeeded", stack.log_tail()
    return experiment


def _picture(pixels: np.ndarray, fmt: str) -> bytes:
    """A digit (0..16 ink) as an 8-bit greyscale picture."""
    buffer = io.BytesIO()
    Image.fromarray((pixels * 255 / 16).astype(np.uint8), mode="L").save(buffer, format=fmt)
    return buffer.getvalue()


def test_the_model_downloads_as_a_keras_file_that_loads(
    stack: Stack, trained: dict[str, Any], tmp_path: Any
) -> None:
    import keras

    with stack.client() as client:
        response = client.get(f"/experiments/{trained['id']}/model")
    assert response.status_code == 200
    disposition = response.headers["content-disposition"]
    assert disposition == f'attachment; filename="convlab-{trained["id"]}-epoch4.keras"'
    path = tmp_path / "model.keras"
    path.write_bytes(response.content)
    model = keras.models.load_model(path, safe_mode=True)
    assert model.input_shape == (None, 8, 8, 1)
    assert model.output_shape == (None, 10)


def test_predictions_name_the_digit_in_most_pictures(stack: Stack, trained: dict[str, Any]) -> None:
    digits = load_digits()
    right = 0
    with stack.client() as client:
        for index in range(20):
            fmt = "PNG" if index % 2 else "JPEG"
            upload = {"file": (f"digit.{fmt.lower()}", _picture(digits.images[index], fmt))}
            response = client.post(
                f"/experiments/{trained['id']}/predict", files=upload, timeout=120
            )
            assert response.status_code == 200, response.text
            prediction = response.json()
            probabilities = [item["probability"] for item in prediction["probabilities"]]
            assert probabilities == sorted(probabilities, reverse=True)
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
            assert {item["label"] for item in prediction["probabilities"]} == set("0123456789")
            assert prediction["epoch"] == 4
            right += prediction["top"] == str(digits.target[index])
    assert right >= 16, f"{right}/20 pictures named right"


def test_what_cannot_be_predicted_says_why(stack: Stack, trained: dict[str, Any]) -> None:
    url = f"/experiments/{trained['id']}/predict"
    digit = load_digits().images[0]
    with stack.client() as client:
        text = client.post(url, files={"file": ("notes.txt", b"not a picture")})
        assert text.status_code == 422
        assert text.json()["detail"][0]["loc"] == ["body", "file"]
        assert "is not a PNG or JPEG picture" in text.json()["detail"][0]["msg"]
        gif = io.BytesIO()
        Image.fromarray(digit.astype(np.uint8)).save(gif, format="GIF")
        refused = client.post(url, files={"file": ("digit.gif", gif.getvalue())})
        assert "such as GIF" in refused.json()["detail"][0]["msg"]
        assert client.post(url).status_code == 422  # no file at all

        long_run = {"dataset": {"name": "digits"}, "training": {"epochs": 100}}
        blocker = client.post("/experiments", json=long_run).json()["id"]
        never_ran = client.post("/experiments", json=long_run).json()["id"]
        client.post(f"/experiments/{never_ran}/cancel")
        busy = client.get(f"/experiments/{blocker}/model")
        assert busy.status_code == 409
        assert busy.json()["detail"].endswith("its model can be had once it has finished.")
        picture = {"file": ("digit.png", _picture(digit, "PNG"))}
        assert client.post(f"/experiments/{blocker}/predict", files=picture).status_code == 409
        untrained = client.post(f"/experiments/{never_ran}/predict", files=picture)
        assert untrained.status_code == 404
        assert untrained.json()["detail"].endswith("has no trained model: it finished no epoch.")
        client.post(f"/experiments/{blocker}/cancel")
