"""Is the difference real? The study table and /compare measured against a baseline (Welch over
seeds, as views.significance computes it) in every format, and POST /studies/{id}/seeds: its
refusals in process, then a real worker training the new seeds on digits as the table grows."""

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlmodel import Session, select

from api.main import create_app
from core.config import Settings
from models.status import Status
from store.db import get_engine, session_scope
from store.tables import Experiment
from store.tokens import create_token
from tests.browser import chromium, shown, wait
from tests.services import Stack, Trainer, running_stack, wait_for
from tests.test_cli import convlab
from views.significance import difference

SMALL = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}
TEST_ACCURACY = {
    "base": [0.80, 0.82, 0.81],
    "dropout": [0.81, 0.79, 0.83],  # within noise of base
    "adam": [0.90, 0.91, 0.92],  # beyond it
}
"""Each variant's last val_accuracy per seed (0, 1, 2)."""


def _trained_study(client: TestClient, trainer: Trainer) -> dict[str, Any]:
    """A study of three presets at three seeds whose runs ended at TEST_ACCURACY."""
    body = {"presets": list(TEST_ACCURACY), "seeds": [0, 1, 2], **SMALL}
    study: dict[str, Any] = client.post("/studies", json=body).json()
    listing = {"study_id": study["id"], "sort": "created_at"}
    members = client.get("/experiments", params=listing).json()["items"]
    for experiment in members:
        value = TEST_ACCURACY[experiment["spec"]["preset"]][experiment["spec"]["seed"]]
        trainer.start(experiment["id"])
        trainer.epoch(experiment["id"], 1, 1.0, 0.5, 1.1, value - 0.1, 1.0)
        trainer.epoch(experiment["id"], 2, 0.5, value + 0.05, 0.6, value, 1.0)
        trainer.finish(experiment["id"], Status.succeeded)
    study["members"] = members
    return study


def _expected(variant: str, baseline: str) -> dict[str, Any]:
    return difference(TEST_ACCURACY[variant], TEST_ACCURACY[baseline]).model_dump()


def test_table_compares_each_variant_with_the_first_by_default(
    client: TestClient, trainer: Trainer
) -> None:
    study = _trained_study(client, trainer)
    answer = client.get(f"/studies/{study['id']}/table").json()
    assert answer["baseline"] == "base"
    rows = {row["variant"]: row for row in answer["table"]}
    assert rows["base"]["difference"] is None
    for variant in ("dropout", "adam"):
        found = rows[variant]["difference"]["test_accuracy"]
        assert found == pytest.approx(_expected(variant, "base"))
        assert set(rows[variant]["difference"]) >= {"train_accuracy", "test_loss", "epochs_run"}
    assert rows["dropout"]["difference"]["test_accuracy"]["beyond_noise"] is False
    assert rows["adam"]["difference"]["test_accuracy"]["beyond_noise"] is True
    assert client.get(f"/studies/{study['id']}").json()["table"] == answer["table"]


def test_baseline_names_a_variant_or_one_of_its_experiments(
    client: TestClient, trainer: Trainer
) -> None:
    study = _trained_study(client, trainer)
    adam_run = next(e for e in study["members"] if e["spec"]["preset"] == "adam")
    for key in ("adam", adam_run["id"], adam_run["id"][:8], "adam, seed 1"):
        answer = client.get(f"/studies/{study['id']}/table", params={"baseline": key}).json()
        assert answer["baseline"] == "adam", key
        rows = {row["variant"]: row for row in answer["table"]}
        assert rows["adam"]["difference"] is None
        assert rows["base"]["difference"]["test_accuracy"] == pytest.approx(
            _expected("base", "adam")
        )


@pytest.mark.parametrize("format", ["json", "csv", "markdown"])
def test_an_unknown_baseline_is_a_422_naming_it(
    client: TestClient, trainer: Trainer, format: str
) -> None:
    study = _trained_study(client, trainer)
    for path, params in (
        (f"/studies/{study['id']}/table", {}),
        ("/compare", {"ids": ",".join(e["id"] for e in study["members"])}),
    ):
        params |= {"baseline": "resnet", "format": format}
        response = client.get(path, params=params)
        assert response.status_code == 422, path
        [error] = response.json()["detail"]
        assert error["loc"] == ["query", "baseline"]
        assert "'resnet'" in error["msg"]


