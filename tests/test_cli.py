"""The ``convlab`` command and ``convlab_client`` against a real API and a real worker training
on digits."""

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from convlab_client import TERMINAL, ApiError, Client, Status
from models import status
from tests.services import BIN, Stack, free_port, running_stack, wait_for

pytestmark = pytest.mark.slow

DIGITS = ("--set", "dataset.name=digits")
FOLLOWED = ("--preset", "batch_norm", *DIGITS, "--set", "training.epochs=3", "--follow")
CIFAR_MISSING = "Dataset cifar10 is not available: put cifar-10-python.tar.gz"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli"), workers=1) as running:
        with running.client() as client:  # heard from: no run says that no worker is running
            wait_for(lambda: client.get("/workers").json(), timeout=60, what="the worker")
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def convlab(
    stack: Stack, *args: str, url: str | None = None, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The ``convlab`` command against the stack's API (or ``url``), in ``cwd``."""
    return subprocess.run(
        [str(BIN / "convlab"), *args],
        env={**stack.env, "CONVLAB_URL": url or stack.url, **env},
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
    )


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: one line on stderr, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def usage_error(result: subprocess.CompletedProcess[str]) -> str:
    """The message of a usage error (exit code 2), out of its box, on one line."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    return " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())


def table_rows(text: str) -> dict[str, list[str]]:
    """The body rows of a rich table, by their first cell ("": a wrapped cell's next line)."""
    rows = [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.startswith("│")
    ]
    return {row[0]: row[1:] for row in rows}


@pytest.fixture(scope="module")
def followed(stack: Stack) -> subprocess.CompletedProcess[str]:
    """``convlab submit --follow`` of three batch-norm epochs on digits."""
    return convlab(stack, "submit", *FOLLOWED)


@pytest.fixture(scope="module")
def trained(followed: subprocess.CompletedProcess[str], api: httpx.Client) -> dict[str, Any]:
    experiment: dict[str, Any] = api.get(f"/experiments/{followed.stdout.split()[0]}").json()
    return experiment


@pytest.fixture(scope="module")
def failed(stack: Stack) -> subprocess.CompletedProcess[str]:
    """``convlab submit --follow`` of an experiment on CIFAR-10, which is not on this machine."""
    return convlab(stack, "submit", "--set", "dataset.name=cifar10", "--follow")


def test_submit_follow_prints_every_epoch_then_the_final_table(
    followed: subprocess.CompletedProcess[str], trained: dict[str, Any], api: httpx.Client
) -> None:
    assert followed.returncode == 0, followed.stderr
    assert trained["status"] == "succeeded"
    assert trained["spec"]["preset"] == "batch_norm" and trained["spec"]["model"]["batch_norm"]
    lines = followed.stdout.splitlines()
    assert lines[0] == trained["id"]
    epochs = api.get(f"/experiments/{trained['id']}/history").json()["epochs"]
    assert [epoch["epoch"] for epoch in epochs] == [1, 2, 3]
    for epoch, line in zip(epochs, lines[1:4], strict=True):
        assert line.startswith(f"epoch {epoch['epoch']}/3  loss {epoch['loss']:.4f}  ")
        assert f"val_accuracy {epoch['val_accuracy']:.4f}" in line
    final, best = trained["final"], trained["best"]
    assert "Train accuracy ┃ Test accuracy ┃ Train loss ┃ Test loss ┃ Best epoch" in followed.stdout
    ((first, rest),) = table_rows(followed.stdout).items()
    assert [first, *rest] == [
        *(f"{final[name]:.4f}" for name in ("accuracy", "val_accuracy", "loss", "val_loss")),
        str(best["epoch"]),
    ]
    assert followed.stderr == ""


def test_a_failed_experiment_exits_non_zero_with_its_sentence(
    failed: subprocess.CompletedProcess[str], api: httpx.Client
) -> None:
    experiment_id = failed.stdout.split()[0]
    experiment = api.get(f"/experiments/{experiment_id}").json()
    assert experiment["status"] == "failed"
    assert experiment["error"].startswith(CIFAR_MISSING)
    assert failed.returncode == 1
    assert one_sentence(failed) == f"Experiment {experiment_id} failed: {experiment['error']}"


def test_a_bad_set_is_the_servers_422_naming_the_field(stack: Stack, api: httpx.Client) -> None:
    before = len(api.get("/experiments", params={"limit": 500}).json()["items"])
    result = convlab(stack, "submit", *DIGITS, "--set", "training.epochs=0")
    assert one_sentence(result) == (
        "The server refused the request: "
        "body.training.epochs: Input should be greater than or equal to 1"
    )
    assert result.stdout == ""
    assert len(api.get("/experiments", params={"limit": 500}).json()["items"]) == before


def test_set_values_are_json_when_they_parse_and_text_otherwise(
    stack: Stack, api: httpx.Client
) -> None:
    result = convlab(
        stack,
        "submit",
        *DIGITS,
        *("--set", "model.conv_filters=[16, 32]", "--set", "model.dropout=0.25"),
        *("--set", "model.batch_norm=true", "--set", "training.early_stopping=null"),
        *("--set", "optimizer.name=sgd", "--set", "training.epochs=1"),
        *("--name", "[bold]json or text", "--seed", "7"),
    )
    assert result.returncode == 0, result.stderr
    experiment = api.get(f"/experiments/{result.stdout.strip()}").json()
    spec = experiment["spec"]
    assert spec["model"]["conv_filters"] == [16, 32]
    assert spec["model"]["dropout"] == 0.25 and spec["model"]["batch_norm"] is True
    assert spec["training"]["early_stopping"] is None and spec["training"]["epochs"] == 1
    assert spec["optimizer"]["name"] == "sgd" and spec["seed"] == 7
    assert experiment["name"] == "[bold]json or text"
    listed = table_rows(convlab(stack, "ls").stdout)
    assert listed[experiment["id"]][0] == "[bold]json or text"  # shown as given, not as markup

    nan = convlab(stack, "submit", "--set", "model.dropout=NaN")  # text, not a float
    assert "body.model.dropout: Input should be a valid number" in one_sentence(nan)
    clash = convlab(stack, "submit", "--set", "training=3", "--set", "training.epochs=2")
    assert clash.returncode == 2 and "training was set to a value, not keys" in clash.stderr


@pytest.fixture(scope="module")
def optioned(stack: Stack, api: httpx.Client) -> dict[str, Any]:
    """An experiment submitted with the common options, a --set and tags."""
    result = convlab(
        stack,
        "submit",
        "dropout",
        *("--dataset", "digits", "--epochs", "2", "--batch-size", "64"),
        *("--optimizer", "sgd", "--lr", "0.05", "--seed", "5", "--name", "options"),
        *("--tag", "opt", "--tag", "sgd", "--set", "model.dropout=0.3"),
    )
    assert result.returncode == 0, result.stderr
    experiment: dict[str, Any] = api.get(f"/experiments/{result.stdout.strip()}").json()
    return experiment


@pytest.fixture(scope="module")
def rerun(stack: Stack, api: httpx.Client, optioned: dict[str, Any]) -> dict[str, Any]:
    """``convlab submit --from`` the optioned experiment, with one epoch and another rate."""
    result = convlab(stack, "submit", "--from", optioned["id"], "--epochs", "1", "--lr", "0.1")
    assert result.returncode == 0, result.stderr
    experiment: dict[str, Any] = api.get(f"/experiments/{result.stdout.strip()}").json()
    return experiment


def test_submit_options_set_the_spec_fields_they_name(
    optioned: dict[str, Any], rerun: dict[str, Any]
) -> None:
    spec = optioned["spec"]
    assert spec["preset"] == "dropout" and spec["dataset"]["name"] == "digits"
    assert (spec["training"]["epochs"], spec["training"]["batch_size"]) == (2, 64)
    assert spec["optimizer"] == {"name": "sgd", "learning_rate": 0.05}
    assert spec["seed"] == 5 and spec["model"]["dropout"] == 0.3
    assert optioned["name"] == "options" and optioned["tags"] == ["opt", "sgd"]

    assert rerun["parent_id"] == optioned["id"]
    changed = {"training": spec["training"] | {"epochs": 1}}
    changed["optimizer"] = {"name": "sgd", "learning_rate": 0.1}
    assert rerun["spec"] == spec | changed
    assert rerun["name"] is None and rerun["tags"] == []


def test_a_refused_tag_says_the_experiment_was_submitted(stack: Stack, api: httpx.Client) -> None:
    result = convlab(stack, "submit", *DIGITS, "--epochs", "1", "--tag", "x" * 65)
    experiment_id = result.stdout.strip()
    assert api.get(f"/experiments/{experiment_id}").json()["tags"] == []
    assert one_sentence(result).startswith(
        f"Experiment {experiment_id} was submitted without its tags: "
        "The server refused the request: body.tags.0: "
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--epochs", "3", "--set", "training.epochs=4"),
            "--epochs and --set training.epochs both set training.epochs; give one of them.",
        ),
        (
            ("--set", 'dataset={"name": "mnist"}', "--dataset", "digits"),
            "--dataset and --set dataset both set dataset.name; give one of them.",
        ),
        (("base", "--preset", "dropout"), "PRESET and --preset both set preset; give one of them."),
    ],
)
def test_an_option_and_a_set_of_one_field_is_a_usage_error(
    stack: Stack, api: httpx.Client, args: tuple[str, ...], message: str
) -> None:
    before = len(api.get("/experiments", params={"limit": 500}).json()["items"])
    assert message in usage_error(convlab(stack, "submit", *args))
    assert len(api.get("/experiments", params={"limit": 500}).json()["items"]) == before


