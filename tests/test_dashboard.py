"""The dashboard in a real headless browser (Debian's chromium, driven through its
chromedriver by selenium) against a real API with auth on and a real worker. Screenshots go
to test-artifacts/screenshots/."""

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.browser import chromium, shown, wait
from tests.services import ROOT, Stack, running_stack, wait_for, wait_for_status

T = TypeVar("T")

pytestmark = pytest.mark.slow

SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("dashboard"), auth="true") as running:
        yield running


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    return stack.token("alice")


@pytest.fixture(scope="module")
def browser(stack: Stack, token: str) -> Iterator[WebDriver]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        browser.get(stack.url + "/")
        field = wait(browser, lambda b: shown(b, "#token"))
        field.send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        wait(browser, lambda b: shown(b, "#experiments"))
        yield browser


def _read(browser: WebDriver, read: Callable[[WebDriver], T]) -> T:
    """``read(browser)``, read again if the page re-rendered what it was reading meanwhile (a
    refresh or an event replaced the rows)."""
    return wait(browser, lambda b: (read(b),), 10)[0]


def _attributes(browser: WebDriver, selector: str, name: str) -> list[str]:
    """Attribute ``name`` of every element ``selector`` finds."""
    return [found.get_attribute(name) for found in browser.find_elements(By.CSS_SELECTOR, selector)]


def _epochs_listed(browser: WebDriver) -> list[str]:
    return _attributes(browser, "#history tr", "data-epoch")


def _cells(browser: WebDriver, selector: str) -> list[str]:
    """The text of every element ``selector`` finds."""
    return [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, selector)]


def _field(browser: WebDriver, path: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, f'[data-path="{path}"]')


def _set(browser: WebDriver, path: str, value: str) -> None:
    field = _field(browser, path)
    field.clear()
    field.send_keys(value)


def _shot(browser: WebDriver, name: str) -> Path:
    path = SCREENSHOTS / f"{name}.png"
    assert browser.save_screenshot(str(path))
    return path


def test_a_bad_field_is_marked_and_named(browser: WebDriver) -> None:
    browser.get(browser.current_url.split("#")[0] + "#/submit")
    wait(browser, lambda b: shown(b, 'input[data-path="training.epochs"]'))
    dataset = Select(_field(browser, "dataset.name")).first_selected_option.text
    assert "not on this server" not in dataset  # the preset names cifar10, absent here
    _set(browser, "training.epochs", "0")
    browser.find_element(By.ID, "submit").click()
    error = wait(browser, lambda b: shown(b, "#errors .error"))
    assert "training.epochs" in error.text
    assert "invalid" in _field(browser, "training.epochs").get_attribute("class")
    _shot(browser, "submit-form-error")


def test_the_submit_form_suits_epochs_and_batch_size_to_the_dataset(browser: WebDriver) -> None:
    _open(browser, "#/submit")
    wait(browser, lambda b: shown(b, 'input[data-path="training.epochs"]'))

    def training() -> tuple[str, str]:
        return tuple(  # type: ignore[return-value]
            _field(browser, f"training.{key}").get_attribute("value")
            for key in ("epochs", "batch_size")
        )

    dataset = Select(_field(browser, "dataset.name"))
    assert dataset.first_selected_option.get_attribute("value") == "digits"  # cifar10 is absent
    assert training() == ("20", "64")
    dataset.select_by_value("cifar10")
    assert training() == ("50", "1024")  # the preset's, the chapter's
    dataset.select_by_value("digits")
    assert training() == ("20", "64")
    Select(browser.find_element(By.ID, "preset")).select_by_value("dropout")
    wait(browser, lambda b: _field(b, "model.dropout").get_attribute("value") != "0")
    assert training() == ("20", "64")


