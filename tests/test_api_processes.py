"""The API on several processes: one of them at a time runs the sweeper and the notifier,
chosen by a lock on the database (an advisory lock on PostgreSQL, a file lock beside SQLite),
and another takes them over when it dies; training runs at a lower CPU priority than the API."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text

from core.config import Settings
from jobs.broker import make_celery
from jobs.queueing import QUEUE
from models.presets import resolve
from store.db import session_scope
from store.experiments import create_experiment
from store.singleton import HOLDER_PREFIX, LOOPS_LOCK, Singleton, holder
from store.tables import Experiment
from tests.services import (
    API_COMMAND,
    Stack,
    Trainer,
    postgres_database,
    redis_server,
    running_stack,
    wait_for,
    wait_for_status,
)

INTERVAL = 1.0
"""The sweep interval of these stacks (CONVLAB_SWEEP_INTERVAL_S): how often a process that does
not hold the lock tries to take it."""
TAKEOVER = 15 * INTERVAL
"""How long a takeover may take here: the next pass, with room for a loaded two-core machine
(CI runs two test processes beside PostgreSQL and Docker builds). A lock that outlived its
dead holder would never be taken."""
PROCESSES = f"{API_COMMAND} --workers 2"


@contextmanager
def _engine(url: str) -> Iterator[Engine]:
    """An engine of the test's own (not the process's cached one): its own connections."""
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def _api_processes(stack: Stack) -> set[int]:
    """The pids of the uvicorn processes serving requests (children of the supervisor)."""
    children = Path(f"/proc/{stack.api.pid}/task/{stack.api.pid}/children").read_text().split()
    return {
        int(pid)
        for pid in children
        if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    }


def _holder_pid(engine: Engine) -> int | None:
    named = holder(engine)
    pid = "" if named is None else named.rsplit(" ", 1)[-1]
    return int(pid) if pid.isdigit() else None  # a new holder may be writing its pid


def _tcp_ports(pid: int) -> set[int]:
    """The local ports of the TCP connections process ``pid`` holds open."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _last_queries(engine: Engine, pid: int) -> list[str]:
    """The last statement of each PostgreSQL session that process ``pid`` holds open."""
    ports = _tcp_ports(pid)
    with engine.connect() as connection:
        sessions = connection.execute(
            text(
                "SELECT client_port, query FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    return [query for port, query in sessions if port in ports]


def _stranded(engine: Engine) -> str:
    """A queued experiment whose message was never sent (as after a crash between the commit
    and the publish): only the sweeper sends it."""
    spec = resolve("base", {"dataset": {"name": "digits"}, "training": {"epochs": 1}})
    with session_scope(engine) as session:
        return create_experiment(session, name="stranded", spec=spec.model_dump(mode="json")).id


def _dispatched(engine: Engine, experiment_id: str) -> bool:
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        return experiment is not None and experiment.dispatched_at is not None


def _messages(settings: Settings) -> int:
    with make_celery(settings).connection_for_write() as connection:
        return int(
            connection.default_channel.queue_declare(queue=QUEUE, durable=True).message_count
        )


def _kill_holder_and_wait_for_the_next(stack: Stack, engine: Engine) -> tuple[int, int, float]:
    """SIGKILL the process holding the loops' lock; the killed pid, the new holder's pid and
    the seconds until another process held it."""
    killed = wait_for(lambda: _holder_pid(engine), timeout=TAKEOVER, what="a holder")
    os.kill(killed, signal.SIGKILL)
    started = time.monotonic()
    wait_for(
        lambda: not Path(f"/proc/{killed}").exists() or _zombie(killed), timeout=10, what="death"
    )
    taken = wait_for(
        lambda: (pid := _holder_pid(engine)) not in (None, killed) and pid,
        timeout=TAKEOVER,
        what=f"another API process to take the lock from {killed}",
        every=0.05,
    )
    return killed, taken, time.monotonic() - started


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_one_postgresql_session_holds_the_lock_and_another_takes_it_when_it_ends() -> None:
    with postgres_database() as url, _engine(url) as first, _engine(url) as second:
        a, b = Singleton(first), Singleton(second)
        assert a.held()
        assert not b.held()
        assert a.held()  # still its own
        assert holder(second) is not None and holder(second).startswith(HOLDER_PREFIX)  # type: ignore[union-attr]
        with first.connect() as connection:  # the holder's session ends (a failover, a kill)
            connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name LIKE :name"
                ),
                {"name": f"{HOLDER_PREFIX}%"},
            )
        assert wait_for(b.held, timeout=5, what="the second to take the lock")
        assert not a.held()  # it notices that its session, and the lock, are gone
        b.release()
        assert a.held()
        assert holder(second) is not None
        a.release()
        assert holder(second) is None