@pytest.mark.parametrize(
    ("assignment", "refusal", "hint"),
    [
        (
            "model.conv_filters=32,64",
            "body.model.conv_filters: Input should be a valid list.",
            "model.conv_filters takes a JSON list: write --set model.conv_filters=[32,64].",
        ),
        (
            "model.batch_norm=yes",
            "body.model.batch_norm: Input should be a valid boolean.",
            "model.batch_norm takes JSON true or false: write --set model.batch_norm=true.",
        ),
        (
            "model.batch_norm=Off",
            "body.model.batch_norm: Input should be a valid boolean.",
            "model.batch_norm takes JSON true or false: write --set model.batch_norm=false.",
        ),
    ],
)
def test_a_set_refused_for_its_json_type_hints_at_the_json_form(
    stack: Stack, assignment: str, refusal: str, hint: str
) -> None:
    sentence = f"The server refused the request: {refusal} {hint}"
    experiment = convlab(stack, "submit", *DIGITS, "--set", assignment)
    assert one_sentence(experiment) == sentence and experiment.stdout == ""
    study = convlab(stack, "study", "submit", "--preset", "base", *DIGITS, "--set", assignment)
    assert one_sentence(study) == sentence


def test_ls_lists_newest_first_with_progress_and_filters(
    stack: Stack, trained: dict[str, Any], failed: subprocess.CompletedProcess[str]
) -> None:
    failed_id = failed.stdout.split()[0]
    everything = convlab(stack, "ls", "--limit", "100")
    assert everything.returncode == 0, everything.stderr
    rows = table_rows(everything.stdout)
    val_accuracy = f"{trained['final']['val_accuracy']:.4f}"
    assert rows[trained["id"]] == ["", "batch_norm", "succeeded", "", "3/3", val_accuracy]
    assert rows[failed_id] == ["", "base", "failed", "", "0/50", "-"]
    assert list(rows).index(failed_id) < list(rows).index(trained["id"])

    only_failed = table_rows(convlab(stack, "ls", "--status", "failed").stdout)
    assert failed_id in only_failed and trained["id"] not in only_failed
    assert len(table_rows(convlab(stack, "ls", "--limit", "1").stdout)) == 1
    assert convlab(stack, "ls", "--status", "finished").returncode == 2