def test_submit_from_the_form_watch_epochs_arrive_then_cancel(browser: WebDriver) -> None:
    browser.get(browser.current_url.split("#")[0] + "#/submit")
    wait(browser, lambda b: shown(b, "#preset"))
    Select(browser.find_element(By.ID, "preset")).select_by_value("dropout")
    wait(browser, lambda b: _field(b, "model.dropout").get_attribute("value") != "0")
    Select(
        browser.find_element(By.CSS_SELECTOR, 'select[data-path="dataset.name"]')
    ).select_by_value("digits")
    _set(browser, "training.epochs", "40")
    _set(browser, "training.batch_size", "8")
    browser.find_element(By.ID, "name").send_keys("dropout on digits, from the browser")
    browser.find_element(By.ID, "submit").click()

    wait(browser, lambda b: "#/experiments/" in b.current_url)
    browser.execute_script("window.sameDocument = true")  # gone if the page reloads
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history tr")) >= 1, 120)
    wait(browser, lambda b: _charted(b, "plot") >= 1)
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history tr")) >= 3, 120)
    assert browser.execute_script("return window.sameDocument") is True
    wait(browser, lambda b: _charted(b, "plot") >= 3, 10)  # the curves grew in place
    assert shown(browser, "#status [data-status=running]")
    epochs = _read(browser, _epochs_listed)
    assert epochs[:3] == ["1", "2", "3"]
    _shot(browser, "experiment-live")

    browser.find_element(By.ID, "cancel").click()
    wait(browser, lambda b: shown(b, "#status [data-status=cancelled]"), 30)
    assert not shown(browser, "#cancel")
    assert browser.execute_script("return window.sameDocument") is True
    _shot(browser, "experiment-cancelled")

    browser.find_element(By.LINK_TEXT, "Experiments").click()
    row = wait(browser, lambda b: shown(b, "#experiments tbody tr"))
    assert row.find_element(By.TAG_NAME, "a").text == "dropout on digits, from the browser"
    assert row.find_element(By.CSS_SELECTOR, "[data-status]").text == "cancelled"
    _shot(browser, "experiments")


def test_a_study_page_shows_its_table_and_overlaid_curves(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    body = {
        "name": "dropout against base",
        "presets": ["base", "dropout"],
        "dataset": {"name": "digits"},
        "training": {"epochs": 2},
    }
    with stack.client(token) as client:
        study = client.post("/studies", json=body).json()
        for experiment_id in study["experiment_ids"]:
            wait_for_status(client, experiment_id, {"succeeded", "failed", "cancelled"})
    browser.get(browser.current_url.split("#")[0] + "#/studies")
    wait(browser, lambda b: shown(b, "#studies a")).click()
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#study-table tbody tr")) == 2)
    assert _read(browser, lambda b: _cells(b, "#study-table tbody tr td:first-child")) == [
        "base",
        "dropout",
    ]
    epochs_run = _read(browser, lambda b: _cells(b, '#study-table [data-column="epochs_run"]'))
    assert epochs_run == ["2.0", "2.0"]
    best = _read(browser, lambda b: _cells(b, '#study-table [data-column="best_val_accuracy"]'))
    assert all(0 < float(cell) <= 1 for cell in best)
    runs = _read(browser, lambda b: _attributes(b, "#study-experiments tbody tr", "data-id"))
    assert set(runs) == set(study["experiment_ids"])
    wait(browser, lambda b: _series_names(b, "study-plot") == {"base", "dropout"})
    _shot(browser, "study")


def test_tags_and_notes_are_edited_and_the_list_filtered_by_them(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    run = {"preset": "sgd", "dataset": {"name": "digits"}, "training": {"epochs": 1}}
    with stack.client(token) as client:
        tagged = client.post("/experiments", json=run | {"name": "tagged in the browser"}).json()
        client.post("/experiments", json=run | {"name": "left untagged"})
    home = browser.current_url.split("#")[0]
    browser.get(home + f"#/experiments/{tagged['id']}")
    for tag in ("bn", "lr-sweep"):
        wait(browser, lambda b: shown(b, "#new-tag")).send_keys(tag)
        browser.find_element(By.CSS_SELECTOR, "#tag-form button[type=submit]").click()
        wait(browser, lambda b, tag=tag: shown(b, f'#tags [data-tag="{tag}"]'))
    browser.find_element(By.CSS_SELECTOR, '#tags [data-tag="lr-sweep"] .remove-tag').click()
    wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, '#tags [data-tag="lr-sweep"]'))
    browser.find_element(By.ID, "notes").send_keys("Try a lower rate.")
    browser.find_element(By.ID, "save-notes").click()
    try:
        wait(browser, lambda b: b.find_element(By.ID, "notes-saved").text == "Saved.")
    except TimeoutException:  # say what the page showed instead (a full run failed here once)
        _shot(browser, "notes-not-saved")
        said = browser.find_element(By.ID, "label-errors").text or "no error shown"
        raise AssertionError(f"the notes were not saved: {said}\n{stack.log_tail()}") from None
    _shot(browser, "experiment-tags-and-notes")
    with stack.client(token) as client:
        stored = client.get(f"/experiments/{tagged['id']}").json()
    assert (stored["tags"], stored["notes"]) == (["bn"], "Try a lower rate.")

    browser.get(home + "#/")
    wait(browser, lambda b: shown(b, "#tag-filter")).send_keys("bn")
    browser.find_element(By.ID, "text-filter").send_keys("LOWER")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    wait(browser, lambda b: "tag=bn" in b.current_url and "q=LOWER" in b.current_url)
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")) == 1)
    assert _read(browser, lambda b: _attributes(b, "#experiments tbody tr", "data-id")) == [
        tagged["id"]
    ]
    assert _read(browser, lambda b: _cells(b, "#experiments tbody tr td.tags")) == ["bn"]
    Select(browser.find_element(By.ID, "sort")).select_by_value("-final.val_accuracy")
    wait(
        browser, lambda b: "sort=-final.val_accuracy" in b.current_url and "tag=bn" in b.current_url
    )
    wait(browser, lambda b: shown(b, f'#experiments tr[data-id="{tagged["id"]}"]'))
    _shot(browser, "experiments-filtered")


