"""The dashboard in a real headless browser (Debian's chromium, driven through its
chromedriver by selenium) against a real API with auth on and a real worker. Screenshots go
to test-artifacts/screenshots/."""

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.services import ROOT, Stack, missing, running_stack, wait_for_status

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
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or driver is None:
        missing("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1300,1100"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(driver)), options=options)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    try:
        browser.get(stack.url + "/")
        field = _wait(browser, lambda b: _shown(b, "#token"))
        field.send_keys(token)
        browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
        _wait(browser, lambda b: _shown(b, "#experiments"))
        yield browser
    finally:
        browser.quit()


def _wait(browser: WebDriver, condition: Any, timeout: float = 60) -> Any:
    return WebDriverWait(browser, timeout, poll_frequency=0.2).until(condition)


def _shown(browser: WebDriver, selector: str) -> Any:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found and found[0].is_displayed() else False


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
    _wait(browser, lambda b: _shown(b, 'input[data-path="training.epochs"]'))
    _set(browser, "training.epochs", "0")
    browser.find_element(By.ID, "submit").click()
    error = _wait(browser, lambda b: _shown(b, "#errors .error"))
    assert "training.epochs" in error.text
    assert "invalid" in _field(browser, "training.epochs").get_attribute("class")
    _shot(browser, "submit-form-error")


def test_submit_from_the_form_watch_epochs_arrive_then_cancel(browser: WebDriver) -> None:
    browser.get(browser.current_url.split("#")[0] + "#/submit")
    _wait(browser, lambda b: _shown(b, "#preset"))
    Select(browser.find_element(By.ID, "preset")).select_by_value("dropout")
    _wait(browser, lambda b: _field(b, "model.dropout").get_attribute("value") != "0")
    Select(
        browser.find_element(By.CSS_SELECTOR, 'select[data-path="dataset.name"]')
    ).select_by_value("digits")
    _set(browser, "training.epochs", "40")
    _set(browser, "training.batch_size", "8")
    browser.find_element(By.ID, "name").send_keys("dropout on digits, from the browser")
    browser.find_element(By.ID, "submit").click()

    _wait(browser, lambda b: "#/experiments/" in b.current_url)
    browser.execute_script("window.sameDocument = true")  # gone if the page reloads
    first_plot = _wait(browser, lambda b: b.find_element(By.ID, "plot").get_attribute("src"))
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history tr")) >= 1, 120)
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#history tr")) >= 3, 120)
    assert browser.execute_script("return window.sameDocument") is True
    assert browser.find_element(By.ID, "plot").get_attribute("src") != first_plot
    assert _shown(browser, "#status [data-status=running]")
    epochs = [
        row.get_attribute("data-epoch")
        for row in browser.find_elements(By.CSS_SELECTOR, "#history tr")
    ]
    assert epochs[:3] == ["1", "2", "3"]
    _shot(browser, "experiment-live")

    browser.find_element(By.ID, "cancel").click()
    _wait(browser, lambda b: _shown(b, "#status [data-status=cancelled]"), 30)
    assert not _shown(browser, "#cancel")
    assert browser.execute_script("return window.sameDocument") is True
    _shot(browser, "experiment-cancelled")

    browser.find_element(By.LINK_TEXT, "Experiments").click()
    row = _wait(browser, lambda b: _shown(b, "#experiments tbody tr"))
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
    _wait(browser, lambda b: _shown(b, "#studies a")).click()
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#study-table tbody tr")) == 2)
    rows = browser.find_elements(By.CSS_SELECTOR, "#study-table tbody tr")
    assert [row.find_element(By.TAG_NAME, "td").text for row in rows] == ["base", "dropout"]
    _wait(
        browser,
        lambda b: b.execute_script("return document.getElementById('study-plot').naturalWidth") > 0,
    )
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
        _wait(browser, lambda b: _shown(b, "#new-tag")).send_keys(tag)
        browser.find_element(By.CSS_SELECTOR, "#tag-form button[type=submit]").click()
        _wait(browser, lambda b, tag=tag: _shown(b, f'#tags [data-tag="{tag}"]'))
    browser.find_element(By.CSS_SELECTOR, '#tags [data-tag="lr-sweep"] .remove-tag').click()
    _wait(browser, lambda b: not b.find_elements(By.CSS_SELECTOR, '#tags [data-tag="lr-sweep"]'))
    browser.find_element(By.ID, "notes").send_keys("Try a lower rate.")
    browser.find_element(By.ID, "save-notes").click()
    _wait(browser, lambda b: b.find_element(By.ID, "notes-saved").text == "Saved.")
    _shot(browser, "experiment-tags-and-notes")
    with stack.client(token) as client:
        stored = client.get(f"/experiments/{tagged['id']}").json()
    assert (stored["tags"], stored["notes"]) == (["bn"], "Try a lower rate.")

    browser.get(home + "#/")
    _wait(browser, lambda b: _shown(b, "#tag-filter")).send_keys("bn")
    browser.find_element(By.ID, "text-filter").send_keys("LOWER")
    browser.find_element(By.CSS_SELECTOR, "#filters button[type=submit]").click()
    _wait(browser, lambda b: "tag=bn" in b.current_url and "q=LOWER" in b.current_url)
    _wait(browser, lambda b: len(b.find_elements(By.CSS_SELECTOR, "#experiments tbody tr")) == 1)
    row = browser.find_element(By.CSS_SELECTOR, "#experiments tbody tr")
    assert row.get_attribute("data-id") == tagged["id"]
    assert row.find_element(By.CSS_SELECTOR, "td.tags").text == "bn"
    Select(browser.find_element(By.ID, "sort")).select_by_value("-final.val_accuracy")
    _wait(
        browser, lambda b: "sort=-final.val_accuracy" in b.current_url and "tag=bn" in b.current_url
    )
    _wait(browser, lambda b: _shown(b, f'#experiments tr[data-id="{tagged["id"]}"]'))
    _shot(browser, "experiments-filtered")
