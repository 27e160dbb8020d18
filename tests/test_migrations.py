"""Migrations keep data: every step up and down leaves experiments, epochs and checkpoints."""

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text
from sqlmodel import Session

from models.epochs import EpochMetrics
from models.presets import PRESETS
from store.db import MIGRATIONS, downgrade, get_engine, migrate
from store.experiments import create_experiment
from store.runs import record_epoch
from store.tables import Study
from store.transitions import claim
from tests.services import postgres_database
from worker.leases import this_process

HISTORY = ("experiments", "epochs", "checkpoints")
CHECKPOINTS_SINCE = "0002"
"""The revision that creates ``checkpoints``: a floor below it drops them with their table."""


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = get_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
        yield engine
        engine.dispose()
        return
    with postgres_database() as url:
        engine = get_engine(url)
        yield engine
        engine.dispose()


def _revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory(str(MIGRATIONS))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def _record_history(engine: Engine, experiments: int = 2, epochs: int = 3) -> None:
    """Experiments trained for a few epochs, each epoch with its checkpoint (the newest two kept),
    written the way a worker writes them."""
    owner = this_process()
    for _ in range(experiments):
        with Session(engine) as session:
            experiment_id = create_experiment(
                session, name=None, spec=PRESETS["base"].spec.model_dump(mode="json")
            ).id
            session.commit()
        assert claim(engine, experiment_id, owner, lease_seconds=60, max_lost=3)
        for epoch in range(1, epochs + 1):
            metrics = EpochMetrics(epoch, 2.0, 0.1 * epoch, 2.1, 0.1 * epoch, 1.0)
            record_epoch(engine, experiment_id, owner, metrics, checkpoint=b"w", lease_seconds=60)


def _counts(engine: Engine, tables: tuple[str, ...]) -> dict[str, int]:
    with engine.connect() as connection:
        return {
            table: connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in tables
        }


def test_every_migration_step_keeps_the_history(engine: Engine) -> None:
    """Down to each floor and back up to head one revision at a time; the rows of every history
    table that exists throughout stay, counted after each step."""
    migrate(engine)
    _record_history(engine)
    before = _counts(engine, HISTORY)
    assert before == {"experiments": 2, "epochs": 6, "checkpoints": 4}
    revisions = _revisions()
    for floor, kept in ((CHECKPOINTS_SINCE, HISTORY), (revisions[0], HISTORY[:2])):
        below = revisions.index(floor)
        steps = [(downgrade, revision) for revision in reversed(revisions[below:-1])]
        steps += [(migrate, revision) for revision in revisions[below + 1 :]]
        for step, revision in steps:
            step(engine, revision)
            assert _counts(engine, kept) == {table: before[table] for table in kept}, (
                f"row counts changed by {step.__name__} to {revision}"
            )
    assert set(HISTORY) <= set(inspect(engine).get_table_names())


def test_migrate_leaves_foreign_keys_on_in_sqlite(tmp_path: Path) -> None:
    """A migration switches SQLite's foreign keys off only while it runs: the pooled connection
    it used cascades deletes again afterwards."""
    engine = get_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
    migrate(engine)
    _record_history(engine, experiments=1)
    downgrade(engine, _revisions()[-2])
    migrate(engine)
    with engine.begin() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar_one() == 1
        connection.execute(text("DELETE FROM experiments"))
    assert _counts(engine, HISTORY) == dict.fromkeys(HISTORY, 0)
    engine.dispose()


def test_migration_leaving_broken_references_fails_and_rolls_back_in_sqlite(
    tmp_path: Path,
) -> None:
    """An epoch whose experiment is missing after a migration fails it before the commit, and
    everything the migration did, its DDL included, is rolled back."""
    path = tmp_path / "convlab.sqlite"
    engine = get_engine(f"sqlite:///{path}")
    migrate(engine)
    with closing(sqlite3.connect(path)) as raw, raw:  # a plain connection: foreign keys off
        raw.execute(
            "INSERT INTO epochs (experiment_id, epoch, loss, accuracy, seconds, recorded_at)"
            " VALUES ('missing', 1, 2.0, 0.1, 1.0, '2026-01-01 00:00:00')"
        )
    tables = set(inspect(engine).get_table_names())
    with pytest.raises(RuntimeError, match="broke foreign keys"):
        downgrade(engine, _revisions()[-2])
    assert set(inspect(engine).get_table_names()) == tables
    with engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM convlab_alembic_version"))
        assert version.scalar_one() == _revisions()[-1]
    engine.dispose()


def test_rows_there_before_the_study_sequence_are_numbered_in_the_order_recorded(
    engine: Engine,
) -> None:
    """0008 numbers a study's epoch rows as a stream would have sent them; new rows go on."""
    migrate(engine)
    owner = this_process()
    with Session(engine) as session:
        study = Study(id="5" * 32, kind="presets", definition={}, seeds=[0])
        session.add(study)
        spec = PRESETS["base"].spec.model_dump(mode="json")
        ids = [
            create_experiment(session, name=None, spec=spec, study_id=study.id).id for _ in range(2)
        ]
        session.commit()
    for experiment_id in ids:
        assert claim(engine, experiment_id, owner, lease_seconds=60, max_lost=3)
    for epoch in (1, 2):
        for experiment_id in ids:  # interleaved, as two workers write
            metrics = EpochMetrics(epoch, 2.0, 0.5, 2.1, 0.5, 1.0)
            record_epoch(engine, experiment_id, owner, metrics, checkpoint=None, lease_seconds=60)
    numbered = "SELECT experiment_id, epoch, study_seq FROM epochs ORDER BY study_seq"
    with engine.connect() as connection:
        written = connection.execute(text(numbered)).all()
    assert [(key, epoch, seq) for key, epoch, seq in written] == [
        (ids[0], 1, 1),
        (ids[1], 1, 2),
        (ids[0], 2, 3),
        (ids[1], 2, 4),
    ]
    downgrade(engine, "0007")
    migrate(engine)
    with engine.connect() as connection:
        assert connection.execute(text(numbered)).all() == written
        counted = "SELECT epoch_seq FROM convlab_studies"
        assert connection.execute(text(counted)).scalar_one() == 4
    record_epoch(
        engine,
        ids[0],
        owner,
        EpochMetrics(3, 2.0, 0.5, 2.1, 0.5, 1.0),
        checkpoint=None,
        lease_seconds=60,
    )
    with engine.connect() as connection:
        assert connection.execute(text(numbered)).all()[-1] == (ids[0], 3, 5)