def test_show_gives_status_progress_results_and_the_resolved_spec(
    stack: Stack, trained: dict[str, Any]
) -> None:
    result = convlab(stack, "show", trained["id"])
    assert result.returncode == 0, result.stderr
    facts = {
        label: value.strip()
        for label, _, value in (line.partition("  ") for line in result.stdout.splitlines())
    }
    assert facts["status"] == "succeeded (attempts 1)"
    assert facts["progress"] == "epoch 3/3"
    assert facts["error"] == "-"
    assert f"val_accuracy {trained['final']['val_accuracy']:.4f}" in facts["final"]
    assert facts["best"].startswith(f"epoch {trained['best']['epoch']}  val_loss ")
    assert facts["spec model.batch_norm"] == "true"
    assert facts["spec model.conv_filters"] == "[32, 64, 128]"
    assert facts["spec dataset.name"] == '"digits"'
    assert one_sentence(convlab(stack, "show", "nope")) == "Experiment nope not found."


def test_history_as_a_table_and_as_the_servers_csv(
    stack: Stack, trained: dict[str, Any], api: httpx.Client
) -> None:
    path = f"/experiments/{trained['id']}/history"
    epochs = api.get(path).json()["epochs"]
    table = table_rows(convlab(stack, "history", trained["id"]).stdout)
    assert [row[3] for row in table.values()] == [f"{e['val_accuracy']:.4f}" for e in epochs]
    assert list(table) == ["1", "2", "3"]
    csv = convlab(stack, "history", trained["id"], "--csv")
    assert csv.returncode == 0, csv.stderr
    assert csv.stdout == api.get(path, params={"format": "csv"}).text
    assert csv.stdout.splitlines()[0] == (
        "epoch,loss,accuracy,val_loss,val_accuracy,seconds,learning_rate"
    )
    assert len(csv.stdout.splitlines()) == 4