def test_markdown_puts_the_difference_and_its_interval_beside_each_row(
    client: TestClient, trainer: Trainer
) -> None:
    study = _trained_study(client, trainer)
    text = client.get(f"/studies/{study['id']}/table", params={"format": "markdown"}).text
    header, _, *lines = text.splitlines()
    assert header.startswith("| Variant | Runs | Train accuracy | Test accuracy")
    assert header.endswith("| Test accuracy vs base (95% CI) | p | Seeds for 80% power |")
    split = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    cells = {row[0]: row for row in split}
    assert cells["base"][-3:] == ["baseline", "", ""]
    dropout = difference(TEST_ACCURACY["dropout"], TEST_ACCURACY["base"])
    assert dropout.text() in cells["dropout"] and dropout.text().endswith("(noise)")
    adam = difference(TEST_ACCURACY["adam"], TEST_ACCURACY["base"])
    assert adam.text() in cells["adam"] and "(noise)" not in adam.text()
    assert adam.p_value is not None and dropout.p_value is not None
    assert cells["adam"][-2:] == [f"{adam.p_value:.2g}", str(adam.seeds_needed)]
    assert cells["dropout"][-2] == f"{dropout.p_value:.2g}"


def test_csv_gives_every_difference_field_per_column(client: TestClient, trainer: Trainer) -> None:
    study = _trained_study(client, trainer)
    response = client.get(
        f"/studies/{study['id']}/table", params={"format": "csv", "baseline": "dropout"}
    )
    rows = {row["variant"]: row for row in csv.DictReader(io.StringIO(response.text))}
    assert rows["dropout"]["baseline"] == "True" and rows["dropout"]["test_accuracy_diff"] == ""
    expected = _expected("adam", "dropout")
    adam = rows["adam"]
    assert adam["baseline"] == "False"
    assert float(adam["test_accuracy_diff"]) == pytest.approx(expected["mean"])
    assert float(adam["test_accuracy_diff_low"]) == pytest.approx(expected["low"])
    assert float(adam["test_accuracy_diff_high"]) == pytest.approx(expected["high"])
    assert float(adam["test_accuracy_p_value"]) == pytest.approx(expected["p_value"])
    assert int(adam["test_accuracy_seeds_needed"]) == expected["seeds_needed"]
    assert adam["test_accuracy_beyond_noise"] == "True"
    assert rows["base"]["test_accuracy_beyond_noise"] == "False"


def test_compare_pools_seeds_by_spec_and_measures_groups_against_the_baseline(
    client: TestClient, trainer: Trainer
) -> None:
    study = _trained_study(client, trainer)
    ids = ",".join(e["id"] for e in study["members"])
    adam_run = next(e for e in study["members"] if e["spec"]["preset"] == "adam")
    answer = client.get("/compare", params={"ids": ids, "baseline": adam_run["id"]}).json()
    assert answer["baseline"] == "adam, seed 0 (3 runs)"
    groups = {row["variant"].split(",")[0]: row for row in answer["groups"]}
    assert [row["runs"] for row in answer["groups"]] == [3, 3, 3]
    assert groups["adam"]["difference"] is None
    expected = _expected("base", "adam")
    assert groups["base"]["difference"]["test_accuracy"] == pytest.approx(expected)
    for row in answer["table"]:
        assert row["difference"] == groups[row["group"].split(",")[0]]["difference"]
    default = client.get("/compare", params={"ids": ids}).json()
    assert default["baseline"] == "base, seed 0 (3 runs)"
    markdown = client.get("/compare", params={"ids": ids, "format": "markdown"}).text
    assert "| Test accuracy vs base, seed 0 (3 runs) (95% CI) | p |" in markdown
    base = difference(TEST_ACCURACY["adam"], TEST_ACCURACY["base"]).text()
    assert sum(base in line for line in markdown.splitlines()) == 3  # each adam run's line
    table = list(csv.DictReader(io.StringIO(client.get("/compare", params={
        "ids": ids, "format": "csv"}).text)))  # fmt: skip
    assert [row["baseline"] for row in table] == ["True"] * 3 + ["False"] * 6
    assert float(table[-1]["test_accuracy_diff"]) == pytest.approx(
        _expected("adam", "base")["mean"]
    )


def _stored_runs(settings: Settings, study_id: str) -> list[tuple[str, int]]:
    with Session(get_engine(settings.resolved_database_url)) as session:
        runs = session.exec(select(Experiment).where(Experiment.study_id == study_id)).all()
        return sorted((run.variant or "", run.spec["seed"]) for run in runs)


def test_seeds_queue_exactly_the_new_runs(client: TestClient, settings: Settings) -> None:
    study = client.post("/studies", json={"presets": ["base", "adam"], **SMALL}).json()
    added = client.post(f"/studies/{study['id']}/seeds", json={"add": 2})
    assert added.status_code == 202, added.json()
    assert added.json()["seeds"] == [0, 1, 2]
    assert added.headers["location"] == f"/studies/{study['id']}"
    again = client.post(f"/studies/{study['id']}/seeds", json={"seeds": [7, 5]}).json()
    assert again["seeds"] == [0, 1, 2, 7, 5]
    assert again["variants"] == ["base", "adam"]
    assert _stored_runs(settings, study["id"]) == sorted(
        (variant, seed) for variant in ("base", "adam") for seed in (0, 1, 2, 7, 5)
    )
    listed = client.get("/experiments", params={"study_id": study["id"], "limit": 100}).json()
    new = [e for e in listed["items"] if e["spec"]["seed"] != 0]
    assert {e["status"] for e in new} == {"queued"}
    assert {e["name"] for e in new} >= {"adam, seed 7", "base, seed 5"}
    assert all(e["spec"]["training"]["epochs"] == 2 for e in new)  # the study's own spec keys


