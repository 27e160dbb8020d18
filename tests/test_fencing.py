"""Fencing and checkpoint rows against real SQLite and PostgreSQL databases: a process whose
lease was taken over can change nothing, retention keeps the newest checkpoints, and a resume
skips a checkpoint that does not load."""

import hashlib
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text, update
from sqlmodel import Session, col

from jobs.queueing import requeue_abandoned
from models.epochs import EpochMetrics
from models.presets import PRESETS
from models.status import Status
from store.clock import db_now
from store.db import session_scope
from store.experiments import create_experiment
from store.runs import (
    LeaseLost,
    checkpoints,
    keep_best,
    record_epoch,
    renew_lease,
    rewind,
    save_evaluation,
    trained_model,
)
from store.tables import Evaluation, Experiment
from store.transitions import claim, finish, release

OLD = "node-a/1/1"
NEW = "node-b/2/2"
"""Owners on other machines: only their lease's expiry says they are gone."""
LEASE = 30.0


def _queued(engine: Engine) -> str:
    with Session(engine) as session:
        spec = PRESETS["base"].spec.model_dump(mode="json")
        experiment_id = create_experiment(session, name=None, spec=spec).id
        session.commit()
    return experiment_id


def _claimed(engine: Engine, owner: str = OLD) -> str:
    experiment_id = _queued(engine)
    assert claim(engine, experiment_id, owner, lease_seconds=LEASE, max_lost=3)
    return experiment_id


def _record(engine: Engine, experiment_id: str, owner: str, epoch: int, data: bytes) -> None:
    metrics = EpochMetrics(epoch, 2.0 / epoch, 0.1 * epoch, 2.1 / epoch, 0.1 * epoch, 1.0)
    record_epoch(engine, experiment_id, owner, metrics, checkpoint=data, lease_seconds=LEASE)


def _expire(engine: Engine, experiment_id: str) -> None:
    """Its holder stopped renewing: the lease ran out, by the database's clock."""
    with session_scope(engine) as session:
        session.exec(
            update(Experiment)
            .where(col(Experiment.id) == experiment_id)
            .values(lease_expires_at=db_now(session) - timedelta(seconds=1))
        )


def _rows(engine: Engine, experiment_id: str) -> dict[str, Any]:
    """Everything a run's holder can write: its experiment row, epochs, checkpoints and
    evaluation."""
    with engine.connect() as connection:

        def read(sql: str) -> list[tuple[Any, ...]]:
            rows = connection.execute(text(sql), {"id": experiment_id}).all()
            return [tuple(row) for row in rows]

        return {
            "experiment": read(
                "SELECT status, lease_owner, lease_expires_at, attempts, workers_lost, "
                "epochs_done, final, best, error, finished_at, dispatched_at "
                "FROM experiments WHERE id = :id"
            ),
            "epochs": read(
                "SELECT epoch, loss, accuracy, val_loss, val_accuracy, seconds, recorded_at "
                "FROM epochs WHERE experiment_id = :id ORDER BY epoch"
            ),
            "checkpoints": read(
                "SELECT epoch, sha256, created_at FROM checkpoints "
                "WHERE experiment_id = :id ORDER BY epoch"
            ),
            "best": read(
                "SELECT epoch, value, sha256, created_at FROM best_checkpoints "
                "WHERE experiment_id = :id"
            ),
            "evaluation": read("SELECT weights FROM evaluations WHERE experiment_id = :id"),
        }


def _evaluation(experiment_id: str) -> Evaluation:
    return Evaluation(
        experiment_id=experiment_id,
        weights="last",
        classes=["a", "b"],
        per_class_accuracy=[1.0, 0.0],
        confusion=[[1, 0], [1, 0]],
    )


def _assert_every_write_refused(engine: Engine, experiment_id: str, owner: str) -> None:
    """Each write ``owner`` could still try fails and leaves every row as it was."""
    before = _rows(engine, experiment_id)
    with pytest.raises(LeaseLost):
        _record(engine, experiment_id, owner, 3, b"old-3")  # an epoch the new holder wrote
    with pytest.raises(LeaseLost):
        _record(engine, experiment_id, owner, 9, b"old-9")  # one nobody wrote yet
    assert renew_lease(engine, experiment_id, owner, lease_seconds=LEASE) is False
    with pytest.raises(LeaseLost):
        rewind(engine, experiment_id, owner, to_epoch=0)
    with pytest.raises(LeaseLost):
        release(engine, experiment_id, owner, b"old-weights")
    with pytest.raises(LeaseLost):
        keep_best(engine, experiment_id, owner, epoch=2, monitor="val_loss", value=0, data=b"x")
    with pytest.raises(LeaseLost):
        save_evaluation(engine, _evaluation(experiment_id), owner)
    for status in (Status.succeeded, Status.failed):
        with pytest.raises(LeaseLost):
            finish(engine, experiment_id, owner, status, "old holder")
    assert _rows(engine, experiment_id) == before


