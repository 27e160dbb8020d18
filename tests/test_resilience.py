"""What happens when things break, with real processes: killed and stopped workers, a broker
down at submit, duplicate messages, poison jobs, corrupt checkpoints, vanished machines."""

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from itertools import groupby
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from core.config import Settings
from jobs.broker import make_celery
from jobs.queueing import QUEUE, TRAIN_TASK
from models.presets import resolve
from store.db import get_engine
from store.experiments import create_experiment
from store.transitions import claim
from tests.services import (
    RedisServer,
    Stack,
    all_at_once,
    redis_server,
    running_stack,
    stop_process,
    wait_for,
    wait_for_status,
)

pytestmark = pytest.mark.slow

TERMINAL = {"succeeded", "failed", "cancelled"}
# About 0.2 s per epoch on 2 cores: long enough to be hit mid-run, short enough to finish.
LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 15, "batch_size": 16}}
SHORT_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3, "batch_size": 64}}
# A lease a busy 2-core machine renews in time (every lease/4), with room to spare.
FAST_SWEEPER = {"sweep_interval_s": "0.5", "lease_seconds": "10"}
EVERY_EPOCH = {"checkpoint_seconds": "0"}
"""A checkpoint at every epoch's end, so a resume starts after the last recorded epoch."""
WRITES = (
    "CREATE TABLE test_writes (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT, epoch INTEGER, "
    "value TEXT)",
    *(
        f"CREATE TRIGGER test_{table}_{event} AFTER {event} ON {table} BEGIN "
        f"INSERT INTO test_writes (kind, epoch, value) VALUES ('{kind}', NEW.epoch, {value}); END"
        for table, kind, value in [
            ("epochs", "epoch", "NEW.seconds"),
            ("checkpoints", "checkpoint", "NEW.sha256"),
        ]
        for event in ("INSERT", "UPDATE")
    ),
    "CREATE TRIGGER test_leases AFTER UPDATE OF lease_owner ON experiments "
    "WHEN NEW.lease_owner IS NOT NULL BEGIN INSERT INTO test_writes (kind, epoch, value) "
    "VALUES ('lease', NEW.epochs_done, NEW.lease_owner); END",
)
"""Triggers that log, in commit order, every write of an epoch row or a checkpoint and every
claim or renewal of a lease (a fenced write sets ``lease_owner`` to its writer)."""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with running_stack(tmp_path, **FAST_SWEEPER, **EVERY_EPOCH) as running:
        _log_writes(running)
        yield running


def _database(stack: Stack) -> Path:
    return Path(stack.env["CONVLAB_HOME"]) / "convlab.sqlite"


def _log_writes(stack: Stack) -> None:
    """Install ``WRITES`` in the stack's database (the API created its tables at start-up)."""
    with closing(sqlite3.connect(_database(stack), timeout=30)) as connection, connection:
        for statement in WRITES:
            connection.execute(statement)


def _writes(stack: Stack, kind: str) -> list[tuple[int, str]]:
    """(epoch, value) of every write of ``kind`` logged so far, oldest first."""
    with closing(sqlite3.connect(_database(stack), timeout=30)) as connection:
        rows = connection.execute(
            "SELECT epoch, value FROM test_writes WHERE kind = ? ORDER BY seq", (kind,)
        ).fetchall()
    return [(int(epoch), str(value)) for epoch, value in rows]


def _epochs_written(stack: Stack) -> list[int]:
    return [epoch for epoch, _ in _writes(stack, "epoch")]


def _checkpoint_rows(stack: Stack, experiment_id: str) -> dict[int, str]:
    """The run's stored checkpoints: epoch -> sha256."""
    with closing(sqlite3.connect(_database(stack), timeout=30)) as connection:
        rows = connection.execute(
            "SELECT epoch, sha256 FROM checkpoints WHERE experiment_id = ?", (experiment_id,)
        ).fetchall()
    return {int(epoch): str(sha) for epoch, sha in rows}


