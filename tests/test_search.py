"""Optuna search studies, in process: validation, trials as experiments, how Optuna hears of
finished trials, the best trial, cancel."""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from api.main import create_app
from core.config import Settings
from jobs.optuna_adapter import optuna_name, optuna_storage
from jobs.search import advance, lock_key, reporter
from jobs.sweeper import sweep
from models.status import Status
from models.study_state import PRUNED
from store.db import get_engine, migrate
from store.singleton import one_at_a_time
from store.tables import Experiment, Study
from store.transitions import finish
from tests.events import parse_events
from tests.services import Trainer, all_at_once

SPACE = {
    "optimizer.learning_rate": {"type": "float", "low": 1e-5, "high": 0.1, "log": True},
    "model.dropout": {"type": "float", "low": 0.0, "high": 0.6},
}
BASE = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}
MOMENTUM_OR_SGD = {"type": "categorical", "choices": ["momentum", "sgd"]}
"""With the momentum preset: sgd takes no momentum, so the spec refuses sgd at any momentum."""


def _search(client: TestClient, **search: Any) -> dict[str, Any]:
    body = {**BASE, "search": {"space": SPACE, "n_trials": 4, **search}}
    response = client.post("/studies", json=body)
    assert response.status_code == 201, response.json()
    study: dict[str, Any] = response.json()
    return study


def _trial_states(settings: Settings, study_id: str) -> list[str]:
    """The states Optuna holds for the search's trials, in trial order."""
    storage = settings.resolved_database_url
    trials = optuna.load_study(study_name=optuna_name(study_id), storage=storage).trials
    return [trial.state.name for trial in trials]


def _succeed(trainer: Trainer, experiment_id: str) -> None:
    trainer.start(experiment_id)
    trainer.epoch(experiment_id, 1, 1.0, 0.5, 1.0, 0.5, 1.0)
    trainer.finish(experiment_id, Status.succeeded)


def _refuse_trials(engine: Engine, study_id: str) -> None:
    """A database fault: storing any experiment of the study fails."""
    with Session(engine) as session:
        session.exec(
            text(
                "CREATE TRIGGER refuse_trials BEFORE INSERT ON experiments "
                f"WHEN NEW.study_id = '{study_id}' BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
        )
        session.commit()


def test_a_search_whose_trials_times_seeds_pass_a_studys_bound_is_422(client: TestClient) -> None:
    body = {**BASE, "seeds": [0, 1, 2], "search": {"space": SPACE, "n_trials": 200}}
    response = client.post("/studies", json=body)
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "search", "n_trials"]
    assert "200 trials x 3 seeds is 600 experiments; at most 500" in error["msg"]
    body["search"]["n_trials"] = 160  # 480 runs
    assert client.post("/studies", json=body).status_code == 201


@pytest.mark.parametrize(
    ("search", "loc"),
    [
        ({"space": {}, "n_trials": 3}, ["body", "search", "space"]),
        ({"space": SPACE, "n_trials": 10_000}, ["body", "search", "n_trials"]),
        ({"space": {"model.nonexistent": {"type": "int", "low": 1, "high": 3}}, "n_trials": 3},
         ["body", "search", "space", "model.nonexistent"]),
        ({"space": {"model.dropout": {"type": "float", "low": 0, "high": 1}}, "n_trials": 3},
         ["body", "search", "space", "model.dropout"]),
        ({"space": {"model.dropout": {"type": "float", "low": 0.5, "high": 0.1}}, "n_trials": 3},
         ["body", "search", "space", "model.dropout", "float"]),
        ({"space": {"optimizer.learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}},
          "n_trials": 3}, ["body", "search", "space", "optimizer.learning_rate", "float"]),
        ({"space": SPACE, "n_trials": 3, "sampler": "grid"}, ["body", "search"]),
        ({"space": {"model.dropout": {"type": "categorical", "choices": [0.0] * 50},
                    "optimizer.learning_rate": {"type": "categorical", "choices": [0.1] * 50},
                    "training.epochs": {"type": "categorical", "choices": [1] * 5}},
          "n_trials": 3, "sampler": "grid"}, ["body", "search"]),
        ({"space": SPACE, "n_trials": 3, "pruner": {"type": "asha"}},
         ["body", "search", "pruner", "type"]),
    ],
)  # fmt: skip
def test_bad_searches_are_422_naming_the_field(
    client: TestClient, search: dict[str, Any], loc: list[Any]
) -> None:
    response = client.post("/studies", json={**BASE, "search": search})
    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]], response.json()
    assert client.get("/studies").json()["items"] == []