@pytest.mark.parametrize("taken_by", ["claim", "sweeper"])
def test_writes_of_an_expired_holder_are_refused_after_a_takeover(
    engine: Engine, taken_by: str
) -> None:
    """The old holder's every write fails, whether the new holder took the run over itself
    or the sweeper requeued it first; the new holder's rows stay as it wrote them."""
    experiment_id = _claimed(engine, OLD)
    _record(engine, experiment_id, OLD, 1, b"old-1")
    keep_best(engine, experiment_id, OLD, epoch=1, monitor="val_loss", value=1, data=b"best-1")
    _record(engine, experiment_id, OLD, 2, b"old-2")
    _expire(engine, experiment_id)
    if taken_by == "sweeper":
        assert requeue_abandoned(engine, lease_seconds=LEASE) == [experiment_id]
        _assert_every_write_refused(engine, experiment_id, OLD)
    taken = claim(engine, experiment_id, NEW, lease_seconds=LEASE, max_lost=3)
    assert taken is not None
    assert taken.took_over is (taken_by == "claim")
    assert (taken.experiment.attempts, taken.experiment.workers_lost) == (2, 1)
    rewind(engine, experiment_id, NEW, to_epoch=2)
    _record(engine, experiment_id, NEW, 3, b"new-3")

    _assert_every_write_refused(engine, experiment_id, OLD)

    rows = _rows(engine, experiment_id)
    assert rows["experiment"][0][:2] == (Status.running, NEW)
    assert [row[0] for row in rows["epochs"]] == [1, 2, 3]
    assert checkpoints(engine, experiment_id) == [(3, b"new-3"), (2, b"old-2")]
    assert renew_lease(engine, experiment_id, NEW, lease_seconds=LEASE) is True
    _record(engine, experiment_id, NEW, 4, b"new-4")
    finish(engine, experiment_id, NEW, Status.succeeded)
    rows = _rows(engine, experiment_id)
    assert rows["experiment"][0][:6] == (Status.succeeded, None, None, 2, 1, 4)
    assert checkpoints(engine, experiment_id) == [(4, b"new-4")]


def test_record_epoch_keeps_the_newest_checkpoints_and_finish_only_the_last(
    engine: Engine,
) -> None:
    """With ``keep_checkpoints=2``, four epochs leave the checkpoints of epochs 3 and 4; the
    end leaves epoch 4's, the trained model."""
    experiment_id = _claimed(engine)
    for epoch in range(1, 5):
        _record(engine, experiment_id, OLD, epoch, f"weights-{epoch}".encode())
    kept = _rows(engine, experiment_id)["checkpoints"]
    assert [(epoch, sha) for epoch, sha, _ in kept] == [
        (epoch, hashlib.sha256(f"weights-{epoch}".encode()).hexdigest()) for epoch in (3, 4)
    ]
    finish(engine, experiment_id, OLD, Status.succeeded)
    assert [row[0] for row in _rows(engine, experiment_id)["checkpoints"]] == [4]
    assert trained_model(engine, experiment_id) == (4, b"weights-4")


def test_release_mid_epoch_replaces_the_checkpoint_of_the_last_finished_epoch(
    engine: Engine,
) -> None:
    """The weights reached mid-epoch take the place of the last finished epoch's, so the next
    attempt trains the interrupted epoch again from them; older checkpoints stay."""
    experiment_id = _claimed(engine)
    _record(engine, experiment_id, OLD, 1, b"weights-1")
    _record(engine, experiment_id, OLD, 2, b"weights-2")
    before = {epoch: sha for epoch, sha, _ in _rows(engine, experiment_id)["checkpoints"]}
    release(engine, experiment_id, OLD, b"weights-2.5")
    after = {epoch: sha for epoch, sha, _ in _rows(engine, experiment_id)["checkpoints"]}
    assert after[1] == before[1]
    assert after[2] != before[2] and after[2] == hashlib.sha256(b"weights-2.5").hexdigest()
    experiment = _rows(engine, experiment_id)["experiment"][0]
    assert (experiment[0], experiment[1], experiment[5]) == (Status.queued, None, 2)


def test_release_during_the_first_epoch_keeps_weights_only_for_resuming(
    engine: Engine,
) -> None:
    """A run stopped before its first epoch ended has a checkpoint at epoch 0 to resume
    from, but no trained model to download until an epoch finishes."""
    experiment_id = _claimed(engine)
    release(engine, experiment_id, OLD, b"weights-0.5")
    assert checkpoints(engine, experiment_id) == [(0, b"weights-0.5")]
    assert trained_model(engine, experiment_id) is None
    assert claim(engine, experiment_id, NEW, lease_seconds=LEASE, max_lost=3)
    _record(engine, experiment_id, NEW, 1, b"weights-1")
    assert trained_model(engine, experiment_id) == (1, b"weights-1")


def test_newest_loadable_skips_a_checkpoint_that_passes_its_hash_but_does_not_load(
    engine: Engine,
) -> None:
    """A half-written archive stored with its own hash is passed over for the older one."""
    import keras  # TensorFlow: imported here, for this test alone

    from worker.checkpoints import newest_loadable, to_bytes

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    whole = to_bytes(model)
    experiment_id = _claimed(engine)
    _record(engine, experiment_id, OLD, 1, whole)
    _record(engine, experiment_id, OLD, 2, whole[: len(whole) // 2])
    candidates = checkpoints(engine, experiment_id)
    assert [(epoch, data is not None) for epoch, data in candidates] == [(2, True), (1, True)]
    epoch, loaded = newest_loadable(candidates)
    assert epoch == 1 and loaded is not None
    assert all(
        (mine == theirs).all()
        for mine, theirs in zip(loaded.get_weights(), model.get_weights(), strict=True)
    )


def test_a_process_taking_back_its_own_expired_lease_counts_no_lost_worker(
    engine: Engine,
) -> None:
    """Its lease ran out while it was alive (a long outage): it is not a worker lost."""
    experiment_id = _claimed(engine, OLD)
    _expire(engine, experiment_id)

    again = claim(engine, experiment_id, OLD, lease_seconds=LEASE, max_lost=3)

    assert again is not None
    assert (again.experiment.attempts, again.experiment.workers_lost) == (2, 0)