def test_delete_removes_an_ended_experiment(
    stack: Stack, api: httpx.Client, rerun: dict[str, Any]
) -> None:
    with Client(stack.url) as client:
        assert client.wait(rerun["id"], poll_seconds=0.2)["status"] == "succeeded"
    result = convlab(stack, "delete", rerun["id"])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{rerun['id']} deleted\n"
    assert api.get(f"/experiments/{rerun['id']}").status_code == 404
    assert one_sentence(convlab(stack, "delete", rerun["id"])) == (
        f"Experiment {rerun['id']} not found."
    )


def test_model_saves_the_servers_keras_file(
    stack: Stack, trained: dict[str, Any], api: httpx.Client, tmp_path: Path
) -> None:
    path = f"/experiments/{trained['id']}/model"
    default = convlab(stack, "model", trained["id"], cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    name = f"convlab-{trained['id']}-epoch3.keras"
    assert default.stdout == f"{name}\n"
    assert (tmp_path / name).read_bytes() == api.get(path).content
    best = tmp_path / "best.keras"
    chosen = convlab(stack, "model", trained["id"], "--weights", "best", "-o", str(best))
    assert chosen.stdout == f"{best}\n"
    assert best.read_bytes() == api.get(path, params={"weights": "best"}).content


def test_plot_saves_the_curves_as_png_or_svg(
    stack: Stack, trained: dict[str, Any], tmp_path: Path
) -> None:
    default = convlab(stack, "plot", trained["id"], cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert default.stdout == f"convlab-{trained['id']}.png\n"
    assert (tmp_path / f"convlab-{trained['id']}.png").read_bytes().startswith(b"\x89PNG")
    svg = tmp_path / "curves.svg"
    assert convlab(stack, "plot", trained["id"], "-o", str(svg)).returncode == 0
    assert "<svg" in svg.read_text()
    # a relative path: rich wraps the box's text at the terminal's width, even inside a word
    jpeg = usage_error(convlab(stack, "plot", trained["id"], "-o", "c.jpg", cwd=tmp_path))
    assert "Invalid value: c.jpg must end in .png or .svg." in jpeg
    assert not (tmp_path / "c.jpg").exists()


@pytest.fixture(scope="module")
def digit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG of scikit-learn's first digit (a 0), light strokes on dark."""
    from PIL import Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[0] * 255 / 16).astype("uint8")
    path = tmp_path_factory.mktemp("digit") / "zero.png"
    Image.fromarray(pixels).save(path)
    return path


def test_predict_prints_the_most_probable_classes(
    stack: Stack, trained: dict[str, Any], api: httpx.Client, digit: Path, tmp_path: Path
) -> None:
    result = convlab(stack, "predict", trained["id"], str(digit), "--top", "2")
    assert result.returncode == 0, result.stderr
    files = {"file": ("zero.png", digit.read_bytes())}
    answer = api.post(f"/experiments/{trained['id']}/predict", files=files).json()
    ranked = answer["probabilities"]
    assert table_rows(result.stdout) == {
        item["label"]: [f"{item['probability']:.4f}"] for item in ranked[:2]
    }
    assert result.stdout.endswith(f"\n{answer['top']}, by the weights of epoch 3\n")

    text = tmp_path / "not-a-picture.png"
    text.write_text("hello")
    refused = one_sentence(convlab(stack, "predict", trained["id"], str(text)))
    assert refused.startswith("The server refused the request: body.file: ")


def test_cancel_stops_an_experiment_and_refuses_a_finished_one(
    stack: Stack, api: httpx.Client
) -> None:
    long = ("--set", "training.epochs=1000", "--set", "training.batch_size=16")
    experiment_id = convlab(stack, "submit", *DIGITS, *long).stdout.strip()
    result = convlab(stack, "cancel", experiment_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout in (
        f"{experiment_id} cancelled\n",
        f"{experiment_id} running (stops at its next batch)\n",
    )
    with Client(stack.url) as client:
        ended = client.wait(experiment_id, poll_seconds=0.2)
    assert ended["status"] == "cancelled" and ended["epochs_done"] < 1000
    again = one_sentence(convlab(stack, "cancel", experiment_id))
    assert again == (
        f"Experiment {experiment_id} is already cancelled; "
        "only queued, running or paused experiments can be cancelled."
    )


@pytest.fixture(scope="module")
def pair(stack: Stack) -> subprocess.CompletedProcess[str]:
    """``convlab study submit --follow`` of base and dropout, one epoch each on digits, set
    by ``submit``'s shortcut options."""
    return convlab(
        stack,
        "study",
        "submit",
        *("--preset", "base", "--preset", "dropout", "--seed", "3"),
        *("--dataset", "digits", "--epochs", "1", "--batch-size", "256"),
        *("--optimizer", "adam", "--lr", "0.002", "--name", "pair", "--follow"),
    )


def test_study_submit_follow_ends_with_the_table(
    pair: subprocess.CompletedProcess[str], stack: Stack, api: httpx.Client
) -> None:
    result = pair
    assert result.returncode == 0, result.stderr
    study_id, *lines = result.stdout.splitlines()
    study = api.get(f"/studies/{study_id}").json()
    assert study["status"] == "succeeded" and study["variants"] == ["base", "dropout"]
    assert study["name"] == "pair" and study["seeds"] == [3]
    for experiment_id in study["experiment_ids"]:
        spec = api.get(f"/experiments/{experiment_id}").json()["spec"]
        assert (spec["dataset"]["name"], spec["training"]["epochs"]) == ("digits", 1)
        assert spec["training"]["batch_size"] == 256
        assert spec["optimizer"] == spec["optimizer"] | {"name": "adam", "learning_rate": 0.002}
    assert "2/2 experiments ended, 0 failed" in lines
    markdown = api.get(f"/studies/{study_id}/table", params={"format": "markdown"}).text
    assert result.stdout.endswith(markdown)
    assert [line.split(" | ")[:2] for line in markdown.splitlines()[2:]] == [
        ["| base", "1"],
        ["| dropout", "1"],
    ]
    for format in ("markdown", "csv"):
        table = convlab(stack, "study", "table", study_id, "--format", format)
        assert table.returncode == 0, table.stderr
        assert table.stdout == api.get(f"/studies/{study_id}/table", params={"format": format}).text
    as_json = convlab(stack, "study", "table", study_id, "--format", "json")
    assert '"variant": "dropout"' in as_json.stdout


def test_study_show_and_ls_give_status_progress_and_the_table(
    stack: Stack, pair: subprocess.CompletedProcess[str], api: httpx.Client
) -> None:
    study_id = pair.stdout.split()[0]
    shown = convlab(stack, "study", "show", study_id)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()[:9]
    facts = {label: value.strip() for label, value in (line.split(None, 1) for line in lines)}
    assert facts["status"] == "succeeded" and facts["kind"] == "presets"
    assert facts["progress"] == "2/2 experiments ended, 0 failed, 0 running"
    assert facts["variants"] == "base, dropout" and facts["seeds"] == "3"
    assert shown.stdout.endswith(
        api.get(f"/studies/{study_id}/table", params={"format": "markdown"}).text
    )
    listed = convlab(stack, "study", "ls")
    assert listed.returncode == 0, listed.stderr
    assert table_rows(listed.stdout)[study_id][:4] == ["pair", "presets", "succeeded", "2/2"]


def test_study_cancel_cancels_what_has_not_ended(stack: Stack, api: httpx.Client) -> None:
    long = ("--set", "training.epochs=1000", "--set", "training.batch_size=16")
    submitted = convlab(stack, "study", "submit", "--preset", "base", *DIGITS, *long)
    study_id = submitted.stdout.strip()
    result = convlab(stack, "study", "cancel", study_id)
    assert result.returncode == 0, result.stderr
    assert result.stdout in (
        f"{study_id} cancelled\n",
        f"{study_id} running (running experiments stop at their next batch)\n",
    )
    with Client(stack.url) as client:
        assert list(client.watch_study(study_id, poll_seconds=0.2))[-1]["status"] == "cancelled"


def test_study_follow_exits_non_zero_when_an_experiment_failed(stack: Stack) -> None:
    result = convlab(
        stack, "study", "submit", "--preset", "base", "--set", "dataset.name=cifar10", "--follow"
    )
    assert result.returncode == 1
    assert "| base | 0 |" in result.stdout
    assert f"failed: {CIFAR_MISSING}" in one_sentence(result)


def test_presets_and_datasets_list_the_catalogue(stack: Stack, api: httpx.Client) -> None:
    presets = table_rows(convlab(stack, "presets").stdout)
    assert {name: row[0] for name, row in presets.items()} == {
        preset["name"]: preset["description"] for preset in api.get("/presets").json()
    }
    datasets = table_rows(convlab(stack, "datasets").stdout)
    assert datasets["digits"][:5] == ["yes", "10", "8x8x1", "1437", "360"]
    assert datasets["cifar10"][0] == "no"  # not on this machine
    assert {name for name in datasets if name} == {
        item["name"] for item in api.get("/datasets").json()
    }


@pytest.mark.parametrize(
    ("args", "sentence"),
    [
        (("delete", "nope"), "Experiment nope not found."),
        (("model", "nope"), "Experiment nope not found."),
        (("plot", "nope", "-o", "curves.svg"), "Experiment nope not found."),
        (("predict", "nope", "DIGIT"), "Experiment nope not found."),
        (("study", "show", "nope"), "Study nope not found."),
        (("study", "cancel", "nope"), "Study nope not found."),
    ],
)
def test_an_unknown_id_is_one_sentence(
    stack: Stack, digit: Path, tmp_path: Path, args: tuple[str, ...], sentence: str
) -> None:
    args = tuple(str(digit) if arg == "DIGIT" else arg for arg in args)
    result = convlab(stack, *args, cwd=tmp_path)
    assert result.returncode == 1 and one_sentence(result) == sentence
    assert result.stdout == "" and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [("presets",), ("datasets",), ("study", "ls")])
def test_listings_on_an_unreachable_server_are_one_sentence(
    stack: Stack, command: tuple[str, ...]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    sentence = one_sentence(convlab(stack, *command, url=url))
    assert sentence.startswith(f"Could not reach the convlab API at {url} (")


def test_the_python_client_reads_what_the_api_serves(
    stack: Stack, trained: dict[str, Any], api: httpx.Client
) -> None:
    path = f"/experiments/{trained['id']}/history"
    with Client(stack.url) as client:
        history = client.history(trained["id"])
        assert history == api.get(path).json()["epochs"]
        assert client.history(trained["id"], since=2) == history[2:]
        assert list(client.follow(trained["id"])) == history
        assert client.experiment(trained["id"]) == trained
        everything = [item["id"] for item in client.experiments(limit=None, page_size=1)]
        one_page = api.get("/experiments", params={"limit": 500}).json()["items"]
        assert everything == [item["id"] for item in one_page] and len(everything) > 2
        assert [item["id"] for item in client.experiments(limit=2, page_size=1)] == everything[:2]
        assert client.experiments(status="succeeded", preset="batch_norm") == [
            client.experiment(trained["id"])
        ]
        with pytest.raises(ApiError) as missing:
            client.experiment("nope")
        assert (missing.value.status_code, str(missing.value)) == (
            404,
            "Experiment nope not found.",
        )
        with pytest.raises(ApiError) as invalid:
            client.submit({"training": {"epochs": 0, "batch_size": "x"}})
        assert invalid.value.status_code == 422
        assert "body.training.epochs: Input should be greater than or equal to 1; " in str(
            invalid.value
        )


def test_history_frame_says_it_needs_pandas(
    stack: Stack, trained: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # as on this machine: not installed
    with Client(stack.url) as client, pytest.raises(ImportError) as missing:
        client.history_frame(trained["id"])
    assert str(missing.value) == (
        "Client.history_frame needs pandas, which is not installed: "
        "pip install pandas, or use Client.history for a list of dicts."
    )


def test_a_queued_run_without_a_worker_says_so_and_follow_follows_again(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0) as stack:
        submitted = convlab(stack, "submit", "--dataset", "digits", "--epochs", "2")
        experiment_id = submitted.stdout.strip()
        waiting = "#1, no worker is running: start one with make up"
        listed = convlab(stack, "ls")
        assert listed.returncode == 0, listed.stderr
        assert "no worker is running" in " ".join(table_rows(listed.stdout)[experiment_id])
        shown = convlab(stack, "show", experiment_id).stdout.splitlines()
        assert [line.split(None, 1)[1].strip() for line in shown if line.startswith("queue ")] == [
            waiting
        ]
        followed = subprocess.Popen(
            [str(BIN / "convlab"), "submit", "--from", experiment_id, "--follow"],
            env={**stack.env, "CONVLAB_URL": stack.url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert followed.stdout is not None
        child_id = followed.stdout.readline().strip()
        assert followed.stdout.readline() == f"queued {waiting.replace('#1', '#2')}\n"
        followed.send_signal(signal.SIGINT)  # Ctrl-C
        _, stopped = followed.communicate(timeout=30)
        assert followed.returncode == 130
        assert stopped == (
            f"Stopped following; experiment {child_id} keeps running on the server; "
            f"`convlab follow {child_id}` follows it again.\n"
        )
        stack.start_worker()
        again = convlab(stack, "follow", child_id)
        assert again.returncode == 0, again.stderr
        epochs = [line.split("  ")[0] for line in again.stdout.splitlines() if "  loss " in line]
        assert epochs == ["epoch 1/2", "epoch 2/2"]
        assert "Test accuracy" in again.stdout  # the final table
        assert (
            one_sentence(convlab(stack, "follow", "0" * 32)) == f"Experiment {'0' * 32} not found."
        )


def test_an_unreachable_server_is_one_sentence_naming_the_url(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = convlab(stack, "ls", url=url)
    assert result.stdout == ""
    sentence = one_sentence(result)
    assert sentence.startswith(f"Could not reach the convlab API at {url} (")
    assert sentence.endswith(
        "Connection refused); CONVLAB_URL (or CONVLAB_PORT, on this machine) sets its address."
    )
    with Client(url) as client, pytest.raises(ApiError) as unreachable:
        client.history("anything")
    assert unreachable.value.status_code is None


def test_without_convlab_url_the_clients_find_the_server_at_convlab_port(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One port setting for the server and its clients: ``CONVLAB_PORT``."""
    env = {key: value for key, value in stack.env.items() if key != "CONVLAB_URL"}
    port, elsewhere = stack.url.rsplit(":", 1)[1], str(free_port())

    def presets(port: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "convlab"), "presets"],
            env={**env, "CONVLAB_PORT": port},
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = presets(port)
    assert listed.returncode == 0, listed.stderr
    assert "batch_norm" in listed.stdout
    refused = one_sentence(presets(elsewhere))
    assert refused.startswith(f"Could not reach the convlab API at http://127.0.0.1:{elsewhere} (")
    monkeypatch.delenv("CONVLAB_URL", raising=False)
    monkeypatch.setenv("CONVLAB_PORT", port)
    with Client() as client:
        assert client.url == stack.url
        assert "batch_norm" in {preset["name"] for preset in client.presets()}
    monkeypatch.setenv("CONVLAB_URL", f"http://127.0.0.1:{elsewhere}")
    with Client() as client:
        assert client.url == f"http://127.0.0.1:{elsewhere}"  # CONVLAB_URL comes first


def test_the_token_comes_from_convlab_token(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0, auth="true") as stack:
        anonymous = convlab(stack, "ls")
        assert one_sentence(anonymous).endswith("CONVLAB_TOKEN sets the token this client sends.")
        with_token = convlab(stack, "ls", CONVLAB_TOKEN=stack.token("alice"))
        assert with_token.returncode == 0, with_token.stderr
        assert "val_accuracy" in with_token.stdout


def test_the_clients_statuses_are_the_servers() -> None:
    assert list(get_args(Status)) == [each.value for each in status.Status]
    assert {each.value for each in set(status.Status) - set(status.ACTIVE)} == TERMINAL
