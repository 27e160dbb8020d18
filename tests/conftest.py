"""Fixtures: an in-process app on a fresh SQLite database and broker, per test."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import Settings
from tests.services import Trainer


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture
def trainer(settings: Settings, client: TestClient) -> Trainer:
    return Trainer(settings)
