"""Stronger searches: the successive_halving and hyperband pruners and the cmaes and qmc
samplers run on a real stack (PostgreSQL, Redis, a worker training digits); a hyperband built
to prune prunes; a finished search gives its parameters' importances, and the study page shows
them. Bad pruner fields are 422s naming them (in process)."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By

from api.main import create_app
from core.config import Settings
from tests.browser import chromium, wait
from tests.services import Stack, server_stack, wait_for

pytestmark = pytest.mark.slow

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 64}}
RATE = {"type": "float", "low": 1e-5, "high": 0.05, "log": True}
DROPOUT = {"type": "float", "low": 0.0, "high": 0.5}
SEARCHES = {
    "cmaes, successive_halving": {
        "space": {"optimizer.learning_rate": RATE, "model.dropout": DROPOUT},
        "sampler": "cmaes",
        "n_trials": 3,
        "pruner": {"type": "successive_halving", "min_resource": 1, "reduction_factor": 2},
    },
    # Two epochs, rungs three apart: hyperband's one bracket judges every trial at epoch 1,
    # where a trial goes on only if it is the best so far (one in three, at least one); rates
    # spread from 1e-5 (barely learning) to 0.05 by the quasi-random sequence.
    "qmc, hyperband": {
        "space": {"optimizer.learning_rate": RATE},
        "sampler": "qmc",
        "n_trials": 5,
        "pruner": {"type": "hyperband", "min_resource": 1, "reduction_factor": 3},
    },
    "random, none": {
        "space": {"optimizer.learning_rate": RATE, "model.dropout": DROPOUT},
        "sampler": "random",
        "n_trials": 3,
        "pruner": {"type": "none"},
    },
}
EPOCHS = {"cmaes, successive_halving": 2, "qmc, hyperband": 2, "random, none": 1}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with server_stack(tmp_path_factory.mktemp("search-strategies")) as running:
        yield running


@pytest.fixture(scope="module")
def finished(stack: Stack) -> dict[str, dict[str, Any]]:
    """Every search of SEARCHES, submitted at once and finished, with its runs."""
    done = {}
    with stack.client() as client:
        ids = {}
        for name, search in SEARCHES.items():
            training = {"epochs": EPOCHS[name], "batch_size": 64}
            body = {**DIGITS, "training": training, "name": name, "seeds": [3], "search": search}
            created = client.post("/studies", json=body)
            assert created.status_code == 201, created.text
            ids[name] = created.json()["id"]
        for name, study_id in ids.items():
            study = wait_for(
                lambda study_id=study_id: _ended(client, study_id), timeout=600, what=name
            )
            runs = [client.get(f"/experiments/{i}").json() for i in study["experiment_ids"]]
            done[name] = {**study, "runs": runs}
    return done


def _ended(client: httpx.Client, study_id: str) -> dict[str, Any] | None:
    body: dict[str, Any] = client.get(f"/studies/{study_id}").json()
    return body if body["status"] not in {"queued", "running"} else None


@pytest.mark.parametrize("name", SEARCHES)
def test_a_search_with_each_new_sampler_and_pruner_completes(
    finished: dict[str, dict[str, Any]], stack: Stack, name: str
) -> None:
    study = finished[name]
    assert study["status"] == "succeeded", stack.log_tail()
    assert study["progress"]["trials_started"] == SEARCHES[name]["n_trials"]
    assert {run["status"] for run in study["runs"]} <= {"succeeded", "cancelled"}
    assert study["best_trial"] is not None
    space = SEARCHES[name]["space"]
    for run in study["runs"]:
        rate = run["spec"]["optimizer"]["learning_rate"]
        assert space["optimizer.learning_rate"]["low"] <= rate <= 0.05


def test_hyperband_prunes_trials_at_its_rung(finished: dict[str, dict[str, Any]]) -> None:
    runs = finished["qmc, hyperband"]["runs"]
    pruned = [run for run in runs if run["status"] == "cancelled"]
    assert pruned, [(run["status"], run["best"]) for run in runs]
    for run in pruned:
        assert run["error"] == "pruned at epoch 1"
        assert run["epochs_done"] == 1  # its run stopped there, a whole epoch short
    assert any(run["status"] == "succeeded" and run["epochs_done"] == 2 for run in runs)


def test_importance_gives_each_searched_parameter_a_share_summing_to_one(
    finished: dict[str, dict[str, Any]], stack: Stack
) -> None:
    study = finished["random, none"]
    with stack.client() as client:
        response = client.get(f"/studies/{study['id']}/importance")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["importances"]) == set(SEARCHES["random, none"]["space"])
    assert sum(body["importances"].values()) == pytest.approx(1.0)
    assert all(value >= 0 for value in body["importances"].values())
    assert body["trials"] == 3
    assert body["evaluator"] == "ped_anova"
    assert body["metric"] == "val_accuracy"


def test_the_study_page_lists_a_searchs_importances(
    finished: dict[str, dict[str, Any]], stack: Stack
) -> None:
    study = finished["random, none"]
    with stack.client() as client:
        importances = client.get(f"/studies/{study['id']}/importance").json()["importances"]
    with chromium() as browser:
        browser.get(f"{stack.url}/#/studies/{study['id']}")
        rows = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#importances tr"))
        shown = {row.get_attribute("data-param"): row.text.split()[-1] for row in rows}
    assert shown == {key: f"{value:.3f}" for key, value in importances.items()}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The API in process, on a fresh SQLite database and no worker."""
    settings = Settings(home=tmp_path_factory.mktemp("search-strategies-app"))
    with TestClient(create_app(settings)) as client:
        yield client


