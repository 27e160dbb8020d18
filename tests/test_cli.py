"""The ``convlab`` command and ``convlab_client`` against a real API and a real worker training
on digits."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest

from convlab_client import TERMINAL, ApiError, Client, Status
from store import tables
from tests.services import BIN, Stack, free_port, running_stack

pytestmark = pytest.mark.slow

DIGITS = ("--set", "dataset.name=digits")
FOLLOWED = ("--preset", "batch_norm", *DIGITS, "--set", "training.epochs=3", "--follow")
CIFAR_MISSING = "Dataset cifar10 is not available: put cifar-10-python.tar.gz"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli"), workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def convlab(
    stack: Stack, *args: str, url: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """The ``convlab`` command against the stack's API (or ``url``)."""
    return subprocess.run(
        [str(BIN / "convlab"), *args],
        env={**stack.env, "CONVLAB_URL": url or stack.url, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    """The error a failed command printed: one line on stderr, no traceback."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr.strip()


def table_rows(text: str) -> dict[str, list[str]]:
    """The body rows of a rich table, by their first cell."""
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


def test_ls_lists_newest_first_with_progress_and_filters(
    stack: Stack, trained: dict[str, Any], failed: subprocess.CompletedProcess[str]
) -> None:
    failed_id = failed.stdout.split()[0]
    everything = convlab(stack, "ls", "--limit", "100")
    assert everything.returncode == 0, everything.stderr
    rows = table_rows(everything.stdout)
    val_accuracy = f"{trained['final']['val_accuracy']:.4f}"
    assert rows[trained["id"]] == ["", "batch_norm", "succeeded", "3/3", val_accuracy]
    assert rows[failed_id] == ["", "base", "failed", "0/50", "-"]
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
    assert csv.stdout.splitlines()[0] == "epoch,loss,accuracy,val_loss,val_accuracy,seconds"
    assert len(csv.stdout.splitlines()) == 4


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


def test_study_submit_follow_ends_with_the_table(stack: Stack, api: httpx.Client) -> None:
    result = convlab(
        stack,
        "study",
        "submit",
        *("--preset", "base", "--preset", "dropout", "--seed", "3"),
        *(*DIGITS, "--set", "training.epochs=1", "--set", "training.batch_size=256"),
        *("--name", "pair", "--follow"),
    )
    assert result.returncode == 0, result.stderr
    study_id, *lines = result.stdout.splitlines()
    study = api.get(f"/studies/{study_id}").json()
    assert study["status"] == "succeeded" and study["variants"] == ["base", "dropout"]
    assert study["name"] == "pair" and study["seeds"] == [3]
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


def test_study_follow_exits_non_zero_when_an_experiment_failed(stack: Stack) -> None:
    result = convlab(
        stack, "study", "submit", "--preset", "base", "--set", "dataset.name=cifar10", "--follow"
    )
    assert result.returncode == 1
    assert "| base | 0 |" in result.stdout
    assert f"failed: {CIFAR_MISSING}" in one_sentence(result)


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


def test_an_unreachable_server_is_one_sentence_naming_the_url(stack: Stack) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = convlab(stack, "ls", url=url)
    assert result.stdout == ""
    sentence = one_sentence(result)
    assert sentence.startswith(f"Could not reach the convlab API at {url} (")
    assert sentence.endswith("Connection refused); CONVLAB_URL sets its address.")
    with Client(url) as client, pytest.raises(ApiError) as unreachable:
        client.history("anything")
    assert unreachable.value.status_code is None


def test_the_token_comes_from_convlab_token(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0, auth="true") as stack:
        anonymous = convlab(stack, "ls")
        assert one_sentence(anonymous).endswith("CONVLAB_TOKEN sets the token this client sends.")
        with_token = convlab(stack, "ls", CONVLAB_TOKEN=stack.token("alice"))
        assert with_token.returncode == 0, with_token.stderr
        assert "val_accuracy" in with_token.stdout


def test_the_clients_statuses_are_the_servers() -> None:
    assert list(get_args(Status)) == [status.value for status in tables.Status]
    assert {status.value for status in set(tables.Status) - set(tables.ACTIVE)} == TERMINAL