def _open(browser: WebDriver, fragment: str) -> None:
    """Show the dashboard's page at ``fragment`` (``#/...``), rendered afresh: the page shown
    before is emptied first, so that nothing found afterwards is left over from it."""
    browser.execute_script("document.getElementById('page').replaceChildren()")
    url = browser.current_url.split("#")[0] + fragment
    if browser.current_url == url:
        browser.refresh()
    else:
        browser.get(url)


def _text(browser: WebDriver, selector: str) -> str | None:
    """The text of the first element ``selector`` finds (None if none), read afresh."""
    try:
        return str(browser.find_element(By.CSS_SELECTOR, selector).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


CHART_OPTION = """const element = document.getElementById(arguments[0]);
const chart = element && window.echarts.getInstanceByDom(element);
return chart ? chart.getOption() : null;"""


def _series_names(browser: WebDriver, chart_id: str) -> set[str]:
    """The names of the series an interactive chart (api/ui/charts.js) draws."""
    option = browser.execute_script(CHART_OPTION, chart_id) or {}
    return {series["name"] for series in option.get("series", [])}


def _charted(browser: WebDriver, chart_id: str) -> int:
    """How many epochs the chart's curves hold (the longest series'; 0 before it is drawn)."""
    option = browser.execute_script(CHART_OPTION, chart_id) or {}
    return max((len(series["data"]) for series in option.get("series", [])), default=0)


def _finished(client: httpx.Client, *ids: str) -> list[dict[str, Any]]:
    return [wait_for_status(client, key, {"succeeded", "failed", "cancelled"}) for key in ids]


SMALL_RUN = {
    "preset": "base",
    "dataset": {"name": "digits", "train_size": 300},
    "training": {"epochs": 2, "batch_size": 64},
}


def test_three_runs_ticked_in_the_list_are_compared(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    with stack.client(token) as client:
        runs = [
            client.post(
                "/experiments",
                json=SMALL_RUN
                | ({"name": f"compare-me lr {rate}"} if rate < 0.01 else {})
                | {"optimizer": {"learning_rate": rate}},
            ).json()
            for rate in (0.01, 0.003, 0.001)
        ]
        client.patch(f"/experiments/{runs[0]['id']}", json={"notes": "compare-me"})  # unnamed
        _finished(client, *(run["id"] for run in runs))
        plot = client.get("/compare/plot.svg", params={"ids": ",".join(r["id"] for r in runs)})
    _open(browser, "#/?q=compare-me")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")) == 3)
    compare = browser.find_element(By.ID, "compare")
    rows = browser.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")
    listed = [
        (row.get_attribute("data-id"), row.find_element(By.TAG_NAME, "a").text) for row in rows
    ]
    assert {key for key, _ in listed} == {run["id"] for run in runs}
    for count, row in enumerate(rows, start=1):
        assert compare.is_enabled() == (count > 2)
        row.find_element(By.CSS_SELECTOR, "input.pick").click()
    assert compare.is_enabled()
    _shot(browser, "experiments-ticked")
    compare.click()

    wait(browser, lambda b: "#/compare?ids=" in b.current_url)
    assert browser.current_url.split("ids=")[1].split(",") == [key for key, _ in listed]
    table = wait(browser, lambda b: shown(b, "#compare-table table"))
    cells = table.find_elements(By.CSS_SELECTOR, "tbody tr td:first-child a")
    unnamed = f"base {runs[0]['id'][:8]}"  # the first run: its preset and short id
    assert [(cell.get_attribute("href").split("#")[1], cell.text) for cell in cells] == [
        (f"/experiments/{key}", name if key != runs[0]["id"] else unnamed) for key, name in listed
    ]
    assert f">{unnamed}<" in plot.text and runs[0]["id"] not in plot.text
    legend, panels = _top(plot.text, "legend_1"), _bottom(plot.text, "axes_1")
    assert legend > panels  # below the panels (SVG's y grows downwards): not over the title
    epochs_run = table.find_elements(By.CSS_SELECTOR, '[data-column="epochs_run"]')
    assert [cell.text for cell in epochs_run] == ["2.0"] * 3
    drawn = {unnamed} | {name for key, name in listed if key != runs[0]["id"]}
    wait(browser, lambda b: _series_names(b, "compare-plot") == drawn)
    _shot(browser, "compare")
    cells[1].click()
    wait(browser, lambda b: b.current_url.endswith(f"#/experiments/{listed[1][0]}"))
    wait(browser, lambda b: _text(b, "h1") == listed[1][1])


def _top(svg: str, group: str) -> float:
    """The smallest y of the first path drawn in the SVG group ``group`` (its frame)."""
    return min(_path_ys(svg, group))


def _bottom(svg: str, group: str) -> float:
    return max(_path_ys(svg, group))


def _path_ys(svg: str, group: str) -> list[float]:
    path = re.search(rf'<g id="{group}">.*?<path d="([^"]+)"', svg, re.DOTALL)
    assert path, group
    numbers = [float(number) for number in re.findall(r"-?\d+(?:\.\d+)?", path.group(1))]
    return numbers[1::2]


def test_the_rate_chart_is_shown_only_for_a_changing_rate(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    halving = {"lr_schedule": {"type": "step", "every": 1, "factor": 0.5}}
    with stack.client(token) as client:
        constant, stepped = (
            client.post("/experiments", json=SMALL_RUN | extra).json()
            for extra in ({}, {"training": SMALL_RUN["training"] | halving})
        )
        _finished(client, constant["id"], stepped["id"])
    for run, drawn in ((stepped, True), (constant, False)):
        _open(browser, f"#/experiments/{run['id']}")
        wait(browser, lambda b: len(_epochs_listed(b)) == 2)
        rates = _read(browser, lambda b: _cells(b, "#history tr td:last-child"))
        assert (len(set(rates)) == 2) == drawn, rates
        chart = browser.find_element(By.ID, "learning-rate")
        assert chart.is_displayed() == drawn
        if drawn:
            assert _text(browser, "#learning-rate-range") == (
                "Epoch 1: 0.00100; epoch 2: 0.000500; highest 0.00100."
            )


def test_rerun_with_changes_records_its_parent(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    with stack.client(token) as client:
        parent = client.post("/experiments", json=SMALL_RUN | {"name": "the parent"}).json()
        _finished(client, parent["id"])
    _open(browser, f"#/experiments/{parent['id']}")
    wait(browser, lambda b: shown(b, "#rerun")).click()
    wait(browser, lambda b: b.current_url.endswith(f"#/submit?from={parent['id']}"))
    rerun_of = wait(browser, lambda b: shown(b, "#rerun-of"))
    assert "the parent" in rerun_of.text
    assert not browser.find_elements(By.ID, "preset")  # the parent's spec, not a preset's
    assert _field(browser, "dataset.train_size").get_attribute("value") == "300"
    _set(browser, "optimizer.learning_rate", "0.01")
    _shot(browser, "rerun-form")
    browser.find_element(By.ID, "submit").click()

    wait(browser, lambda b: parent["id"] not in b.current_url.split("#")[1])
    child_id = browser.current_url.split("#/experiments/")[1]
    link = wait(browser, lambda b: shown(b, "#parent a"))
    assert (link.text, link.get_attribute("href").split("#")[1]) == (
        "the parent",
        f"/experiments/{parent['id']}",
    )
    _shot(browser, "rerun")
    with stack.client(token) as client:
        child = client.get(f"/experiments/{child_id}").json()
        _finished(client, child_id)
    assert child["parent_id"] == parent["id"]
    assert child["spec"]["optimizer"]["learning_rate"] == 0.01
    assert parent["spec"]["optimizer"]["learning_rate"] != 0.01
    assert child["spec"]["dataset"] == parent["spec"]["dataset"]  # the rest as the parent's


def test_continue_trains_on_after_the_parents_epochs(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    with stack.client(token) as client:
        parent = client.post("/experiments", json=SMALL_RUN | {"name": "to continue"}).json()
        _finished(client, parent["id"])
    _open(browser, f"#/experiments/{parent['id']}")
    epochs = wait(browser, lambda b: shown(b, "#continue-epochs"))
    assert epochs.get_attribute("value") == "10"
    epochs.clear()
    epochs.send_keys("1")
    browser.find_element(By.ID, "continue").click()
    wait(browser, lambda b: parent["id"] not in b.current_url)
    wait(browser, lambda b: shown(b, "#parent a"))
    wait(browser, lambda b: shown(b, "#status [data-status=succeeded]"), 120)
    child_id = browser.current_url.split("#/experiments/")[1]
    _open(browser, f"#/experiments/{child_id}")  # afresh: the plot drawn once, finished
    wait(browser, lambda b: _text(b, "#parent") == "to continue")
    epochs_shown = _read(browser, _epochs_listed)
    assert epochs_shown == ["3"]
    wait(browser, lambda b: _charted(b, "plot") == 3)  # the parent's two epochs, then its own
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map((entry) => entry.name)"
    )
    assert any(f"/experiments/{child_id}/history?lineage=true" in url for url in fetched)
    _shot(browser, "continued")


def test_pause_then_resume_and_the_run_succeeds(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    run = {
        "preset": "base",
        "name": "paused in the browser",
        "dataset": {"name": "digits"},
        "training": {"epochs": 6, "batch_size": 8},
    }
    with stack.client(token) as client:
        experiment = client.post("/experiments", json=run).json()
    _open(browser, f"#/experiments/{experiment['id']}")
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history tr")) >= 1, 120)
    wait(browser, lambda b: shown(b, "#status [data-status=running]"))
    assert "Latest test accuracy" in _read(browser, lambda b: _cells(b, ".facts"))[0]
    assert not shown(browser, "#resume")
    browser.find_element(By.ID, "pause").click()

    wait(browser, lambda b: shown(b, "#status [data-status=paused]"), 60)
    assert shown(browser, "#resume") and shown(browser, "#cancel")
    assert not shown(browser, "#pause")
    badge = browser.find_element(By.CSS_SELECTOR, "#status [data-status=paused]")
    assert badge.value_of_css_property("color") != "rgba(29, 35, 48, 1)"  # its own colour
    _shot(browser, "experiment-paused")
    with stack.client(token) as client:
        paused = client.get(f"/experiments/{experiment['id']}").json()
    assert paused["status"] == "paused" and paused["epochs_done"] < 6

    browser.find_element(By.ID, "resume").click()
    wait(browser, lambda b: not shown(b, "#status [data-status=paused]"), 30)
    wait(browser, lambda b: shown(b, "#status [data-status=succeeded]"), 180)
    epochs = _read(browser, _epochs_listed)
    assert epochs == ["1", "2", "3", "4", "5", "6"]
    assert "Final test accuracy" in _read(browser, lambda b: _cells(b, ".facts"))[0]
    wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#per-class tbody tr"))
    classes = _read(browser, lambda b: _cells(b, "#per-class tbody tr td:first-child"))
    assert classes == [str(d) for d in range(10)]
    wait(browser, lambda b: _charted(b, "confusion") == 100)  # a heat map of 10 x 10 cells
    _shot(browser, "experiment-resumed-and-evaluated")


def test_a_queued_run_shows_its_place_in_line(browser: WebDriver, stack: Stack, token: str) -> None:
    long = {"dataset": {"name": "digits"}, "training": {"epochs": 200, "batch_size": 8}}
    with stack.client(token) as client:
        busy = client.post("/experiments", json={**long, "name": "keeps the worker busy"}).json()
        wait_for_status(client, busy["id"], {"running"})
        waiting = client.post("/experiments", json={**long, "name": "waits its turn"}).json()
        _open(browser, f"#/experiments/{waiting['id']}")
        note = wait(browser, lambda b: shown(b, "#status .queue"))
        assert note.get_attribute("data-position") == "1" and "#1 in line" in note.text
        assert note.get_attribute("data-workers") == "1" and "no worker" not in note.text
        _open(browser, "#/experiments")
        row = wait(browser, lambda b: shown(b, f'tr[data-id="{waiting["id"]}"] .queue'))
        assert "#1 in line" in row.text
        assert not browser.find_elements(By.CSS_SELECTOR, f'tr[data-id="{busy["id"]}"] .queue')
        _shot(browser, "queue-place")
        for run in (waiting, busy):
            client.post(f"/experiments/{run['id']}/cancel")
        wait_for_status(client, busy["id"], {"cancelled"})


def test_a_queued_run_without_a_worker_says_that_none_is_running(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0) as stack, chromium() as browser:
        with stack.client() as client:
            run = client.post("/experiments", json=SMALL_RUN).json()
        waiting = "#1 in line, but no worker is running: start one with make up"
        browser.get(f"{stack.url}/#/experiments/{run['id']}")
        note = wait(browser, lambda b: shown(b, "#status .queue"))
        assert (note.get_attribute("data-workers"), note.text.strip()) == ("0", waiting)
        _open(browser, "#/")
        row = wait(browser, lambda b: shown(b, f'tr[data-id="{run["id"]}"] .queue'))
        assert row.text.strip() == waiting
        _shot(browser, "queue-without-worker")


def test_a_failed_run_says_why_and_draws_no_plot(
    browser: WebDriver, stack: Stack, token: str
) -> None:
    with stack.client(token) as client:
        absent = [d["name"] for d in client.get("/datasets").json() if not d["available"]]
        if not absent:
            pytest.skip("every dataset is on this machine: none fails to load")
        run = {"preset": "base", "dataset": {"name": absent[0]}, "training": {"epochs": 1}}
        failed = client.post("/experiments", json=run).json()
        (ended,) = _finished(client, failed["id"])
    assert ended["status"] == "failed"
    _open(browser, f"#/experiments/{failed['id']}")
    error = wait(browser, lambda b: shown(b, "#run-error"))
    assert error.text == ended["error"]
    assert error.text.startswith(f"Dataset {absent[0]} is not available")
    assert shown(browser, "#no-plot").text == "No epoch finished, so there are no curves to draw."
    assert not shown(browser, "#plot") and _charted(browser, "plot") == 0
    assert not shown(browser, "#continue-form") and not shown(browser, "#download")
    _shot(browser, "experiment-failed")


def test_a_study_is_submitted_from_the_form(browser: WebDriver, stack: Stack, token: str) -> None:
    _open(browser, "#/submit")
    kind = Select(wait(browser, lambda b: shown(b, "#kind")))
    with stack.client(token) as client:
        available = {d["name"] for d in client.get("/datasets").json() if d["available"]}
        for name in ("template", "presets", "variants", "grid", "search"):
            kind.select_by_value(name)
            example = json.loads(browser.find_element(By.ID, "study-json").get_attribute("value"))
            assert name in example and example["dataset"]["name"] in available
            created = client.post("/studies", json=example)
            assert created.status_code == 201, (name, created.text)
            assert client.post(f"/studies/{created.json()['id']}/cancel").status_code == 202

    kind.select_by_value("presets")
    editor = browser.find_element(By.ID, "study-json")
    example = json.loads(editor.get_attribute("value"))
    assert example["presets"] == ["base", "dropout"]
    _type_json(browser, editor, example | {"training": {"epochs": 0}})
    browser.find_element(By.ID, "submit").click()
    error = wait(browser, lambda b: shown(b, "#errors .error"))
    assert "training.epochs" in error.text
    assert "invalid" in editor.get_attribute("class")
    _shot(browser, "submit-study-error")

    _type_json(browser, editor, example | {"training": {"epochs": 1, "batch_size": 64}})
    browser.find_element(By.ID, "name").send_keys("a study from the form")
    browser.find_element(By.ID, "submit").click()
    wait(browser, lambda b: "#/studies/" in b.current_url)
    wait(browser, lambda b: _text(b, "h1") == "a study from the form")
    study_id = browser.current_url.split("#/studies/")[1]
    wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#study-table tbody tr")) == 2)
    links = browser.find_elements(
        By.CSS_SELECTOR, "#study-experiments tbody tr a[href*=experiments]"
    )
    with stack.client(token) as client:
        study = client.get(f"/studies/{study_id}").json()
        assert {link.get_attribute("href").split("/")[-1] for link in links} == set(
            study["experiment_ids"]
        )
        _shot(browser, "study-from-the-form")
        client.post(f"/studies/{study_id}/cancel")


def _type_json(browser: WebDriver, editor: Any, body: dict[str, Any]) -> None:
    editor.clear()
    editor.send_keys(json.dumps(body))


def test_a_search_study_names_its_best_trial(browser: WebDriver, stack: Stack, token: str) -> None:
    space = {"optimizer.learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}
    body = {
        "name": "a small search",
        "dataset": {"name": "digits", "train_size": 200},
        "training": {"epochs": 1, "batch_size": 64},
        "search": {"space": space, "n_trials": 2, "pruner": {"type": "none"}},
    }
    with stack.client(token) as client:
        created = client.post("/studies", json=body).json()

        def ended() -> dict[str, Any] | None:
            found: dict[str, Any] = client.get(f"/studies/{created['id']}").json()
            return found if found["status"] in {"succeeded", "failed", "cancelled"} else None

        study = wait_for(ended, timeout=120, what="the search to end")
    best = study["best_trial"]
    _open(browser, f"#/studies/{study['id']}")
    trial = wait(browser, lambda b: shown(b, "#best-trial p"))
    assert trial.text.startswith(f"Trial {best['number']} scored {best['value']:.3f}")
    link = trial.find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link.endswith(f"#/experiments/{best['experiment_id']}")
    params = browser.find_elements(By.CSS_SELECTOR, "#best-trial dl > *")
    rate = best["params"]["optimizer.learning_rate"]
    assert [param.text for param in params] == ["optimizer.learning_rate", f"{rate:.3g}"]
    _shot(browser, "search-study")
