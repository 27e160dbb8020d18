"""The README's pictures of the dashboard's interactive charts, from a real search on digits.

Starts a private API and worker (tests/services.py), runs a 10-trial search of 8 epochs on
digits, opens its pages in headless chromium and writes docs/img/{curves,parallel,
best-so-far,heat-map}.png, each reduced to a 128-colour palette (well under 150 KB).

    .venv/bin/python scripts/screenshots.py [--out docs/img]
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from PIL import Image
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium, shown, wait  # noqa: E402
from tests.services import running_stack, wait_for  # noqa: E402

SEARCH = {
    "name": "learning rate and dropout on digits",
    "dataset": {"name": "digits"},
    "training": {"epochs": 8, "batch_size": 64},
    "search": {
        "space": {
            "optimizer.learning_rate": {"type": "float", "low": 0.0003, "high": 0.03, "log": True},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5},
            "optimizer.name": {"type": "categorical", "choices": ["adam", "sgd"]},
        },
        "n_trials": 10,
        "pruner": {"type": "none"},
    },
}
DRAWN = """const element = document.getElementById(arguments[0]);
const chart = element && echarts.getInstanceByDom(element);
return Boolean(chart && chart.getOption().series.length);"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as home, running_stack(Path(home)) as stack:
        with stack.client() as client:
            created = client.post("/studies", json=SEARCH)
            assert created.status_code == 201, created.text
            study_id = created.json()["id"]
            study = wait_for(
                lambda: _ended(client.get(f"/studies/{study_id}").json()),
                timeout=1200,
                what="the search",
            )
        best = study["best_trial"]["experiment_id"]
        with chromium() as browser:
            browser.set_window_size(1300, 1400)
            _page(browser, f"{stack.url}/#/studies/{study_id}", "study-charts-parallel")
            _save(browser, "study-charts-parallel", out / "parallel.png")
            _save(browser, "study-charts-best", out / "best-so-far.png")
            _page(browser, f"{stack.url}/#/experiments/{best}", "plot")
            _hover_middle(browser, "plot")
            _save(browser, "plot", out / "curves.png", around=True)
            _page(browser, f"{stack.url}/#/experiments/{best}", "confusion")
            _save(browser, "confusion", out / "heat-map.png")
    for path in sorted(out.glob("*.png")):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")


def _ended(study: dict[str, Any]) -> dict[str, Any] | None:
    return study if study["status"] in {"succeeded", "failed", "cancelled"} else None


def _page(browser: WebDriver, url: str, chart_id: str) -> None:
    browser.get("about:blank")
    browser.get(url)
    wait(browser, lambda b: b.execute_script(DRAWN, chart_id))
    browser.execute_script("document.getElementById(arguments[0]).scrollIntoView()", chart_id)


def _hover_middle(browser: WebDriver, chart_id: str) -> None:
    """The mouse over the middle of the chart's left panel, so that the tooltip shows."""
    chart = browser.find_element(By.ID, chart_id)
    ActionChains(browser).move_to_element_with_offset(chart, -chart.size["width"] // 4, 0).perform()
    wait(browser, lambda b: shown(b, ".chart-tip"))


def _save(browser: WebDriver, chart_id: str, path: Path, around: bool = False) -> None:
    """The chart (``around``: with its controls) as a 128-colour PNG."""
    element = browser.find_element(By.ID, chart_id)
    if around:
        element = element.find_element(By.XPATH, "..")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    element.screenshot(str(path))
    Image.open(path).convert("RGB").quantize(128).save(path, optimize=True)


if __name__ == "__main__":
    main()