def test_the_chapter_with_five_seeds_is_one_request(client: TestClient) -> None:
    study = client.post("/studies", json={"template": "chapter", **SMALL}).json()
    grown = client.post(f"/studies/{study['id']}/seeds", json={"add": 4}).json()
    assert grown["seeds"] == [0, 1, 2, 3, 4]
    assert len(grown["experiment_ids"]) == 13 * 5


@pytest.mark.parametrize(
    ("body", "loc", "words"),
    [
        ({}, ["body"], "exactly one of seeds"),
        ({"seeds": [3], "add": 1}, ["body"], "exactly one of seeds"),
        ({"add": 0}, ["body", "add"], ""),
        ({"add": "3"}, ["body", "add"], ""),
        ({"seeds": []}, ["body", "seeds"], ""),
        ({"seeds": [4, 4]}, ["body", "seeds"], "repeat"),
        ({"seeds": [-1]}, ["body", "seeds", 0], ""),
        ({"seeds": [3, 0, 1]}, ["body", "seeds"], "seeds [0, 1] already"),
        ({"add": 19}, ["body", "add"], "at most 20 seeds; this one has 2, so at most 18 more"),
        ({"seeds": [1, 2], "colour": "red"}, ["body", "colour"], ""),
    ],
)
def test_bad_seed_requests_are_422_and_store_nothing(
    client: TestClient, settings: Settings, body: dict[str, Any], loc: list[Any], words: str
) -> None:
    study = client.post("/studies", json={"presets": ["base"], "seeds": [0, 1], **SMALL}).json()
    response = client.post(f"/studies/{study['id']}/seeds", json=body)
    assert response.status_code == 422, response.json()
    errors = response.json()["detail"]
    assert loc in [error["loc"] for error in errors], errors
    assert words in " ".join(error["msg"] for error in errors)
    assert _stored_runs(settings, study["id"]) == [("base", 0), ("base", 1)]
    assert client.get(f"/studies/{study['id']}").json()["seeds"] == [0, 1]


def test_add_stops_where_seeds_end(client: TestClient) -> None:
    study = client.post("/studies", json={"presets": ["base"], "seeds": [2**31 - 2], **SMALL})
    refused = client.post(f"/studies/{study.json()['id']}/seeds", json={"add": 2})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "add"]
    assert client.post(f"/studies/{study.json()['id']}/seeds", json={"add": 1}).status_code == 202


def test_seeds_for_a_missing_study_or_a_search_are_refused(client: TestClient) -> None:
    missing = client.post("/studies/0123456789abcdef/seeds", json={"add": 1})
    assert missing.status_code == 404
    search = {"search": {"n_trials": 2, "space": {"optimizer.learning_rate": {
        "type": "float", "low": 1e-4, "high": 1e-2, "log": True}}}, **SMALL}  # fmt: skip
    created = client.post("/studies", json=search)
    assert created.status_code == 201, created.json()
    refused = client.post(f"/studies/{created.json()['id']}/seeds", json={"add": 1})
    assert refused.status_code == 409
    assert "search" in refused.json()["detail"]


def test_seeds_count_against_the_active_cap(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, auth=True, max_active_per_user=3)
    with TestClient(create_app(settings)) as capped:
        with session_scope(get_engine(settings.resolved_database_url)) as session:
            _, secret = create_token(session, user="ada", admin=False)
        capped.headers["Authorization"] = f"Bearer {secret}"
        study = capped.post("/studies", json={"presets": ["base"], "seeds": [0, 1], **SMALL})
        assert study.status_code == 201, study.json()
        refused = capped.post(f"/studies/{study.json()['id']}/seeds", json={"add": 2})
        assert refused.status_code == 429, refused.json()
        assert (
            capped.post(f"/studies/{study.json()['id']}/seeds", json={"add": 1}).status_code == 202
        )


# ---- a real worker on digits ------------------------------------------------------------

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 1, "batch_size": 64}}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("seeds")) as running:
        yield running