SPACE = {"optimizer.learning_rate": RATE}


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"pruner": {"type": "hyperband", "reduction_factor": 1}}, "reduction_factor"),
        ({"pruner": {"type": "successive_halving", "reduction_factor": "3"}}, "reduction_factor"),
        ({"pruner": {"type": "median", "reduction_factor": 3}}, "reduction_factor"),
        ({"pruner": {"type": "successive_halving", "min_resource": 0}}, "min_resource"),
        ({"pruner": {"type": "hyperband", "min_resource": 3}}, "min_resource"),
        ({"pruner": {"type": "hyperband", "max_resource": 5}}, "max_resource"),
        ({"pruner": {"type": "hyperband", "min_resource": 2, "max_resource": 1}}, "max_resource"),
        ({"pruner": {"type": "successive_halving", "max_resource": 2}}, "max_resource"),
        ({"pruner": {"type": "successive_halving", "min_early_stopping_rate": 1}},
         "min_early_stopping_rate"),
        ({"pruner": {"type": "hyperband", "n_warmup_steps": 2}}, "n_warmup_steps"),
        ({"pruner": {"type": "none", "bootstrap_count": 1}}, "bootstrap_count"),
        ({"pruner": {"type": "hyperband", "bootstrap_count": -1}}, "bootstrap_count"),
        ({"pruner": {"type": "asha"}}, "type"),
    ],
)  # fmt: skip
def test_bad_pruner_fields_are_422_naming_the_field(
    app: TestClient, search: dict[str, Any], field: str
) -> None:
    body = {**DIGITS, "search": {"space": SPACE, "n_trials": 3, **search}}
    response = app.post("/studies", json=body)
    assert response.status_code == 422, response.text
    locs = [error["loc"] for error in response.json()["detail"]]
    assert ["body", "search", "pruner", field] in locs, response.json()


def test_a_cmaes_search_of_categories_alone_is_422_at_the_sampler(app: TestClient) -> None:
    space = {"optimizer.name": {"type": "categorical", "choices": ["adam", "sgd"]}}
    search = {"space": space, "n_trials": 3, "sampler": "cmaes"}
    response = app.post("/studies", json={**DIGITS, "search": search})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "search", "sampler"]
    assert "float and int parameters" in error["msg"]


def test_importance_of_a_study_that_is_no_search_is_404_saying_so(app: TestClient) -> None:
    grid = {**DIGITS, "grid": {"optimizer.name": ["adam", "sgd"]}}
    study = app.post("/studies", json=grid).json()
    response = app.get(f"/studies/{study['id']}/importance")
    assert response.status_code == 404
    assert "is a grid study, not a search" in response.json()["detail"]
    assert app.get("/studies/0123456789abcdef/importance").status_code == 404


def test_importance_of_a_search_without_two_completed_trials_is_409_saying_so(
    app: TestClient,
) -> None:
    search = {"space": SPACE, "n_trials": 3, "sampler": "qmc"}
    study = app.post("/studies", json={**DIGITS, "search": search}).json()
    response = app.get(f"/studies/{study['id']}/importance")
    assert response.status_code == 409
    assert (
        "has 0 completed trials; parameter importances need at least 2"
        in (response.json()["detail"])
    )
