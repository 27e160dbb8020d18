"""Storage that stays bounded: the retention setting removes old runs' weights (pinned runs keep
theirs), deleted weights give their space back to the disk on SQLite and PostgreSQL, GET /usage
and /metrics say what each user's runs hold, and a storage quota refuses new work."""

import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, text
from sqlmodel import select

from core.config import Settings
from models.status import Status
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment, delete
from store.storage import Keep, prune, reclaim, stored_bytes
from store.studies import create_study
from store.tables import BestCheckpoint, Checkpoint, Experiment, utcnow
from tests.services import Stack, running_stack, server_stack, wait_for, wait_for_status

SPEC = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 2}}
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 64}}


def _ended(
    engine: Engine,
    *,
    days_ago: float,
    study_id: str | None = None,
    val_accuracy: float = 0.5,
    pinned: bool = False,
    size: int = 1000,
) -> str:
    """A run that ended ``days_ago`` with a checkpoint and a best-epoch copy of ``size``
    incompressible bytes each."""
    with session_scope(engine) as session:
        run = create_experiment(session, name=None, spec=SPEC, study_id=study_id)
        run.status, run.pinned = Status.succeeded, pinned
        run.finished_at = utcnow() - timedelta(days=days_ago)
        run.final = {"accuracy": 0.5, "loss": 1.0, "val_accuracy": val_accuracy, "val_loss": 1.0}
        session.flush()
        data = os.urandom(size)
        digest = hashlib.sha256(data).hexdigest()
        session.add(Checkpoint(experiment_id=run.id, epoch=2, data=data, sha256=digest))
        session.add(
            BestCheckpoint(
                experiment_id=run.id,
                epoch=1,
                monitor="val_loss",
                value=1.0,
                data=data,
                sha256=digest,
            )
        )
        return run.id


def _study(engine: Engine) -> str:
    with session_scope(engine) as session:
        study, _ = create_study(
            session, name=None, kind="presets", definition={}, runs=[], seeds=[0]
        )
        return study.id


def _holding(engine: Engine) -> dict[str, set[str]]:
    with session_scope(engine) as session:
        return {
            "checkpoint": set(session.exec(select(Checkpoint.experiment_id)).all()),
            "best": set(session.exec(select(BestCheckpoint.experiment_id)).all()),
        }


@pytest.mark.parametrize("keep", list(Keep))
def test_retention_removes_old_runs_weights_as_the_setting_says(engine: Engine, keep: Keep) -> None:
    study = _study(engine)
    alone = _ended(engine, days_ago=40)
    winner = _ended(engine, days_ago=40, study_id=study, val_accuracy=0.9)
    loser = _ended(engine, days_ago=40, study_id=study, val_accuracy=0.6)
    pinned = _ended(engine, days_ago=40, pinned=True)
    recent = _ended(engine, days_ago=1)
    with session_scope(engine) as session:
        removed = prune(session, keep=keep, finished_before=utcnow() - timedelta(days=30))
    held = _holding(engine)
    assert held["best"] == {pinned, recent}  # an old run's best-epoch copy goes in every case
    kept = {
        Keep.final: {alone, winner, loser},
        Keep.best_of_study: {alone, winner},
        Keep.none: set(),
    }[keep]
    assert held["checkpoint"] == kept | {pinned, recent}
    assert removed == 3 + (3 - len(kept))
    with session_scope(engine) as session:  # a second pass finds nothing more to remove
        assert prune(session, keep=keep, finished_before=utcnow() - timedelta(days=30)) == 0


def _database_bytes(engine: Engine) -> int:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            sizes = (
                "pg_total_relation_size('checkpoints') + pg_total_relation_size('best_checkpoints')"
            )
            return int(connection.execute(text(f"SELECT {sizes}")).scalar_one())
    database = engine.url.database
    assert database is not None
    return sum(
        path.stat().st_size for path in Path(database).parent.glob(Path(database).name + "*")
    )


def _delete_all(engine: Engine) -> None:
    with session_scope(engine) as session:
        for run in session.exec(select(Experiment)).all():
            delete(session, run)


def _bytes_given_back(engine: Engine) -> int:
    """Write 20 runs' weights (2 x 0.5 MB each), delete the runs, reclaim: the bytes the
    database's files shrank by."""
    for _ in range(20):
        _ended(engine, days_ago=0, size=2**19)
    _checkpoint_wal(engine)
    full = _database_bytes(engine)
    _delete_all(engine)
    reclaim(engine)
    _checkpoint_wal(engine)
    return full - _database_bytes(engine)


