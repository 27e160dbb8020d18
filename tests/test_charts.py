"""The dashboard's interactive charts (api/ui/charts.js, Apache ECharts) in headless chromium
against a real API and worker training on digits: hovering, the legend, zoom, smoothing and
the log scale of the curves; a grid study's parallel coordinates and best value so far; the
confusion matrix's heat map. Charts are read through ECharts' own API, never by pixels."""

import json
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import chromium, shown, wait
from tests.services import Stack, running_stack, wait_for, wait_for_status

pytestmark = pytest.mark.slow

ENDED = {"succeeded", "failed", "cancelled"}
RUN = {
    "preset": "base",
    "dataset": {"name": "digits", "train_size": 300},
    "training": {"epochs": 3, "batch_size": 64},
}
OPTION = """const element = document.getElementById(arguments[0]);
const chart = element && echarts.getInstanceByDom(element);
return chart ? chart.getOption() : null;"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("charts")) as running:
        yield running


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[WebDriver]:
    with chromium() as browser:
        browser.get(stack.url + "/")
        yield browser


@pytest.fixture(scope="module")
def run(stack: Stack) -> dict[str, Any]:
    """A finished three-epoch run on digits, with its history and evaluation."""
    with stack.client() as client:
        created = client.post("/experiments", json=RUN | {"name": "charted"}).json()
        ended = wait_for_status(client, created["id"], ENDED)
        assert ended["status"] == "succeeded", ended["error"]
        history = client.get(f"/experiments/{created['id']}/history").json()["epochs"]
        evaluation = client.get(f"/experiments/{created['id']}/evaluation").json()
    return {"id": created["id"], "history": history, "evaluation": evaluation}


def _open(browser: WebDriver, stack: Stack, fragment: str) -> None:
    """The dashboard at ``fragment``, in a fresh document (no chart left from before)."""
    browser.get("about:blank")
    browser.get(f"{stack.url}/{fragment}")


def _option(browser: WebDriver, element_id: str) -> Any:
    return browser.execute_script(OPTION, element_id)


def _drawn(browser: WebDriver, element_id: str, points: int) -> Any:
    """The chart's option once each of its series holds ``points`` points."""

    def ready(b: WebDriver) -> Any:
        found = _option(b, element_id)
        series = (found or {}).get("series") or []
        return found if series and all(len(s["data"]) == points for s in series) else None

    return wait(browser, ready)


def _hover(browser: WebDriver, element_id: str, panel: int, epoch: float) -> str:
    """Move the mouse over ``epoch`` of the panel, halfway up its curves; the tooltip's text
    (an epoch inside the panel: the first and last lie on its edges)."""
    x, y = browser.execute_script(
        """const chart = echarts.getInstanceByDom(document.getElementById(arguments[0]));
        const values = chart.getOption().series.filter((s) => s.yAxisIndex === arguments[1])
          .flatMap((s) => s.data.map((point) => point[1]));
        const middle = (Math.min(...values) + Math.max(...values)) / 2;
        return chart.convertToPixel({ xAxisIndex: arguments[1], yAxisIndex: arguments[1] },
          [arguments[2], middle]);""",
        element_id,
        panel,
        epoch,
    )
    chart = browser.find_element(By.ID, element_id)
    size = chart.size
    ActionChains(browser).move_to_element_with_offset(
        chart, int(x - size["width"] / 2), int(y - size["height"] / 2)
    ).perform()
    tip: str = wait(browser, lambda b: (found := shown(b, ".chart-tip")) and found.text, 10)
    return tip


def _shown(value: float) -> str:
    """A value as the tooltip writes it: four significant digits, no trailing zeros."""
    return f"{float(f'{value:.4g}'):g}" if abs(value) >= 1e-4 else f"{value:.4g}"


def test_hovering_a_curve_shows_each_series_value_at_that_epoch(
    browser: WebDriver, stack: Stack, run: dict[str, Any]
) -> None:
    _open(browser, stack, f"#/experiments/{run['id']}")
    _drawn(browser, "plot", 3)
    second = run["history"][1]
    tip = _hover(browser, "plot", 0, 2)
    lines = tip.splitlines()
    assert lines[0] == "Epoch 2"
    for metric in ("accuracy", "val_accuracy", "loss", "val_loss"):
        assert f"{metric}: {_shown(second[metric])}" in lines, (metric, lines)


def test_a_series_hidden_from_the_legend_leaves_the_chart(
    browser: WebDriver, stack: Stack, run: dict[str, Any]
) -> None:
    _open(browser, stack, f"#/experiments/{run['id']}")
    _drawn(browser, "plot", 3)
    entry = "//*[@id='plot']//*[name()='text' and text()='val_loss']"

    def hidden(b: WebDriver) -> bool:
        """Whether val_loss is hidden, clicking its legend entry if not (again if the page
        drew the chart anew between finding the entry and clicking it)."""
        if _option(b, "plot")["legend"][0]["selected"].get("val_loss") is False:
            return True
        b.find_element(By.XPATH, entry).click()
        return False

    wait(browser, hidden)
    second = run["history"][1]
    lines = _hover(browser, "plot", 1, 2).splitlines()
    assert lines[0] == "Epoch 2"
    assert f"loss: {_shown(second['loss'])}" in lines
    assert not [line for line in lines if line.startswith("val_loss")], lines