def _experiment(client: httpx.Client, experiment_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
    return body


def _epochs(client: httpx.Client, experiment_id: str) -> list[dict[str, Any]]:
    epochs: list[dict[str, Any]] = client.get(f"/experiments/{experiment_id}/history").json()[
        "epochs"
    ]
    return epochs


def _running_with_epochs(client: httpx.Client, experiment_id: str, at_least: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        experiment = _experiment(client, experiment_id)
        running = experiment["status"] == "running" and experiment["epochs_done"] >= at_least
        return experiment if running else None

    found: dict[str, Any] = wait_for(ready, timeout=120, what=f"{at_least} epochs running")
    return found


def _trainer_pid(experiment: dict[str, Any]) -> int:
    return int(experiment["worker"].split("/")[1])


def _assert_complete_history(client: httpx.Client, experiment_id: str, epochs: int) -> None:
    assert [row["epoch"] for row in _epochs(client, experiment_id)] == list(range(1, epochs + 1))


def test_kill_9_of_the_training_process_resumes_from_the_last_epoch(stack: Stack) -> None:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        running = _running_with_epochs(client, experiment_id, at_least=3)
        os.kill(_trainer_pid(running), signal.SIGKILL)
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        _assert_complete_history(client, experiment_id, 15)
        assert (done["attempts"], done["workers_lost"]) == (2, 1)
    # Resumed after the last epoch the killed process recorded: no epoch trained twice.
    assert _epochs_written(stack) == list(range(1, 16))


def test_sigterm_to_a_worker_checkpoints_its_job_and_requeues_it(stack: Stack) -> None:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        _running_with_epochs(client, experiment_id, at_least=3)
        assert stop_process(stack.worker) == 0
        stopped = _experiment(client, experiment_id)
        assert (stopped["status"], stopped["worker"], stopped["error"]) == ("queued", None, None)
        last = stopped["epochs_done"]
        # The epoch's end saved one checkpoint; the stop mid-way through the next replaced it.
        saved = [sha for epoch, sha in _writes(stack, "checkpoint") if epoch == last]
        assert len(saved) == 2 and saved[0] != saved[1]
        assert _checkpoint_rows(stack, experiment_id) == {last - 1: ANY, last: saved[1]}
        stack.start_worker()
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (2, 0)
        _assert_complete_history(client, experiment_id, 15)
    # Resumed from the mid-epoch weights as epoch ``last``'s: no epoch trained twice.
    assert _epochs_written(stack) == list(range(1, 16))


def test_a_corrupt_checkpoint_falls_back_to_the_one_before(stack: Stack, tmp_path: Path) -> None:
    """A checkpoint that fails its hash is skipped: the run resumes from the one before."""
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        _running_with_epochs(client, experiment_id, at_least=3)
        assert stop_process(stack.worker) == 0
        stopped = _experiment(client, experiment_id)["epochs_done"]
        engine = get_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
        with engine.begin() as connection:
            connection.execute(
                text(
                    "UPDATE checkpoints SET data = :junk WHERE experiment_id = :id AND epoch = :e"
                ),
                {"junk": b"half-written", "id": experiment_id, "e": stopped},
            )
        stack.start_worker()
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        _assert_complete_history(client, experiment_id, 15)
    # Epoch ``stopped`` is trained again, from the checkpoint of the epoch before.
    assert _epochs_written(stack) == [*range(1, stopped + 1), *range(stopped, 16)]


def test_a_job_that_keeps_killing_its_worker_fails_after_three_losses(stack: Stack) -> None:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        killed: set[str] = set()
        for _ in range(3):

            def trained_by_a_new_process() -> dict[str, Any] | None:
                experiment = _experiment(client, experiment_id)
                fresh = experiment["worker"] not in killed | {None}
                return experiment if experiment["status"] == "running" and fresh else None

            running = wait_for(trained_by_a_new_process, timeout=120, what="a new attempt")
            killed.add(running["worker"])
            os.kill(_trainer_pid(running), signal.SIGKILL)
        failed = wait_for_status(client, experiment_id, TERMINAL)
        assert failed["status"] == "failed"
        assert failed["error"].startswith("worker lost 3 times during epoch ")
        assert failed["workers_lost"] == 3
        next_one = client.post("/experiments", json=SHORT_RUN).json()["id"]
        assert wait_for_status(client, next_one, TERMINAL)["status"] == "succeeded"


def _writable(database: Path) -> bool:
    """Whether a write transaction can start now (no process holds SQLite's write lock)."""
    with closing(sqlite3.connect(database, timeout=2)) as connection:
        try:
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:
            return False
        connection.rollback()
        return True


def _all_threads_stopped(pid: int) -> bool:
    """Whether every thread of ``pid`` has stopped: SIGSTOP reaches them one by one, and a
    thread still running (a heartbeat, a lease renewal) could take the write lock meanwhile."""
    states = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            states.append(stat.read_text().rsplit(")", 1)[1].split()[0])
    return bool(states) and all(state in {"T", "t"} for state in states)


def _stop_between_transactions(stack: Stack, pid: int) -> None:
    """SIGSTOP ``pid`` at a moment it holds no write lock: a process stopped inside a
    transaction would block every other writer, its successor included, until it runs on."""
    for _ in range(10):
        os.kill(pid, signal.SIGSTOP)
        wait_for(
            lambda: _all_threads_stopped(pid),
            timeout=10,
            what=f"every thread of process {pid} to stop",
            every=0.01,
        )
        if _writable(_database(stack)):
            return
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.1)
    raise AssertionError(f"process {pid} held the database's write lock at every try")


def test_a_worker_stopped_past_its_lease_writes_nothing_after_the_takeover(
    tmp_path: Path,
) -> None:
    """SIGSTOP the training process past its lease: the sweeper requeues the run, the other
    worker resumes it, and once the stopped process runs on, each of its writes is refused."""
    run = {"dataset": {"name": "digits"}, "training": {"epochs": 40, "batch_size": 16}}
    with (
        running_stack(tmp_path, workers=2, **FAST_SWEEPER, **EVERY_EPOCH) as stack,
        stack.client() as client,
    ):
        _log_writes(stack)
        experiment_id = client.post("/experiments", json=run).json()["id"]
        running = _running_with_epochs(client, experiment_id, at_least=2)
        old, pid = running["worker"], _trainer_pid(running)
        _stop_between_transactions(stack, pid)
        try:
            stopped_at = _experiment(client, experiment_id)["epochs_done"]

            def trained_on_elsewhere() -> dict[str, Any] | None:
                experiment = _experiment(client, experiment_id)
                elsewhere = experiment["worker"] not in {old, None}
                return experiment if elsewhere and experiment["epochs_done"] > stopped_at else None

            try:
                new = wait_for(trained_on_elsewhere, timeout=120, what="a takeover")["worker"]
            except AssertionError as timeout:  # CI's summary shows a failure's first line only
                seen = _experiment(client, experiment_id)
                state = {key: seen[key] for key in ("status", "worker", "epochs_done", "attempts")}
                raise AssertionError(f"{timeout}; the run: {state}\n{stack.log_tail()}") from None
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for(
            lambda: f"experiment {experiment_id}: lease lost" in stack.log_text(),
            timeout=60,
            what="the stopped process to give up the run",
        )
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (2, 1)
        _assert_complete_history(client, experiment_id, 40)
    # Each epoch written once, the stopped one's interrupted epoch never; and no write fenced
    # by the old owner's lease committed once the new owner held it.
    assert _epochs_written(stack) == list(range(1, 41))
    owners = [owner for _, owner in _writes(stack, "lease")]
    assert [owner for owner, _ in groupby(owners)] == [old, new]


def test_processes_starting_on_a_new_embedded_broker_all_find_its_queue(tmp_path: Path) -> None:
    """Two workers starting at once on a new SQLite broker both inserted its queue's row: the
    second died with an IntegrityError, and the run the first one lost was never taken over."""
    prepare = (
        "from core.config import Settings\n"
        "from jobs.broker import declare_queue, make_celery\n"
        f"settings = Settings(home={str(tmp_path)!r})\n"
        "app = make_celery(settings)"
    )
    all_at_once(tmp_path, prepare, "declare_queue(app, settings)")
    with closing(sqlite3.connect(tmp_path / "broker.sqlite")) as broker:
        assert broker.execute("SELECT name FROM kombu_queue").fetchall() == [("convlab",)]


def test_a_run_whose_machine_vanished_is_requeued_and_resumed(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0, **FAST_SWEEPER) as stack, stack.client() as client:
        experiment_id = client.post("/experiments", json=SHORT_RUN).json()["id"]
        engine = get_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
        assert claim(engine, experiment_id, "lab-node-7/4242/1", lease_seconds=1, max_lost=3)
        requeued = wait_for_status(client, experiment_id, {"queued"}, timeout=30)
        assert (requeued["workers_lost"], requeued["worker"]) == (1, None)
        stack.start_worker()
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (2, 1)
        _assert_complete_history(client, experiment_id, 3)


def test_a_row_committed_by_an_api_that_died_before_publishing_still_runs(
    stack: Stack, tmp_path: Path
) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
    with Session(engine) as session:
        spec = resolve("base", SHORT_RUN).model_dump(mode="json")
        experiment_id = create_experiment(session, name="orphan", spec=spec).id
        session.commit()
    with stack.client() as client:
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        assert done["attempts"] == 1
        _assert_complete_history(client, experiment_id, 3)


def test_a_submit_while_the_broker_is_down_runs_once_it_is_back(tmp_path: Path) -> None:
    redis = RedisServer()
    redis.start()
    try:
        with (
            running_stack(tmp_path, broker_url=redis.url, **FAST_SWEEPER) as stack,
            stack.client() as client,
        ):
            redis.stop()
            response = client.post("/experiments", json=SHORT_RUN)
            assert response.status_code == 201
            experiment_id = response.json()["id"]
            time.sleep(2)
            assert _experiment(client, experiment_id)["status"] == "queued"
            redis.start()
            done = wait_for_status(client, experiment_id, TERMINAL, timeout=120)
            assert done["status"] == "succeeded", stack.log_tail()
            assert done["attempts"] == 1
            _assert_complete_history(client, experiment_id, 3)
    finally:
        redis.stop()


def test_a_duplicate_message_for_a_running_job_is_dropped(tmp_path: Path) -> None:
    with (
        redis_server() as broker_url,
        running_stack(tmp_path, broker_url=broker_url, workers=2) as stack,
        stack.client() as client,
    ):
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        _running_with_epochs(client, experiment_id, at_least=1)
        celery = make_celery(Settings(home=tmp_path, broker_url=broker_url))
        celery.send_task(TRAIN_TASK, args=[experiment_id], queue=QUEUE)
        wait_for(
            lambda: f"woken for {experiment_id}, but no run is waiting" in stack.log_text(),
            timeout=60,
            what="the duplicate to be dropped",
        )
        done = wait_for_status(client, experiment_id, TERMINAL)
        assert done["status"] == "succeeded", stack.log_tail()
        assert (done["attempts"], done["workers_lost"]) == (1, 0)
        _assert_complete_history(client, experiment_id, 15)


def test_sqlite_serves_300_concurrent_readers_while_a_worker_writes(stack: Stack) -> None:
    # 300 at once found a pool deadlock that 100 hit only now and then: a sync route's
    # response is validated in a second worker thread while its session still held a
    # connection (api.deps.ReleasingRoute closes it first).
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=LONG_RUN).json()["id"]
        first = _running_with_epochs(client, experiment_id, at_least=1)["epochs_done"]

    def read(_: int) -> list[int]:
        with stack.client() as reader:
            return [
                reader.get(path).status_code
                for path in (f"/experiments/{experiment_id}/history", "/experiments") * 2
            ]

    with ThreadPoolExecutor(max_workers=300) as pool:
        statuses = [status for batch in pool.map(read, range(300)) for status in batch]
    with stack.client() as client:
        assert _experiment(client, experiment_id)["epochs_done"] > first  # writes went on
        assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    assert len(statuses) == 1200
    assert set(statuses) == {200}
    assert "database is locked" not in stack.log_text()


