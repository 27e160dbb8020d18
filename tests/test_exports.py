"""TensorBoard exports of a study that really trained (digits, two presets, two epochs), read
back with TensorBoard's own event reader and served by TensorBoard itself; who may read them;
the ``convlab export tensorboard`` command."""

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from models.epochs import EpochMetrics
from models.presets import resolve
from models.status import Status
from tests.services import BIN, ROOT, Stack, free_port, running_stack, stop_process, wait_for
from tests.services import wait_for_status as wait_for_experiment
from views.tensorboard import Run, archive, flat_spec

pytestmark = pytest.mark.slow

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
STUDY = {
    "name": "two presets for TensorBoard",
    "presets": ["base", "dropout"],
    "seeds": [0],
    "dataset": {"name": "digits"},
    "training": {"epochs": 2, "batch_size": 64},
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("exports")
    with running_stack(home, auth="true", reads_owner_only="true") as running:
        yield running


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {user: stack.token(user) for user in ("alice", "bob")} | {
        "root": stack.token("root", "--admin")
    }


@pytest.fixture
def alice(stack: Stack, tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with stack.client(tokens["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def study(stack: Stack, tokens: dict[str, str]) -> dict[str, Any]:
    """Alice's study, trained; with its experiments and their histories."""
    with stack.client(tokens["alice"]) as client:
        created = client.post("/studies", json=STUDY)
        assert created.status_code == 201, created.text
        body: dict[str, Any] = created.json()
        experiments = []
        for experiment_id in body["experiment_ids"]:
            ended = wait_for_experiment(client, experiment_id, {"succeeded", "failed"})
            assert ended["status"] == "succeeded", stack.log_tail()
            history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
            experiments.append({**ended, "history": history})
    return {**body, "experiments": experiments}


def _extract(content: bytes, into: Path) -> Path:
    """The archive's one folder, extracted under ``into``."""
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as archive:
        (top,) = {Path(name).parts[0] for name in archive.getnames()}
        archive.extractall(into, filter="data")
    return into / top


def _run_dir(folder: Path, experiment_id: str) -> Path:
    (run,) = [path for path in folder.iterdir() if path.name.endswith(experiment_id[:8])]
    return run


def _accumulator(path: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(path), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def _scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Each scalar tag's (step, value) pairs, as TensorBoard's event reader reads them."""
    from tensorboard.util.tensor_util import make_ndarray

    accumulator = _accumulator(path)
    return {
        tag: [(event.step, make_ndarray(event.tensor_proto).item()) for event in events]
        for tag in accumulator.Tags()["tensors"]
        if not tag.startswith("_hparams_/")
        if (events := accumulator.Tensors(tag))
    }


def _expected_scalars(history: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """The history's metrics as float32 (what TensorFlow writes and TensorBoard shows)."""
    return {
        tag: pairs
        for tag in SCALARS
        if (
            pairs := [
                (row["epoch"], float(np.float32(row[tag])))
                for row in history
                if row.get(tag) is not None
            ]
        )
    }


def _hparams(path: Path) -> dict[str, Any]:
    """The HParams plugin's data in a run (or the root) directory, parsed by its own parsers."""
    from tensorboard.plugins.hparams import metadata

    content = _accumulator(path).PluginTagToContent(metadata.PLUGIN_NAME)
    parsers = {
        metadata.EXPERIMENT_TAG: metadata.parse_experiment_plugin_data,
        metadata.SESSION_START_INFO_TAG: metadata.parse_session_start_info_plugin_data,
        metadata.SESSION_END_INFO_TAG: metadata.parse_session_end_info_plugin_data,
    }
    return {tag: parsers[tag](data) for tag, data in content.items()}


def test_study_export_holds_every_runs_epochs_and_hyperparameters(
    alice: httpx.Client, study: dict[str, Any], tmp_path: Path
) -> None:
    from tensorboard.plugins.hparams import api_pb2, metadata

    response = alice.get(f"/studies/{study['id']}/tensorboard")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    assert f"convlab-study-{study['id']}" in response.headers["content-disposition"]
    folder = _extract(response.content, tmp_path)
    assert folder.name == f"convlab-study-{study['id']}"
    assert len([path for path in folder.iterdir() if path.is_dir()]) == 2
    for experiment in study["experiments"]:
        run = _run_dir(folder, experiment["id"])
        scalars = _scalars(run)
        assert scalars == _expected_scalars(experiment["history"])
        assert [step for step, _ in scalars["val_accuracy"]] == [1, 2]
        plugin = _hparams(run)
        start = plugin[metadata.SESSION_START_INFO_TAG]
        hparams, spec = start.hparams, experiment["spec"]
        assert start.group_name == experiment["id"]
        assert hparams["variant"].string_value == spec["preset"]
        assert hparams["preset"].string_value == spec["preset"]
        assert hparams["model.dropout"].number_value == spec["model"]["dropout"]
        lr = spec["optimizer"]["learning_rate"]
        assert hparams["optimizer.learning_rate"].number_value == lr
        assert hparams["training.epochs"].number_value == 2
        assert hparams["model.batch_norm"].bool_value is spec["model"]["batch_norm"]
        filters = hparams["model.conv_filters"].string_value
        assert json.loads(filters) == spec["model"]["conv_filters"]
        assert plugin[metadata.SESSION_END_INFO_TAG].status == api_pb2.STATUS_SUCCESS
    config = _hparams(folder)[metadata.EXPERIMENT_TAG]
    columns = {info.name: info for info in config.hparam_infos}
    assert "variant" in columns and "model.dropout" in columns  # base and dropout differ there
    assert "optimizer.learning_rate" not in columns  # the same in both runs
    dropouts = [value.number_value for value in columns["model.dropout"].domain_discrete.values]
    assert dropouts == sorted(e["spec"]["model"]["dropout"] for e in study["experiments"])
    metrics = [info.name.tag for info in config.metric_infos]
    assert metrics == list(_expected_scalars(study["experiments"][0]["history"]))


def test_experiment_export_holds_that_run_alone(
    alice: httpx.Client, study: dict[str, Any], tmp_path: Path
) -> None:
    from tensorboard.plugins.hparams import metadata

    experiment = study["experiments"][0]
    response = alice.get(f"/experiments/{experiment['id']}/tensorboard")
    assert response.status_code == 200, response.text
    folder = _extract(response.content, tmp_path)
    assert folder.name == f"convlab-experiment-{experiment['id']}"
    (run,) = [path for path in folder.iterdir() if path.is_dir()]
    assert _scalars(run) == _expected_scalars(experiment["history"])
    columns = [info.name for info in _hparams(folder)[metadata.EXPERIMENT_TAG].hparam_infos]
    assert {"variant", "optimizer.learning_rate", "model.dropout", "seed"} <= set(columns)


def test_a_field_some_runs_lack_leaves_their_cells_empty_and_keeps_its_type(
    tmp_path: Path,
) -> None:
    """sgd has no beta_1 (an empty cell, the column still numbers); early stopping is an object
    in one run and null in the others (JSON text in every cell)."""
    from tensorboard.plugins.hparams import api_pb2, metadata

    epochs = [EpochMetrics(1, 2.0, 0.2, 2.1, 0.25, 0.5)]
    runs = [
        Run(preset, preset, Status.succeeded, 1.8e9, {"variant": preset, **flat_spec(spec)}, epochs)
        for preset in ("adam", "sgd", "early_stopping")
        for spec in [resolve(preset, {"dataset": {"name": "digits"}}).model_dump(mode="json")]
    ]
    folder = _extract(archive(runs, "f", datetime.now(UTC)), tmp_path)
    starts = {
        run.name: _hparams(folder / run.name)[metadata.SESSION_START_INFO_TAG] for run in runs
    }
    assert starts["adam"].hparams["optimizer.beta_1"].number_value == 0.9
    assert "optimizer.beta_1" not in starts["sgd"].hparams
    stopping = json.loads(starts["early_stopping"].hparams["training.early_stopping"].string_value)
    assert stopping["monitor"] == "val_loss"
    assert starts["sgd"].hparams["training.early_stopping"].string_value == "null"
    columns = {info.name: info for info in _hparams(folder)[metadata.EXPERIMENT_TAG].hparam_infos}
    assert columns["optimizer.beta_1"].type == api_pb2.DATA_TYPE_FLOAT64
    assert columns["training.early_stopping"].type == api_pb2.DATA_TYPE_STRING
    assert "dataset.name" not in columns  # the same in every run


def test_unknown_study_or_experiment_is_404(stack: Stack, tokens: dict[str, str]) -> None:
    with stack.client(tokens["root"]) as root:
        study = root.get("/studies/0123456789abcdef0123456789abcdef/tensorboard")
        assert study.status_code == 404
        assert study.json()["detail"] == "Study 0123456789abcdef0123456789abcdef not found."
        experiment = root.get("/experiments/0123456789abcdef0123456789abcdef/tensorboard")
        assert experiment.status_code == 404


def test_only_who_may_read_the_study_gets_its_export(
    stack: Stack, tokens: dict[str, str], study: dict[str, Any]
) -> None:
    experiment_id = study["experiment_ids"][0]
    with stack.client() as anonymous:
        assert anonymous.get(f"/studies/{study['id']}/tensorboard").status_code == 401
    with stack.client(tokens["bob"]) as bob:  # reads are owner-only on this server
        assert bob.get(f"/studies/{study['id']}/tensorboard").status_code == 404
        assert bob.get(f"/experiments/{experiment_id}/tensorboard").status_code == 404
    with stack.client(tokens["root"]) as root:
        assert root.get(f"/studies/{study['id']}/tensorboard").status_code == 200
        assert root.get(f"/experiments/{experiment_id}/tensorboard").status_code == 200


def test_exports_load_no_tensorflow_in_the_api(
    alice: httpx.Client, stack: Stack, study: dict[str, Any]
) -> None:
    assert alice.get(f"/studies/{study['id']}/tensorboard").status_code == 200
    assert "tensorflow" not in Path(f"/proc/{stack.api.pid}/maps").read_text()
    # And in a process of its own: writing an archive imports no TensorFlow or Keras module.
    script = (
        "import sys, time\n"
        "from datetime import UTC, datetime\n"
        "from models.epochs import EpochMetrics\n"
        "from models.status import Status\n"
        "from views.tensorboard import Run, archive\n"
        "run = Run('r', 'x', Status.succeeded, time.time(), {'seed': 0},\n"
        "          [EpochMetrics(1, 1.0, 0.5, 1.0, 0.5, 0.1)])\n"
        "assert archive([run], 'f', datetime.now(UTC))\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_export_extracts_the_studys_log_folder(
    stack: Stack, tokens: dict[str, str], alice: httpx.Client, study: dict[str, Any], tmp_path: Path
) -> None:
    env = {**stack.env, "CONVLAB_URL": stack.url, "CONVLAB_TOKEN": tokens["alice"]}
    command = [str(BIN / "convlab"), "export", "tensorboard", study["id"], str(tmp_path / "tb")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    folder = Path(result.stdout.strip())
    assert folder == tmp_path / "tb" / f"convlab-study-{study['id']}"
    served = _extract(alice.get(f"/studies/{study['id']}/tensorboard").content, tmp_path / "api")
    files = sorted(path.relative_to(folder) for path in folder.rglob("*") if path.is_file())
    assert files == sorted(path.relative_to(served) for path in served.rglob("*") if path.is_file())
    assert all((folder / name).read_bytes() == (served / name).read_bytes() for name in files)
    with_bobs = {**env, "CONVLAB_TOKEN": tokens["bob"]}
    refused = subprocess.run(command, env=with_bobs, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"Study {study['id']} not found."


def test_tensorboard_serves_the_export_scalars_and_hparams_table(
    alice: httpx.Client, study: dict[str, Any], tmp_path: Path
) -> None:
    """TensorBoard itself (its default data server) shows the scalars and the HParams table."""
    folder = _extract(alice.get(f"/studies/{study['id']}/tensorboard").content, tmp_path)
    port = free_port()
    command = [str(BIN / "tensorboard"), "--logdir", str(tmp_path), "--port", str(port)]
    log = (tmp_path / "tensorboard.log").open("wb")
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1"], stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def tags() -> dict[str, Any] | None:
            assert process.poll() is None, (tmp_path / "tensorboard.log").read_text()
            try:
                found: dict[str, Any] = httpx.get(f"{url}/data/plugin/scalars/tags").json()
            except httpx.TransportError:
                return None
            return found if len(found) == 2 else None

        shown = wait_for(tags, timeout=120, what="TensorBoard to load the export", every=1)
        for experiment in study["experiments"]:
            run = f"{folder.name}/{_run_dir(folder, experiment['id']).name}"
            assert set(shown[run]) == set(_expected_scalars(experiment["history"]))
            points = httpx.get(
                f"{url}/data/plugin/scalars/scalars", params={"run": run, "tag": "val_accuracy"}
            ).json()
            expected = _expected_scalars(experiment["history"])["val_accuracy"]
            assert [(step, value) for _, step, value in points] == expected
        request = {
            "experimentName": "",
            "allowedStatuses": ["STATUS_SUCCESS"],
            "colParams": [
                {
                    "metric": {"tag": "val_accuracy", "group": ""},
                    "order": "ORDER_UNSPECIFIED",
                    "missingValuesFirst": False,
                }
            ],
            "startIndex": 0,
            "sliceSize": 10,
        }
        groups = httpx.post(f"{url}/data/plugin/hparams/session_groups", json=request).json()
        table = {group["name"]: group for group in groups["sessionGroups"]}
        assert set(table) == set(study["experiment_ids"])
        for experiment in study["experiments"]:
            row = table[experiment["id"]]
            assert row["hparams"]["variant"] == experiment["spec"]["preset"]
            metrics = {metric["name"]["tag"]: metric["value"] for metric in row["metricValues"]}
            last = experiment["history"][-1]["val_accuracy"]
            assert metrics["val_accuracy"] == pytest.approx(last, rel=1e-6)
    finally:
        stop_process(process)
        log.close()