def test_deleted_weights_give_their_space_back(engine: Engine) -> None:
    assert _bytes_given_back(engine) > 15 * 2**20  # of the 20 MB written


def test_a_sqlite_database_made_before_incremental_vacuum_is_converted(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'old.sqlite'}")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("PRAGMA auto_vacuum = NONE"))
        connection.execute(text("VACUUM"))  # as a database made before this setting was
    migrate(engine)
    assert _bytes_given_back(engine) > 15 * 2**20
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA auto_vacuum")).scalar() == 2  # incremental now
    engine.dispose()


def _checkpoint_wal(engine: Engine) -> None:
    """SQLite: move the write-ahead log into the database file, so sizes compare."""
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))


# Against a running API: usage, the quota, pins, and retention in the API's own loop.


@pytest.fixture(scope="module")
def quota_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("quota")
    with server_stack(home, auth="true", storage_quota_mb="1") as running:
        yield running


def _submit(client: httpx.Client, body: dict[str, Any] = RUN) -> httpx.Response:
    return client.post("/experiments", json=body)


@pytest.mark.slow
def test_usage_says_what_each_user_holds_and_the_quota_refuses_more(quota_stack: Stack) -> None:
    stack = quota_stack
    alice, bob = stack.client(stack.token("alice")), stack.client(stack.token("bob"))
    admin = stack.client(stack.token("root", "--admin"))
    first = _submit(alice).json()["id"]
    wait_for_status(alice, first, {"succeeded"}, timeout=240)
    [line] = alice.get("/usage").json()
    assert line["user"] == "alice" and line["quota_bytes"] == 2**20
    assert (line["running"], line["queued"], line["paused"]) == (0, 0, 0)
    assert line["stored_bytes"] > 2**20  # a digits base model with its optimizer state
    everyone = {line["user"]: line for line in admin.get("/usage").json()}
    assert everyone["alice"]["stored_bytes"] == line["stored_bytes"]
    stored = {
        sample.labels["user"]: sample.value
        for family in text_string_to_metric_families(admin.get("/metrics").text)
        for sample in family.samples
        if sample.name == "convlab_stored_bytes"
    }
    assert stored == {"alice": line["stored_bytes"]}

    refused = _submit(alice)
    assert refused.status_code == 403
    assert "the storage quota is 1 MB" in refused.json()["detail"]
    assert "convlab delete" in refused.json()["detail"]
    other = _submit(bob)  # bob holds nothing yet
    assert other.status_code == 201
    bob.post(f"/experiments/{other.json()['id']}/cancel")

    pinned = alice.patch(f"/experiments/{first}", json={"pinned": True}).json()
    assert pinned["pinned"] is True
    assert alice.patch(f"/experiments/{first}", json={"pinned": "yes"}).status_code == 422
    assert alice.delete(f"/experiments/{first}").status_code == 204
    assert alice.get("/usage").json()[0]["stored_bytes"] == 0
    assert _submit(alice).status_code == 201
    for client in (alice, bob, admin):
        client.close()


@pytest.mark.slow
def test_the_api_removes_old_weights_but_a_pinned_runs(tmp_path: Path) -> None:
    settings = {"retention_days": str(20 / 86400), "retention_keep": "none"}
    with (
        running_stack(tmp_path, sweep_interval_s="1", **settings) as stack,
        stack.client() as client,
    ):
        kept, lost = (_submit(client).json()["id"] for _ in range(2))
        client.patch(f"/experiments/{kept}", json={"pinned": True})
        for run in (kept, lost):
            wait_for_status(client, run, {"succeeded"}, timeout=240)

        def removed() -> httpx.Response | None:
            answer = client.get(f"/experiments/{lost}/model")
            return answer if answer.status_code == 404 else None

        gone = wait_for(removed, timeout=90, what="retention to remove the unpinned run's model")
        assert "CONVLAB_RETENTION_KEEP=none" in gone.json()["detail"]
        assert client.get(f"/experiments/{kept}/model").status_code == 200
        continued = client.post(f"/experiments/{lost}/continue", json={"epochs": 1})
        assert continued.status_code == 409 and "unless pinned" in continued.json()["detail"]
        engine = get_engine(Settings(home=tmp_path).resolved_database_url)
        assert _holding(engine) == {"checkpoint": {kept}, "best": {kept}}
        with session_scope(engine) as session:
            assert stored_bytes(session)[None] > 0
