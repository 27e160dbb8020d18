"""Migrations and writes on both databases: SQLite (embedded default) and PostgreSQL."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from sqlmodel import Session, SQLModel, select

from models.epochs import EpochMetrics
from models.presets import PRESETS
from models.status import Status
from store.db import MIGRATIONS, VERSION_TABLE, get_engine, migrate
from store.experiments import create_experiment
from store.runs import checkpoints, record_epoch
from store.tables import EpochRecord
from store.transitions import claim
from tests.services import postgres_database
from worker.leases import this_process


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'convlab.sqlite'}"
        return
    with postgres_database() as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = get_engine(database_url)
    yield engine
    engine.dispose()


def _migrate_concurrently(database_url: str, processes: int) -> list[int]:
    env = {**os.environ, "CONVLAB_DATABASE_URL": database_url}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "commands.migrate"], env=env, stderr=subprocess.PIPE
        )
        for _ in range(processes)
    ]
    return [process.wait(timeout=60) for process in started]


def test_migrations_build_exactly_the_declared_schema(engine: Engine) -> None:
    migrate(engine)
    migrate(engine)
    with engine.connect() as connection:
        assert (
            compare_metadata(
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
                SQLModel.metadata,
            )
            == []
        )
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert connection.execute(
            text("SELECT version_num FROM convlab_alembic_version")
        ).all() == [(head,)]


def test_api_and_workers_may_migrate_at_the_same_time(database_url: str) -> None:
    assert _migrate_concurrently(database_url, 3) == [0, 0, 0]
    fresh = create_engine(database_url)
    with fresh.connect() as connection:
        assert (
            compare_metadata(
                MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}),
                SQLModel.metadata,
            )
            == []
        )
    fresh.dispose()


def test_epochs_upsert_to_one_row_per_epoch(engine: Engine) -> None:
    migrate(engine)
    with Session(engine) as session:
        experiment_id = create_experiment(
            session, name=None, spec=PRESETS["base"].spec.model_dump(mode="json")
        ).id
        session.commit()
    owner = this_process()
    claimed = claim(engine, experiment_id, owner, lease_seconds=60, max_lost=3)
    assert claimed is not None
    assert (claimed.experiment.status, claimed.experiment.attempts) == (Status.running, 1)
    assert claim(engine, experiment_id, "elsewhere/1/1", lease_seconds=60, max_lost=3) is None
    for epoch, accuracy in [(1, 0.1), (1, 0.2), (2, 0.5)]:
        metrics = EpochMetrics(epoch, 2.0, accuracy, 2.1, 0.3, 1.0)
        record_epoch(engine, experiment_id, owner, metrics, checkpoint=b"w", lease_seconds=60)
    with Session(engine) as session:
        rows = session.exec(select(EpochRecord).order_by(EpochRecord.epoch)).all()
    assert [(row.epoch, row.accuracy) for row in rows] == [(1, 0.2), (2, 0.5)]
    assert [epoch for epoch, _ in checkpoints(engine, experiment_id)] == [2, 1]


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'wal.sqlite'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30_000
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
