"""Fixtures: an in-process app on a fresh SQLite database and broker, per test; a migrated
database of each kind; the logs of a failed test's running stacks in its report."""

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.main import create_app
from core.config import Settings
from store.db import get_engine, migrate
from tests.services import Stack, Trainer, postgres_database


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings on a SQLite file; on a fresh PostgreSQL database where a test parametrizes it
    indirectly with "postgresql"."""
    if getattr(request, "param", "sqlite") == "postgresql":
        with postgres_database() as url:
            yield Settings(home=tmp_path, database_url=url)
        return
    yield Settings(home=tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def trainer(settings: Settings, client: TestClient) -> Trainer:
    return Trainer(settings)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh migrated database: SQLite, then PostgreSQL."""
    if request.param == "sqlite":
        engine = get_engine(Settings(home=tmp_path).resolved_database_url)
        migrate(engine)
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = get_engine(url)
        migrate(engine)
        yield engine
        engine.dispose()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    """A failed test that used a running stack reports its processes' logs (CI keeps nothing
    else of them)."""
    report: pytest.TestReport = yield
    if report.failed:
        for value in getattr(item, "funcargs", {}).values():
            for stack in value if isinstance(value, tuple) else (value,):
                if isinstance(stack, Stack):
                    report.sections.append(("the stack's logs", stack.log_tail()))
    return report


DURATIONS = Path(__file__).with_name("durations.json")
"""Seconds each test file took in a full run (``scripts/durations.py --write``)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heaviest files first, so that the two processes, each taking the next file as it
    finishes one, end together; a file not measured yet counts as heavy."""
    seconds: dict[str, float] = json.loads(DURATIONS.read_text()) if DURATIONS.exists() else {}
    heaviest = max(seconds.values(), default=0.0)
    items.sort(key=lambda item: -seconds.get(item.path.name, heaviest))


@pytest.fixture(autouse=True)
def _process(record_property: Callable[[str, object], None], worker_id: str) -> None:
    """Which pytest process ran the test, in the JUnit XML (``scripts/durations.py``)."""
    record_property("process", worker_id)
