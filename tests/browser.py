"""Debian's headless chromium driven by selenium, and waits that survive a page re-rendering
what they read (an event replacing a status badge between finding and reading it)."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.services import missing


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless chromium, quit on exit."""
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if binary is None or driver is None:
        missing("Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(binary)
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1300,1100"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service(str(driver)), options=options)
    try:
        yield browser
    finally:
        browser.quit()


def wait(browser: WebDriver, condition: Any, timeout: float = 60) -> Any:
    """Poll ``condition`` until truthy; an element the page re-rendered between finding and
    reading it is looked for again at the next poll."""
    waiting = WebDriverWait(
        browser, timeout, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,)
    )
    return waiting.until(condition)


def shown(browser: WebDriver, selector: str) -> Any:
    """The first element ``selector`` finds if it is displayed, else False; one the page
    re-rendered between finding and reading it is looked for again, up to four times."""
    for _ in range(4):
        try:
            return _first_displayed(browser, selector)
        except StaleElementReferenceException:
            continue
    return _first_displayed(browser, selector)


def _first_displayed(browser: WebDriver, selector: str) -> Any:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return found[0] if found and found[0].is_displayed() else False


def text(browser: WebDriver, selector: str, timeout: float = 120) -> str:
    """The text of the first element ``selector`` finds, once one is displayed."""
    found: str = wait(browser, lambda b: (element := shown(b, selector)) and element.text, timeout)
    return found