def test_the_curves_zoom_smooth_and_take_a_log_scale(
    browser: WebDriver, stack: Stack, run: dict[str, Any]
) -> None:
    _open(browser, stack, f"#/experiments/{run['id']}")
    raw = _drawn(browser, "plot", 3)["series"]
    browser.find_element(By.ID, "plot-log").click()
    wait(browser, lambda b: _option(b, "plot")["yAxis"][1]["type"] == "log")
    assert _option(browser, "plot")["yAxis"][0]["type"] == "value"  # accuracy stays linear
    slider = browser.find_element(By.ID, "plot-smoothing")
    browser.execute_script(
        "arguments[0].value = 0.9; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    smoothed = wait(browser, lambda b: (s := _option(b, "plot")["series"]) != raw and s, timeout=10)
    for before, after in zip(raw, smoothed, strict=True):
        assert after["data"][0][1] == pytest.approx(before["data"][0][1])  # debiased start
        assert [point[2] for point in after["data"]] == [point[1] for point in before["data"]]
        assert [point[1] for point in after["data"]] != [point[1] for point in before["data"]]

    chart = browser.find_element(By.ID, "plot")
    x_from, x_to = (
        browser.execute_script(
            "return echarts.getInstanceByDom(arguments[0])"
            ".convertToPixel({xAxisIndex: 0}, arguments[1])",
            chart,
            epoch,
        )
        for epoch in (1.5, 2.5)
    )
    left_edge = (  # the epoch at the accuracy panel's left edge (CURVES_LEFT in charts.js)
        "return echarts.getInstanceByDom(arguments[0]).convertFromPixel({xAxisIndex: 0}, 60)"
    )
    assert browser.execute_script(left_edge, chart) == pytest.approx(1)
    ActionChains(browser).move_to_element_with_offset(
        chart, int(x_from - chart.size["width"] / 2), 0
    ).click_and_hold().move_by_offset(int(x_to - x_from), 20).release().perform()
    zoomed = wait(browser, lambda b: (x := b.execute_script(left_edge, chart)) > 1.2 and x)
    assert zoomed == pytest.approx(1.5, abs=0.1)


def test_a_grid_study_draws_a_line_per_finished_run_and_its_best_so_far(
    browser: WebDriver, stack: Stack
) -> None:
    body = {
        "name": "optimizer by batch norm",
        "dataset": {"name": "digits", "train_size": 300},
        "training": {"epochs": 2, "batch_size": 64},
        "grid": {"optimizer.name": ["sgd", "adam"], "model.batch_norm": [False, True]},
    }
    with stack.client() as client:
        study = client.post("/studies", json=body).json()
        *trained, dropped = study["experiment_ids"]
        assert client.post(f"/experiments/{dropped}/cancel").status_code == 202
        for key in study["experiment_ids"]:
            wait_for_status(client, key, ENDED)
        runs = client.get(f"/studies/{study['id']}/runs").json()
    finished = [r for r in runs["runs"] if r["status"] == "succeeded"]
    assert [r["experiment_id"] for r in finished] == trained
    assert runs["parameters"] == ["optimizer.name", "model.batch_norm"]

    _open(browser, stack, f"#/studies/{study['id']}")
    wait(
        browser,
        lambda b: (
            b.execute_script(
                "return document.getElementById('study-charts-parallel')?.dataset.lines"
            )
            == "3"
        ),
    )
    parallel = _option(browser, "study-charts-parallel")
    lines = parallel["series"][0]["data"]
    assert sorted(line["name"] for line in lines) == sorted(trained)
    by_id = {r["experiment_id"]: r for r in finished}
    for line in lines:
        run = by_id[line["name"]]
        params = [str(run["params"][key]).lower() for key in runs["parameters"]]
        assert line["value"] == [*params, run["value"]]
    assert [axis["name"] for axis in parallel["parallelAxis"]] == [
        "optimizer.name",
        "model.batch_norm",
        "val_accuracy",
    ]

    _brush_the_best(browser, finished)

    best = _option(browser, "study-charts-best")
    steps = next(s for s in best["series"] if s["id"] == "best")["data"]
    assert len(steps) == 3
    assert steps[-1][1] == pytest.approx(max(r["value"] for r in finished))
    assert all(a[1] <= b[1] for a, b in pairwise(steps))

    curves = _option(browser, "study-plot")["series"]
    assert sorted({s["name"] for s in curves}) == sorted({r["variant"] for r in finished})


def _brush_the_best(browser: WebDriver, finished: list[dict[str, Any]]) -> None:
    """Drag along the metric's axis (the last, from its lowest value at the bottom to its
    highest at the top) from above its top to the widest gap between values: the runs above
    the gap stay active."""
    values = sorted((run["value"] for run in finished), reverse=True)
    gap = max(range(len(values) - 1), key=lambda i: values[i] - values[i + 1])
    cut = (values[gap] + values[gap + 1]) / 2
    chart = browser.find_element(By.ID, "study-charts-parallel")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    width, height = chart.size["width"], chart.size["height"]
    top, bottom = 40, height - 30  # the parallel component's top and bottom in charts.js
    y_cut = top + (values[0] - cut) / (values[0] - values[-1]) * (bottom - top)
    x = width - 150  # its right edge, where the last axis stands
    ActionChains(browser).move_to_element_with_offset(
        chart, int(x - width / 2), int(top - 8 - height / 2)
    ).click_and_hold().move_by_offset(0, int(y_cut - top + 8)).release().perform()
    above = sorted(run["experiment_id"] for run in finished if run["value"] > cut)
    wait(browser, lambda b: json.loads(chart.get_attribute("data-brushed") or "[]") == above, 10)


def test_a_search_study_draws_its_trials_across_its_space(browser: WebDriver, stack: Stack) -> None:
    space = {"optimizer.learning_rate": {"type": "float", "low": 0.001, "high": 0.01, "log": True}}
    body = {
        "dataset": {"name": "digits", "train_size": 200},
        "training": {"epochs": 1, "batch_size": 64},
        "search": {"space": space, "n_trials": 2, "metric": "val_loss", "pruner": {"type": "none"}},
    }
    with stack.client() as client:
        study = client.post("/studies", json=body).json()
        wait_for(
            lambda: client.get(f"/studies/{study['id']}").json()["status"] in ENDED,
            timeout=180,
            what="the search to end",
        )
        runs = client.get(f"/studies/{study['id']}/runs").json()
        specs = {
            r["experiment_id"]: client.get(f"/experiments/{r['experiment_id']}").json()["spec"]
            for r in runs["runs"]
        }
    assert (runs["parameters"], runs["metric"], runs["direction"]) == (
        ["optimizer.learning_rate"],
        "val_loss",
        "minimize",
    )
    assert sorted(r["trial_number"] for r in runs["runs"]) == [0, 1]
    for run in runs["runs"]:
        rate = specs[run["experiment_id"]]["optimizer"]["learning_rate"]
        assert run["params"] == {"optimizer.learning_rate": rate}
        assert run["value"] == min(epoch["val_loss"] for epoch in run["epochs"])

    _open(browser, stack, f"#/studies/{study['id']}")
    wait(
        browser,
        lambda b: (
            b.execute_script(
                "return document.getElementById('study-charts-parallel')?.dataset.lines"
            )
            == "2"
        ),
    )
    axes = _option(browser, "study-charts-parallel")["parallelAxis"]
    assert [(axis["name"], axis["type"]) for axis in axes] == [
        ("optimizer.learning_rate", "value"),
        ("val_loss", "value"),
    ]
    best = _option(browser, "study-charts-best")["series"]
    steps = next(s for s in best if s["id"] == "best")["data"]
    assert steps[-1][1] == pytest.approx(min(r["value"] for r in runs["runs"]))


def test_the_confusion_matrix_is_a_heat_map(
    browser: WebDriver, stack: Stack, run: dict[str, Any]
) -> None:
    _open(browser, stack, f"#/experiments/{run['id']}")
    evaluation = run["evaluation"]
    classes = evaluation["classes"]
    wait(browser, lambda b: shown(b, "#confusion"))
    option = _drawn(browser, "confusion", len(classes) ** 2)
    assert option["series"][0]["type"] == "heatmap"
    assert option["xAxis"][0]["data"] == option["yAxis"][0]["data"] == classes
    cells = {(x, y): count for x, y, count in option["series"][0]["data"]}
    assert cells == {
        (predicted, actual): count
        for actual, row in enumerate(evaluation["confusion"])
        for predicted, count in enumerate(row)
    }


def test_the_page_loads_its_charts_without_breaking_its_policy(
    browser: WebDriver, stack: Stack, run: dict[str, Any], tmp_path: Path
) -> None:
    """Every script comes from the API itself (no CDN) and nothing is refused by the
    Content-Security-Policy (inline styles, say)."""
    _open(browser, stack, f"#/experiments/{run['id']}")
    _drawn(browser, "plot", 3)
    _hover(browser, "plot", 1, 2)
    scripts = browser.execute_script(
        "return [...document.scripts].map((s) => s.src).concat("
        "performance.getEntriesByType('resource').map((r) => r.name))"
    )
    assert scripts and all(url.startswith(stack.url) for url in scripts if url), scripts
    logged = browser.get_log("browser")  # type: ignore[attr-defined]  # chromium's own
    refused = [entry["message"] for entry in logged if "Content Security" in entry["message"]]
    assert not refused, refused