def test_a_search_starts_as_many_trials_as_may_run_at_once(client: TestClient) -> None:
    study = _search(client, parallel=2)
    assert study["variants"] == ["trial 0", "trial 1"]
    assert study["progress"]["trials_started"] == 2
    assert study["progress"]["trials_planned"] == 4
    experiments = client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    for experiment in experiments:
        learning_rate = experiment["spec"]["optimizer"]["learning_rate"]
        assert 1e-5 <= learning_rate <= 0.1
        assert 0 <= experiment["spec"]["model"]["dropout"] <= 0.6
        assert experiment["name"].startswith("trial ")


def test_finished_trials_reach_optuna_and_the_best_is_named(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    study = _search(client, parallel=1)
    url = settings.resolved_database_url
    celery = client.app.state.celery  # type: ignore[attr-defined]
    values = []
    for value in (0.5, 0.8, 0.6):
        experiment_id = client.get(f"/studies/{study['id']}").json()["experiment_ids"][-1]
        trainer.start(experiment_id)
        trainer.epoch(experiment_id, 1, 1.0, 0.5, 1.0, value - 0.1, 1.0)
        trainer.epoch(experiment_id, 2, 0.9, 0.6, 0.9, value, 1.0)
        trainer.finish(experiment_id, Status.succeeded)
        values.append(value)
        advance(trainer.engine, celery, settings, study["id"])
    optuna_study = optuna.load_study(study_name=optuna_name(study["id"]), storage=url)
    complete = [t for t in optuna_study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert [t.value for t in complete] == values
    summary = client.get(f"/studies/{study['id']}").json()
    assert summary["progress"]["trials_started"] == 4
    best = summary["best_trial"]
    assert (best["number"], best["value"], best["metric"], best["direction"]) == (
        1,
        0.8,
        "val_accuracy",
        "maximize",
    )
    experiment = client.get(f"/experiments/{best['experiment_id']}").json()
    assert (
        best["params"]["optimizer.learning_rate"]
        == experiment["spec"]["optimizer"]["learning_rate"]
    )
    assert optuna_study.best_trial.number == 1


@pytest.mark.parametrize("settings", ["sqlite", "postgresql"], indirect=True)
def test_advances_racing_each_other_start_no_more_than_parallel_trials(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    # A worker that finished a trial and the API's sweeper advance the same search at once.
    study = _search(client, parallel=1)
    _succeed(trainer, client.get(f"/studies/{study['id']}").json()["experiment_ids"][0])
    celery = client.app.state.celery  # type: ignore[attr-defined]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: advance(trainer.engine, celery, settings, study["id"]), range(4)))
    ids = client.get(f"/studies/{study['id']}").json()["experiment_ids"]
    statuses = [client.get(f"/experiments/{i}").json()["status"] for i in ids]
    assert statuses == ["succeeded", "queued"]
    trials = optuna.load_study(
        study_name=optuna_name(study["id"]), storage=settings.resolved_database_url
    ).trials
    running = optuna.trial.TrialState.RUNNING
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE, running]  # no FAIL


@pytest.mark.parametrize("settings", ["sqlite", "postgresql"], indirect=True)
def test_an_advance_gives_up_on_one_that_hangs_and_the_next_starts_the_trial(
    client: TestClient, trainer: Trainer, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _search(client, parallel=1)
    _succeed(trainer, client.get(f"/studies/{study['id']}").json()["experiment_ids"][0])
    celery = client.app.state.celery  # type: ignore[attr-defined]
    monkeypatch.setattr("jobs.search.ADVANCE_WAIT_S", 0.5)
    hung = one_at_a_time(trainer.engine, lock_key(study["id"]), "searches", wait_s=0)
    with hung as held:  # another process advancing it, stopped mid-way
        assert held
        assert advance(trainer.engine, celery, settings, study["id"]) == []
    assert len(advance(trainer.engine, celery, settings, study["id"])) == 1


def test_cancel_of_a_search_stops_it_starting_trials(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    study = _search(client, parallel=1)
    assert client.post(f"/studies/{study['id']}/cancel").status_code == 202
    first = client.get(f"/studies/{study['id']}").json()
    assert first["progress"]["cancelled"] == 1
    celery = client.app.state.celery  # type: ignore[attr-defined]
    assert advance(trainer.engine, celery, settings, study["id"]) == []
    after = client.get(f"/studies/{study['id']}").json()
    assert after["progress"]["trials_started"] == 1
    assert after["status"] == "cancelled"
    trials = optuna.load_study(
        study_name=optuna_name(study["id"]), storage=settings.resolved_database_url
    ).trials
    assert [t.state for t in trials] == [optuna.trial.TrialState.FAIL]


def test_trials_over_the_model_budget_fail_without_reaching_a_worker(tmp_path: Path) -> None:
    # kernel 11 alone and batch norm alone fit 1,261,000 parameters on digits; together not
    settings = Settings(home=tmp_path, max_parameters=1_261_000)
    space = {
        "model.kernel_size": {"type": "categorical", "choices": [3, 11]},
        "model.batch_norm": {"type": "categorical", "choices": [False, True]},
    }
    body = {**BASE, "search": {"space": space, "n_trials": 4, "parallel": 4, "sampler": "grid"}}
    with TestClient(create_app(settings)) as client:
        study = client.post("/studies", json=body).json()
        experiments = client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    statuses = sorted(experiment["status"] for experiment in experiments)
    assert statuses == ["failed", "queued", "queued", "queued"]
    refused = next(e for e in experiments if e["status"] == "failed")
    assert refused["spec"]["model"]["kernel_size"] == 11
    assert refused["spec"]["model"]["batch_norm"] is True
    assert refused["error"].startswith("not run: the model would have 1,261,834 parameters")
    trials = optuna.load_study(
        study_name=optuna_name(study["id"]), storage=settings.resolved_database_url
    ).trials
    assert sorted(t.state.name for t in trials) == ["FAIL", "RUNNING", "RUNNING", "RUNNING"]


def test_a_search_space_end_over_the_budget_is_a_422(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, max_parameters=1_000_000)
    space = {"model.kernel_size": {"type": "int", "low": 3, "high": 11}}
    with TestClient(create_app(settings)) as client:
        response = client.post("/studies", json={**BASE, "search": {"space": space, "n_trials": 3}})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"] == ["body", "search", "space", "model.kernel_size"]
    assert error["msg"].startswith("model.kernel_size=11: the model would have 1,260,938")


def test_threads_meeting_a_new_database_share_one_optuna_storage(tmp_path: Path) -> None:
    """A new search's request and the sweeper once both created Optuna's tables (a 500)."""
    url = f"sqlite:///{tmp_path / 'convlab.sqlite'}"
    migrate(get_engine(url))
    with ThreadPoolExecutor(8) as pool:
        storages = list(pool.map(lambda _: optuna_storage(url), range(8)))
    assert all(storage is storages[0] for storage in storages)


def test_processes_meeting_a_new_database_create_optunas_tables_once(tmp_path: Path) -> None:
    """A test's search and the API's sweeper, two processes, once both inserted Optuna's schema
    version (an IntegrityError)."""
    url = f"sqlite:///{tmp_path / 'convlab.sqlite'}"
    migrate(get_engine(url))
    all_at_once(
        tmp_path, "from jobs.optuna_adapter import optuna_storage", f"optuna_storage({url!r})"
    )


def test_submit_of_a_grid_search_with_a_point_the_spec_refuses_is_422_storing_nothing(
    client: TestClient, settings: Settings
) -> None:
    """sgd takes no momentum: the grid's point (sgd, 0.5) is refused before anything is stored."""
    space = {
        "optimizer.name": MOMENTUM_OR_SGD,
        "optimizer.momentum": {"type": "categorical", "choices": [0.5, 0.9]},
    }
    search = {"space": space, "n_trials": 4, "parallel": 4, "sampler": "grid"}
    response = client.post("/studies", json={**BASE, "preset": "momentum", "search": search})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "search", "space", "optimizer.momentum"]
    assert error["msg"] == (
        "optimizer.name='sgd', optimizer.momentum=0.5: "
        "optimizer.momentum: Extra inputs are not permitted"
    )
    assert client.get("/studies").json()["items"] == []
    assert client.get("/experiments").json()["items"] == []
    storage = optuna_storage(settings.resolved_database_url)
    assert optuna.study.get_all_study_names(storage) == []


def test_sampling_of_a_point_the_spec_refuses_fails_that_trial_alone(
    client: TestClient, settings: Settings
) -> None:
    space = {
        "optimizer.name": MOMENTUM_OR_SGD,
        "optimizer.momentum": {"type": "float", "low": 0.5, "high": 0.9},
    }
    search = {"space": space, "n_trials": 4, "parallel": 4, "sampler": "random"}
    response = client.post("/studies", json={**BASE, "preset": "momentum", "search": search})
    assert response.status_code == 201, response.json()
    study = response.json()
    experiments = client.get("/experiments", params={"study_id": study["id"]}).json()["items"]
    experiments.sort(key=lambda experiment: experiment["created_at"])
    names = [experiment["spec"]["optimizer"]["name"] for experiment in experiments]
    statuses = [experiment["status"] for experiment in experiments]
    assert statuses == ["queued" if name == "momentum" else "failed" for name in names]
    assert {"queued", "failed"} <= set(statuses)
    refused = next(experiment for experiment in experiments if experiment["status"] == "failed")
    assert refused["error"].startswith("not run: optimizer.name='sgd', optimizer.momentum=0.")
    assert refused["error"].endswith(": optimizer.momentum: Extra inputs are not permitted")
    states = ["RUNNING" if status == "queued" else "FAIL" for status in statuses]
    assert _trial_states(settings, study["id"]) == states


def test_advance_counts_no_trial_when_storing_it_fails(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    """Counting a trial and storing it are one transaction; the trial Optuna was asked for in
    vain fails once the search has all its trials."""
    study = _search(client, parallel=1, n_trials=2)
    celery = client.app.state.celery  # type: ignore[attr-defined]
    _succeed(trainer, study["experiment_ids"][0])
    _refuse_trials(trainer.engine, study["id"])
    with pytest.raises(IntegrityError):
        advance(trainer.engine, celery, settings, study["id"])
    assert client.get(f"/studies/{study['id']}").json()["progress"]["trials_started"] == 1
    with Session(trainer.engine) as session:
        session.exec(text("DROP TRIGGER refuse_trials"))
        session.commit()
    (second,) = advance(trainer.engine, celery, settings, study["id"])
    _succeed(trainer, second)
    advance(trainer.engine, celery, settings, study["id"])
    summary = client.get(f"/studies/{study['id']}").json()
    assert (summary["status"], summary["progress"]["trials_started"]) == ("succeeded", 2)
    assert _trial_states(settings, study["id"]) == ["COMPLETE", "FAIL", "COMPLETE"]


def test_delete_of_a_finished_trial_leaves_the_search_finished(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    study = _search(client, parallel=2, n_trials=2)
    celery = client.app.state.celery  # type: ignore[attr-defined]
    for experiment_id in study["experiment_ids"]:
        _succeed(trainer, experiment_id)
    advance(trainer.engine, celery, settings, study["id"])
    assert client.delete(f"/experiments/{study['experiment_ids'][0]}").status_code == 204
    assert client.get(f"/studies/{study['id']}").json()["status"] == "succeeded"
    assert advance(trainer.engine, celery, settings, study["id"]) == []


def test_cancel_of_a_search_with_no_trial_running_tells_optuna_how_trials_ended(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    study = _search(client, parallel=1, n_trials=3)
    _succeed(trainer, study["experiment_ids"][0])
    assert client.post(f"/studies/{study['id']}/cancel").status_code == 202
    assert client.get(f"/studies/{study['id']}").json()["status"] == "succeeded"
    assert _trial_states(settings, study["id"]) == ["COMPLETE"]


def test_cancel_of_a_search_counted_ahead_of_its_trials_ends_it(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    """The state an earlier server left a search in when a trial was refused after it was
    counted and asked for: one trial counted and running in Optuna, but never stored."""
    study = _search(client, parallel=1, n_trials=4)
    with Session(trainer.engine) as session:
        session.exec(update(Study).where(col(Study.id) == study["id"]).values(trials_started=2))
        session.commit()
    storage = optuna_storage(settings.resolved_database_url)
    optuna.load_study(study_name=optuna_name(study["id"]), storage=storage).ask()
    assert client.post(f"/studies/{study['id']}/cancel").status_code == 202
    assert client.get(f"/studies/{study['id']}").json()["status"] == "cancelled"
    assert _trial_states(settings, study["id"]) == ["FAIL", "FAIL"]


def test_cancel_of_a_search_whose_optuna_study_is_lost_still_ends_it(
    client: TestClient, settings: Settings
) -> None:
    study = _search(client, parallel=1)
    storage = optuna_storage(settings.resolved_database_url)
    optuna.delete_study(study_name=optuna_name(study["id"]), storage=storage)
    assert client.post(f"/studies/{study['id']}/cancel").status_code == 202
    assert client.get(f"/studies/{study['id']}").json()["status"] == "cancelled"


def test_sweep_advances_the_other_searches_when_one_fails(
    client: TestClient, trainer: Trainer, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    broken, healthy = (_search(client, parallel=1, n_trials=2) for _ in range(2))
    for study in (broken, healthy):
        _succeed(trainer, study["experiment_ids"][0])
    _refuse_trials(trainer.engine, broken["id"])
    sweep(trainer.engine, client.app.state.celery, settings)  # type: ignore[attr-defined]
    assert client.get(f"/studies/{healthy['id']}").json()["progress"]["trials_started"] == 2
    assert client.get(f"/studies/{broken['id']}").json()["progress"]["trials_started"] == 1
    assert f"search {broken['id']}" in caplog.text


def _run_trial(
    trainer: Trainer, settings: Settings, experiment_id: str, accuracies: list[float]
) -> None:
    """Train a trial as the worker does: record each epoch, ask the search's pruner after it,
    and end cancelled as pruned when it says so (else succeeded)."""
    with Session(trainer.engine) as session:
        trial = session.get(Experiment, experiment_id)
        assert trial is not None and trial.study_id is not None and trial.trial_number is not None
        study = session.get(Study, trial.study_id)
        assert study is not None
    trial_reporter = reporter(settings.resolved_database_url, study, trial.trial_number)
    trainer.start(experiment_id)
    for epoch, accuracy in enumerate(accuracies, start=1):
        trainer.epoch(experiment_id, epoch, 1.0, accuracy, 1.0, accuracy, 0.1)
        if trial_reporter.should_prune(epoch, {"val_accuracy": accuracy}):
            finish(
                trainer.engine, experiment_id, trainer.owner, Status.cancelled, f"{PRUNED} {epoch}"
            )
            return
    trainer.finish(experiment_id, Status.succeeded)


def test_a_search_whose_pruner_stopped_trials_succeeds_with_a_best_trial(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    pruner = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = _search(client, parallel=1, n_trials=3, pruner=pruner, metric="val_accuracy")
    celery = client.app.state.celery  # type: ignore[attr-defined]
    for accuracies in ([0.5, 0.6, 0.7], [0.1, 0.1, 0.1], [0.6, 0.7, 0.8]):
        experiment_id = client.get(f"/studies/{study['id']}").json()["experiment_ids"][-1]
        _run_trial(trainer, settings, experiment_id, accuracies)
        advance(trainer.engine, celery, settings, study["id"])
    summary = client.get(f"/studies/{study['id']}").json()
    trials = [client.get(f"/experiments/{i}").json() for i in summary["experiment_ids"]]
    assert [(t["status"], t["error"]) for t in trials] == [
        ("succeeded", None),
        ("cancelled", "pruned at epoch 1"),
        ("succeeded", None),
    ]
    assert _trial_states(settings, study["id"]) == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert summary["status"] == "succeeded"
    assert summary["best_trial"]["value"] == 0.8
    events = _study_events(client, study["id"])
    assert events[-1]["event"] == "status" and events[-1]["data"]["status"] == "succeeded"


def _study_events(client: TestClient, study_id: str) -> list[dict[str, Any]]:
    with client.stream("GET", f"/studies/{study_id}/events") as response:
        return list(parse_events(response.iter_lines()))


def _ids_by_seed(client: TestClient, study_id: str) -> dict[int, list[str]]:
    """The study's experiment ids per seed, oldest first."""
    ids: dict[int, list[str]] = {}
    for experiment_id in client.get(f"/studies/{study_id}").json()["experiment_ids"]:
        seed = client.get(f"/experiments/{experiment_id}").json()["spec"]["seed"]
        ids.setdefault(seed, []).append(experiment_id)
    return ids


def test_a_search_with_seeds_runs_each_trial_per_seed_and_reports_their_mean(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    body = {**BASE, "seeds": [3, 7], "search": {"space": SPACE, "n_trials": 2, "parallel": 1}}
    study = client.post("/studies", json=body).json()
    celery = client.app.state.celery  # type: ignore[attr-defined]
    runs = _ids_by_seed(client, study["id"])
    assert [len(ids) for ids in runs.values()] == [1, 1]  # trial 0 once per seed
    specs = [client.get(f"/experiments/{ids[0]}").json()["spec"] for ids in runs.values()]
    assert specs[0]["optimizer"] == specs[1]["optimizer"]  # the same point
    for seed, accuracy in ((3, 0.6), (7, 0.9)):
        trainer.start(runs[seed][0])
        trainer.epoch(runs[seed][0], 1, 1.0, 0.5, 1.0, accuracy, 1.0)
        trainer.finish(runs[seed][0], Status.succeeded)
        advance(trainer.engine, celery, settings, study["id"])
        if seed == 3:  # one seed's value is not the trial's: it waits, and no trial starts
            assert _trial_states(settings, study["id"]) == ["RUNNING"]
            assert client.get(f"/studies/{study['id']}").json()["progress"]["queued"] == 1
    assert _trial_states(settings, study["id"]) == ["COMPLETE", "RUNNING"]
    trials = optuna.load_study(
        study_name=optuna_name(study["id"]), storage=settings.resolved_database_url
    ).trials
    assert trials[0].value == pytest.approx(0.75)
    summary = client.get(f"/studies/{study['id']}").json()
    assert summary["best_trial"]["value"] == pytest.approx(0.75)
    assert summary["best_trial"]["experiment_id"] == runs[3][0]
    assert summary["progress"]["queued"] == 2  # trial 1, once per seed
    assert summary["table"][0]["runs"] == 2


def test_a_pruned_first_seed_stops_the_trials_other_seeds(
    client: TestClient, trainer: Trainer, settings: Settings
) -> None:
    pruner = {"type": "median", "n_startup_trials": 0, "n_warmup_steps": 0}
    search = {"space": SPACE, "n_trials": 2, "pruner": pruner}
    study = client.post("/studies", json={**BASE, "seeds": [0, 1], "search": search}).json()
    runs = _ids_by_seed(client, study["id"])
    with Session(trainer.engine) as session:
        stored = session.get(Study, study["id"])
        assert stored is not None
    trial_reporter = reporter(settings.resolved_database_url, stored, 0)
    assert trial_reporter.should_prune(1, {"val_accuracy": 0.1}, seed=1) is False  # still running
    trainer.start(runs[0][0])
    finish(trainer.engine, runs[0][0], trainer.owner, Status.cancelled, f"{PRUNED} 1")
    celery = client.app.state.celery  # type: ignore[attr-defined]
    advance(trainer.engine, celery, settings, study["id"])
    assert _trial_states(settings, study["id"])[0] == "PRUNED"
    assert trial_reporter.should_prune(1, {"val_accuracy": 0.9}, seed=1) is True
