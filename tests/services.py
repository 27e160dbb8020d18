"""Real services for the tests: PostgreSQL databases, private Redis servers, convlab processes.

A missing service skips the tests that need it, loudly; under ``CI=true`` it fails them.
"""

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from convlab_client.client import CONNECTION_LIMITS
from core.config import Settings
from models.epochs import EpochMetrics
from models.status import Status
from store.db import get_engine
from store.runs import record_epoch
from store.transitions import claim, finish
from worker.leases import this_process

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
POSTGRES_ADMIN_URL = os.environ.get(
    "CONVLAB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
API_COMMAND = (
    "uvicorn --factory api.main:create_app --host 127.0.0.1 --port {port} "
    "--timeout-graceful-shutdown 5"
)
"""What scripts/up.sh runs; the compose stack's test substitutes the compose file's commands."""
WORKER_COMMAND = "celery -A worker.celery_app worker --loglevel INFO"


def missing(reason: str) -> None:
    """Skip, or fail under CI where every service must be there."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(f"SERVICE MISSING, test skipped: {reason}")


def free_port() -> int:
    """A port free now: another process may take it before ours binds it, so whatever starts
    a server on it tries another when that happens (``PORT_TRIES``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT_TRIES = 5


class PortTaken(Exception):
    """A server could not bind the port it was given: another process took it first."""


@contextmanager
def postgres_database(options: str = "") -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the local server (``options`` to CREATE
    DATABASE, such as its encoding), dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"convlab_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}" {options}'))
    except Exception as exc:
        admin.dispose()
        missing(f"PostgreSQL at {POSTGRES_ADMIN_URL} ({type(exc).__name__}: {exc})")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class RedisServer:
    """A private redis-server on a free port, keeping nothing on disk; can be stopped and
    started again on the same port (a bounced broker)."""

    def __init__(self, password: str = "") -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed")
        self.binary = str(binary)
        self.password = password
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it; on a port of its own at the first start, on the same one after."""
        if self.port:
            return self._start_on(self.port)
        self.port = _on_a_free_port(self._start_on)

    def _start_on(self, port: int) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        log = Path(tempfile.mkdtemp(prefix="convlab-redis-")) / "redis.log"
        log.touch()
        options = ["--bind", "127.0.0.1", "--save", "", "--logfile", str(log), *auth]
        process = subprocess.Popen([self.binary, "--port", str(port), *options])
        wait_for(
            lambda: process.poll() is not None or "Ready to accept" in log.read_text(),
            timeout=10,
            what=f"redis-server on {port}",
        )
        if process.poll() is not None:
            if "Address already in use" in log.read_text():
                raise PortTaken(port)
            raise AssertionError(f"redis-server exited at start:\n{log.read_text()}")
        self.process = process

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def private_redis(password: str = "") -> Iterator[RedisServer]:
    """A private, running redis-server for the duration of the block, to stop and start."""
    server = RedisServer(password)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def redis_server(password: str = "") -> Iterator[str]:
    """A private redis-server for the duration of the block; yields its URL."""
    with private_redis(password) as server:
        yield server.url


class PostgresCluster:
    """A private PostgreSQL server on a free port, which a test may stop and start again (an
    outage); run as the ``postgres`` user when the tests run as root, as initdb requires."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            missing("PostgreSQL's server binaries (pg_ctl, initdb) are not installed")
        self.bin = Path(found[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="convlab-pg-"))
        self.data = self.folder / "data"
        self.port = 0
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as_owner:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        """Start it; on a port of its own at the first start, on the same one after."""
        if self.port:
            return self._start_on(self.port)
        self.port = _on_a_free_port(self._start_on)

    def _start_on(self, port: int) -> None:
        options = f"-p {port} -k {self.folder} -h 127.0.0.1 -c fsync=off"
        log = self.folder / "server.log"
        try:
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "start")
        except subprocess.CalledProcessError:
            if "Address already in use" in log.read_text(errors="replace"):
                raise PortTaken(port) from None
            raise

    def stop(self) -> None:
        """A fast shutdown: open connections are cut, as in a failover or a restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self._as_owner, str(self.bin / program), *args]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A private, running PostgreSQL server for the duration of the block."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.remove()


def _on_a_free_port(start: Callable[[int], None]) -> int:
    """The port ``start`` started a server on: a free one, another if that was taken first."""
    for _ in range(PORT_TRIES - 1):
        port = free_port()
        try:
            start(port)
            return port
        except PortTaken:
            continue
    port = free_port()
    start(port)
    return port


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(condition: Any, *, timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def all_at_once(tmp_path: Path, prepare: str, act: str, count: int = 10) -> None:
    """Start ``count`` Python processes that run ``prepare`` (imports, say), then ``act`` at the
    same moment, when a file appears; assert that each one exited 0."""
    go = tmp_path / "go"
    script = (
        f"{prepare}\n"
        "import pathlib, time\n"
        "print('ready', flush=True)\n"
        f"while not pathlib.Path({str(go)!r}).exists(): time.sleep(0.005)\n"
        f"{act}\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    assert all(process.stdout.readline() == "ready\n" for process in processes if process.stdout)
    go.touch()
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0] * count, "\n".join(errors)


@dataclass
class Stack:
    """A running API and its workers, as `make up` or the compose stack runs them."""

    url: str
    env: dict[str, str]
    logs: Path
    api: subprocess.Popen[bytes]
    worker_command: str
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def worker(self) -> subprocess.Popen[bytes]:
        """The first worker still running."""
        return next(worker for worker in self.workers if worker.poll() is None)

    def start_worker(self, prefix: str = "", **settings: str) -> subprocess.Popen[bytes]:
        """Another worker; ``prefix`` runs it under a command such as faketime, and
        ``settings`` override this stack's ``CONVLAB_*`` settings for it alone."""
        log = self.logs / f"worker-{len(self.workers) + 1}.log"
        env = {**self.env, **_settings_env(settings)}
        self.workers.append(_spawn(self.worker_command, env, log, prefix=prefix))
        return self.workers[-1]

    def restart_api(self, hard: bool = False) -> subprocess.Popen[bytes]:
        """Stop the API (SIGTERM; SIGKILL of its process group when ``hard``, a crash) and
        start its command again on the same port; returns once the new process is started."""
        if hard and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGKILL)
        stop_process(self.api)
        with (self.logs / "api.log").open("ab") as out:
            self.api = subprocess.Popen(
                self.api.args,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.api

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return httpx.Client(
            base_url=self.url, timeout=30, headers=headers, limits=CONNECTION_LIMITS
        )

    def convlab(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """The ``convlab`` command, on this stack's settings and its API (``env`` added)."""
        return subprocess.run(
            [str(BIN / "convlab"), *args],
            env={**self.env, "CONVLAB_URL": self.url, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )

    def token(self, user: str, *flags: str) -> str:
        """A new token for ``user`` (``--admin`` for an admin's)."""
        created = self.convlab("token", "create", "--user", user, *flags)
        assert created.returncode == 0, created.stderr
        return created.stdout.strip()

    def log_text(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def _settings_env(settings: dict[str, str]) -> dict[str, str]:
    return {f"CONVLAB_{key.upper()}": value for key, value in settings.items()}


def _spawn(
    command: str, env: dict[str, str], log: Path, prefix: str = ""
) -> subprocess.Popen[bytes]:
    program, *args = command.split()
    with log.open("ab") as out:  # a restarted stack keeps the earlier run's lines
        return subprocess.Popen(
            [*prefix.split(), str(BIN / program), *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM, then SIGKILL of its whole process group if it does not exit in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


@contextmanager
def running_stack(
    home: Path,
    *,
    api_command: str = API_COMMAND,
    worker_command: str = WORKER_COMMAND,
    workers: int = 1,
    **settings: str,
) -> Iterator[Stack]:
    """Start the API and ``workers`` workers with ``CONVLAB_*`` settings; stop all afterwards.

    ``api_command`` has a ``{port}`` placeholder for the free port it is given.
    """
    env = {
        **os.environ,
        "CONVLAB_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "COLUMNS": "80",  # the CLI's boxes wrap alike whatever terminal runs the tests
        **_settings_env(settings),
    }
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    api: list[subprocess.Popen[bytes]] = []
    port = _on_a_free_port(lambda port: api.append(_bound(api_command, port, env, logs)))
    stack = Stack(f"http://127.0.0.1:{port}", env, logs, api[-1], worker_command)
    try:
        for _ in range(workers):
            stack.start_worker()
        wait_for(lambda: _healthy(stack), timeout=60, what="the API's /health")
        yield stack
    except Exception:
        print(stack.log_tail())  # pytest shows a failed test's output: what the stack logged
        raise
    finally:
        for worker in stack.workers:
            stop_process(worker)
        stop_process(stack.api)


@contextmanager
def server_stack(home: Path, *, workers: int = 1, **settings: str) -> Iterator[Stack]:
    """``running_stack`` on the servers of a lab: a fresh database on the local PostgreSQL
    server and a private Redis."""
    with (
        postgres_database() as database_url,
        redis_server() as broker_url,
        running_stack(
            home, workers=workers, database_url=database_url, broker_url=broker_url, **settings
        ) as stack,
    ):
        yield stack


def _bound(command: str, port: int, env: dict[str, str], logs: Path) -> subprocess.Popen[bytes]:
    """The API started on ``port``, once uvicorn says it listens there (or it has exited, to
    be told by the health check); PortTaken if another process had bound the port first."""
    log = logs / "api.log"
    begin = log.stat().st_size if log.exists() else 0
    api = _spawn(command.format(port=port), env, log)

    def said() -> str:
        return log.read_bytes()[begin:].decode(errors="replace")

    wait_for(
        lambda: api.poll() is not None or "running on http" in said(),
        timeout=60,
        what=f"the API to listen on {port}",
    )
    if api.poll() is not None and "address already in use" in said():
        raise PortTaken(port)
    return api


@contextmanager
def stack_on(database: str, home: Path, **settings: str) -> Iterator[Stack]:
    """``running_stack`` with no worker on ``database``: "sqlite" (the embedded default) or
    "postgresql" (a fresh database on the local server)."""
    with postgres_database() if database == "postgresql" else nullcontext(None) as url:
        chosen = settings | ({"database_url": url} if url else {})
        with running_stack(home, workers=0, **chosen) as running:
            yield running


def _healthy(stack: Stack) -> bool:
    if stack.api.poll() is not None:
        raise AssertionError(f"the API exited early:\n{stack.log_tail()}")
    try:
        return httpx.get(f"{stack.url}/health", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def wait_for_status(
    client: httpx.Client, experiment_id: str, statuses: set[str], *, timeout: float = 120
) -> dict[str, Any]:
    """Poll an experiment until its status is one of ``statuses``."""

    def reached() -> dict[str, Any] | None:
        body: dict[str, Any] = client.get(f"/experiments/{experiment_id}").json()
        return body if body["status"] in statuses else None

    return wait_for(reached, timeout=timeout, what=f"experiment {experiment_id} in {statuses}")


class Trainer:
    """Makes the worker's database writes (claim, epochs, end) for tests without a worker."""

    def __init__(self, settings: Settings) -> None:
        self.engine = get_engine(settings.resolved_database_url)
        self.owner = this_process()

    def start(self, experiment_id: str) -> None:
        assert claim(self.engine, experiment_id, self.owner, lease_seconds=60, max_lost=3)

    def epoch(self, experiment_id: str, *metrics: float) -> None:
        epoch, *values = metrics
        record_epoch(
            self.engine,
            experiment_id,
            self.owner,
            EpochMetrics(int(epoch), *values),
            checkpoint=None,
            lease_seconds=60,
        )

    def finish(self, experiment_id: str, status: Status) -> None:
        finish(self.engine, experiment_id, self.owner, status)