def test_one_sqlite_file_lock_holder_and_the_next_takes_it_on_release(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'convlab.sqlite'}"
    with _engine(url) as first, _engine(url) as second:
        a, b = Singleton(first), Singleton(second)
        assert a.held()
        assert not b.held()
        assert holder(first) == f"pid {os.getpid()}"
        a.release()
        assert b.held()
        assert not a.held()
        b.release()
        assert holder(first) is None


def test_two_api_processes_on_postgresql_run_one_sweeper_which_another_takes_over(
    tmp_path: Path,
) -> None:
    with (
        postgres_database() as url,
        redis_server() as broker_url,
        running_stack(
            tmp_path,
            api_command=PROCESSES,
            workers=0,
            database_url=url,
            broker_url=broker_url,
            sweep_interval_s=str(INTERVAL),
        ) as stack,
        _engine(url) as engine,
    ):
        settings = Settings(home=tmp_path, database_url=url, broker_url=broker_url)
        processes = wait_for(
            lambda: len(found := _api_processes(stack)) == 2 and found, timeout=30, what="2 APIs"
        )
        first = wait_for(lambda: _holder_pid(engine), timeout=TAKEOVER, what="a lock holder")
        assert first in processes
        with engine.connect() as connection:
            locks = connection.execute(
                text(
                    "SELECT granted FROM pg_locks WHERE locktype = 'advisory' "
                    "AND objid::bigint = :key AND objsubid = 1 AND database = "
                    "(SELECT oid FROM pg_database WHERE datname = current_database())"
                ),
                {"key": LOOPS_LOCK},
            ).all()
        assert locks == [(True,)]  # one holder; the other process only tries, never waits

        stranded = _stranded(engine)
        wait_for(lambda: _dispatched(engine, stranded), timeout=TAKEOVER, what="the sweeper")
        time.sleep(3 * INTERVAL)
        assert _messages(settings) == 1  # published once, by the one sweeper
        (other,) = processes - {first}
        # The holder's loops end transactions; every statement the other has made since it
        # started (its migration's sessions too, taken from the pool since) is a try for the lock.
        assert "COMMIT" in _last_queries(engine, first)
        tried = _last_queries(engine, other)
        assert tried and all("pg_try_advisory_lock(" in query for query in tried), tried

        killed, taken, seconds = _kill_holder_and_wait_for_the_next(stack, engine)
        assert taken != killed and Path(f"/proc/{taken}").exists()
        assert seconds <= TAKEOVER
        after = _stranded(engine)  # the new holder's sweeper runs
        wait_for(lambda: _dispatched(engine, after), timeout=TAKEOVER, what="the next sweeper")
        assert _messages(settings) == 2


def test_two_api_processes_on_sqlite_run_one_sweeper_which_another_takes_over(
    tmp_path: Path,
) -> None:
    with (
        running_stack(
            tmp_path,
            api_command=PROCESSES,
            workers=0,
            sweep_interval_s=str(INTERVAL),
        ) as stack,
        _engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}") as engine,
    ):
        processes = wait_for(
            lambda: len(found := _api_processes(stack)) == 2 and found, timeout=30, what="2 APIs"
        )
        first = wait_for(lambda: _holder_pid(engine), timeout=TAKEOVER, what="a lock holder")
        assert first in processes
        assert (tmp_path / "convlab.sqlite.loops-lock").read_text() == f"{first}\n"
        stranded = _stranded(engine)
        wait_for(lambda: _dispatched(engine, stranded), timeout=TAKEOVER, what="the sweeper")
        time.sleep(3 * INTERVAL)
        assert _messages(Settings(home=tmp_path)) == 1  # published once, by the one sweeper

        killed, taken, seconds = _kill_holder_and_wait_for_the_next(stack, engine)
        assert taken != killed and Path(f"/proc/{taken}").exists()
        assert seconds <= TAKEOVER
        after = _stranded(engine)
        wait_for(lambda: _dispatched(engine, after), timeout=TAKEOVER, what="the next sweeper")