def _ended(api: httpx.Client, study_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        found: dict[str, Any] = api.get(f"/studies/{study_id}").json()
        return found if found["status"] in TERMINAL else None

    return wait_for(done, timeout=240, what=f"study {study_id} to end")


@pytest.fixture(scope="module")
def grown(stack: Stack) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """A study of base and adam trained at seed 0, then at seed 1 (the CLI's --add 1) and 5
    (the API's seeds): the study after seed 0, and after all."""
    with stack.client() as api:
        study = api.post("/studies", json={"presets": ["base", "adam"], **DIGITS}).json()
        first = _ended(api, study["id"])
        assert first["status"] == "succeeded", stack.log_tail()
        typed = convlab(stack, "study", "seeds", study["id"], "--add", "1")
        assert typed.returncode == 0, typed.stderr
        assert typed.stdout.strip() == f"{study['id']}: seeds 1 queued (2 experiments)"
        added = api.post(f"/studies/{study['id']}/seeds", json={"seeds": [5]})
        assert added.status_code == 202, added.json()
        yield first, _ended(api, study["id"])


@pytest.mark.slow
def test_the_table_grows_as_the_new_seeds_finish(
    stack: Stack, grown: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    first, last = grown
    assert [row["runs"] for row in first["table"]] == [1, 1]
    assert first["table"][1]["difference"]["test_accuracy"]["mean"] is None  # one seed each
    assert last["status"] == "succeeded", stack.log_tail()
    assert last["seeds"] == [0, 1, 5] and len(last["experiment_ids"]) == 6
    with stack.client() as api:
        table = api.get(f"/studies/{last['id']}/table").json()["table"]
        runs = api.get("/experiments", params={"study_id": last["id"]}).json()["items"]
    assert [row["runs"] for row in table] == [3, 3]
    finals = {
        preset: [run["final"]["val_accuracy"] for run in runs if run["spec"]["preset"] == preset]
        for preset in ("base", "adam")
    }
    expected = difference(finals["adam"], finals["base"]).model_dump()
    assert table[1]["difference"]["test_accuracy"] == pytest.approx(expected)
    typed = convlab(stack, "study", "table", last["id"], "--baseline", "adam")
    assert typed.returncode == 0, typed.stderr
    assert "| Test accuracy vs adam (95% CI) |" in typed.stdout.splitlines()[0]
    adam = next(run["id"] for run in runs if run["spec"]["preset"] == "adam")
    ids = [run["id"] for run in runs]
    typed = convlab(stack, "compare", *ids, "--baseline", adam[:8])
    assert typed.returncode == 0, typed.stderr
    assert "| Test accuracy vs adam, seed " in typed.stdout.splitlines()[0]


@pytest.mark.slow
def test_the_study_page_shows_differences_and_adds_the_seeds_power_asks_for(
    stack: Stack, grown: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    study = grown[1]
    adam = study["table"][1]["difference"]["test_accuracy"]
    unsettled = [] if adam["beyond_noise"] else [adam["seeds_needed"]]
    needed = [count for count in unsettled if count is not None]
    wanted = (max(needed) if needed else 3) - len(study["seeds"])
    prefilled = max(1, min(wanted, 20 - len(study["seeds"])))
    with chromium() as browser:
        browser.get(f"{stack.url}/#/studies/{study['id']}")
        wait(browser, lambda b: len(_texts(b, "#study-table tbody tr")) == 2)
        cells = _texts(browser, '[data-column="difference"]')
        assert cells[0] == "baseline"
        assert cells[1].startswith(f"{adam['mean']:+.3f} [{adam['low']:+.3f}, ")
        assert cells[1].endswith(" noise") != adam["beyond_noise"]
        count = wait(browser, lambda b: shown(b, "#add-seeds-count"))
        assert count.get_attribute("value") == str(prefilled)
        count.clear()
        count.send_keys("2")
        browser.find_element(By.ID, "add-seeds").click()
        with stack.client() as api:

            def seeds() -> list[int] | None:
                found: list[int] = api.get(f"/studies/{study['id']}").json()["seeds"]
                return found if found != study["seeds"] else None

            assert wait_for(seeds, timeout=30, what="the button's seeds") == [0, 1, 5, 6, 7]
            assert api.post(f"/studies/{study['id']}/cancel").status_code == 202
        browser.get(f"{stack.url}/#/studies/{study['id']}?baseline=adam")
        wait(browser, lambda b: "Test accuracy vs adam" in " ".join(_texts(b, "#study-table th")))
        assert _texts(browser, '[data-column="difference"]')[1] == "baseline"


def _texts(browser: WebDriver, selector: str) -> list[str]:
    """The text of every element ``selector`` finds, read again if the page re-rendered it."""

    def read(found: WebDriver) -> tuple[list[str]]:
        return ([element.text for element in found.find_elements(By.CSS_SELECTOR, selector)],)

    texts: list[str] = wait(browser, read, 10)[0]
    return texts