def _resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return (
        int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
        / 1024
    )


def _pool_process(stack: Stack) -> int:
    """The worker's one live pool process (waiting out a recycle in progress)."""

    def single_live_child() -> int | None:
        threads = Path(f"/proc/{stack.worker.pid}/task").glob("*/children")
        pids = [int(pid) for thread in threads for pid in thread.read_text().split()]
        alive = [pid for pid in pids if Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
        return alive[0] if len(alive) == 1 else None

    pid: int = wait_for(single_live_child, timeout=30, what="one pool process")
    return pid


def test_ten_jobs_in_a_row_keep_memory_flat_by_recycling(tmp_path: Path) -> None:
    with running_stack(tmp_path, worker_max_jobs="4") as stack, stack.client() as client:
        pools: list[int] = []
        resident: list[float] = []
        for seed in range(10):
            body = {**SHORT_RUN, "seed": seed, "training": {"epochs": 1}}
            experiment_id = client.post("/experiments", json=body).json()["id"]
            assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
            pools.append(_pool_process(stack))
            resident.append(_resident_mb(pools[-1]))
    assert len(set(pools)) == 3, pools  # replaced after jobs 4 and 8
    assert max(resident) < resident[0] + 150, resident


def test_a_search_goes_on_after_the_whole_server_restarts(tmp_path: Path) -> None:
    search = {
        "space": {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}},
        "sampler": "random",
        "n_trials": 4,
        "pruner": {"type": "none"},
    }
    body = {**SHORT_RUN, "training": {"epochs": 2, "batch_size": 64}, "search": search}
    with running_stack(tmp_path, **FAST_SWEEPER) as stack, stack.client() as client:
        study_id = client.post("/studies", json=body).json()["id"]
        wait_for(
            lambda: client.get(f"/studies/{study_id}").json()["progress"]["trials_started"] >= 2,
            timeout=120,
            what="a second trial",
        )
    with running_stack(tmp_path, **FAST_SWEEPER) as stack, stack.client() as client:

        def finished() -> dict[str, Any] | None:
            study: dict[str, Any] = client.get(f"/studies/{study_id}").json()
            return study if study["status"] not in {"queued", "running"} else None

        done = wait_for(finished, timeout=180, what="the search to finish after the restart")
        assert done["status"] == "succeeded", stack.log_tail()
        assert done["progress"]["trials_started"] == 4
        assert done["progress"]["succeeded"] == 4
        assert done["best_trial"] is not None


def test_workers_refuse_pickled_messages(stack: Stack, tmp_path: Path) -> None:
    with stack.client() as client:
        experiment_id = client.post("/experiments", json=SHORT_RUN).json()["id"]
        assert wait_for_status(client, experiment_id, TERMINAL)["status"] == "succeeded"
    celery = make_celery(Settings(home=tmp_path))
    celery.send_task(TRAIN_TASK, args=[experiment_id], queue=QUEUE, serializer="pickle")
    wait_for(
        lambda: "untrusted content of type pickle" in stack.log_text(),
        timeout=30,
        what="the worker to refuse a pickled message",
    )