def _scraped(stack: Stack, name: str, **labels: str) -> float:
    """A sample of /metrics, scraped on a new connection (any of the API's processes answers)."""
    answer = httpx.get(f"{stack.url}/metrics", timeout=30)
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_metrics_add_up_every_api_processs_requests_and_count_each_epoch_once(
    tmp_path: Path,
) -> None:
    with running_stack(
        tmp_path, api_command=PROCESSES, workers=0, sweep_interval_s=str(INTERVAL)
    ) as stack:
        processes = wait_for(
            lambda: len(found := _api_processes(stack)) == 2 and found, timeout=30, what="2 APIs"
        )
        for _ in range(30):  # each on a connection of its own: both processes answer some
            assert httpx.get(f"{stack.url}/experiments", timeout=30).status_code == 200
        folders = list(Path(tempfile.gettempdir()).glob(f"convlab-metrics-{stack.api.pid}-*"))
        assert len(folders) == 1
        writers = {int(file.stem.rsplit("_", 1)[1]) for file in folders[0].glob("counter_*.db")}
        assert writers == processes
        route = {"method": "GET", "route": "/experiments", "status": "200"}
        for _ in range(6):  # whichever process answers the scrape, the sum of both
            assert _scraped(stack, "convlab_http_requests_total", **route) == 30

        trainer = Trainer(Settings(home=tmp_path))
        with session_scope(trainer.engine) as session:
            spec = resolve("base", {"dataset": {"name": "digits"}}).model_dump(mode="json")
            experiment_id = create_experiment(session, name=None, spec=spec).id
        trainer.start(experiment_id)
        for epoch in (1, 2, 3):
            trainer.epoch(experiment_id, epoch, 1.0, 0.5, 1.0, 0.5, 0.25)
        wait_for(
            lambda: _scraped(stack, "convlab_epochs_completed_total") == 3,
            timeout=60,  # a later pass counts them, however slow the machine
            what="the lock holder to count the epochs",
        )
        time.sleep(3 * INTERVAL)  # more passes, more scrapes: still once each
        assert {_scraped(stack, "convlab_epochs_completed_total") for _ in range(6)} == {3}


def _niceness(pid: int, thread: int | None = None) -> int:
    """A process's (or one of its threads') niceness, as /proc shows it."""
    stat = Path(f"/proc/{pid}/task/{thread or pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@pytest.mark.slow
def test_training_runs_at_the_configured_niceness_below_its_worker(tmp_path: Path) -> None:
    with running_stack(tmp_path, worker_nice="7") as stack, stack.client() as client:
        created = client.post(
            "/experiments",
            json={"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 200}},
        )
        assert created.status_code == 201, created.text
        experiment_id = created.json()["id"]
        wait_for_status(client, experiment_id, {"running"})
        engine = create_engine(f"sqlite:///{tmp_path / 'convlab.sqlite'}")
        with session_scope(engine) as session:
            experiment = session.get(Experiment, experiment_id)
            assert experiment is not None and experiment.lease_owner is not None
            trainer = int(experiment.lease_owner.rsplit("/", 2)[1])
        engine.dispose()
        wait_for(
            lambda: client.get(f"/experiments/{experiment_id}").json()["epochs_done"] >= 1,
            timeout=120,
            what="an epoch",
        )
        threads = {}
        for task in os.listdir(f"/proc/{trainer}/task"):
            with suppress(FileNotFoundError):  # a thread that ended meanwhile
                threads[task] = _niceness(trainer, int(task))
        assert len(threads) > 2  # TensorFlow's threads too
        ours = os.getpriority(os.PRIO_PROCESS, 0)
        assert set(threads.values()) == {max(7, ours)}, threads
        assert _niceness(stack.worker.pid) == ours  # the worker's main process is left alone
        assert client.post(f"/experiments/{experiment_id}/cancel").status_code == 202
        wait_for_status(client, experiment_id, {"cancelled"})


def test_niceness_is_only_ever_lowered_for_every_thread() -> None:
    probe = (
        "import os, threading, time;"
        "from worker.cores import run_at_niceness;"
        "threading.Thread(target=time.sleep, args=(5,), daemon=True).start();"
        "os.nice(12);"  # the main thread only: Linux keeps one niceness per thread
        "print(run_at_niceness(10), sorted({os.getpriority(os.PRIO_PROCESS, int(t))"
        " for t in os.listdir('/proc/self/task')}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert done.stdout.strip() == "12 [10, 12]"
