"""One process at a time: the API's background loops (the sweeper, the notifier) run in the
one API process that holds a lock on the database, however many processes serve it.

On PostgreSQL the lock is a session-level advisory lock, held by a connection kept open for as
long as the process holds it: a process that dies (killed, its machine gone) closes its session
and the lock is free at once; the others try to take it at every pass. Its holder names itself
in ``pg_stat_activity.application_name`` (see ``holder``). SQLite serves one machine, so there
the lock is a file lock (``flock``) beside the database file, which the kernel releases when its
process dies; the holder writes its pid into that file.
"""

import contextlib
import fcntl
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from sqlalchemy import Connection, Engine, text

from store.outages import DATABASE_ERRORS
from store.tables import utcnow

log = logging.getLogger(__name__)

LOOPS_LOCK = 7210252
"""The advisory lock's key (the migrations hold 7210251)."""
SEARCHES_LOCK = 7210253
"""The lock a process holds while it advances a search (``jobs.search.advance``), in the high
32 bits of each search's key on PostgreSQL."""
TRY_EVERY_S = 0.05
"""How often ``one_at_a_time`` tries a lock that another holds."""
UNREACHABLE: tuple[type[Exception], ...] = (*DATABASE_ERRORS, OSError)
"""What ``held`` answers False to: the database, or the lock file, out of reach."""
HOLDER_PREFIX = "convlab loops"
"""How the holder's lock connection starts its ``application_name`` on PostgreSQL."""


class Singleton:
    """Holds, or tries at each ``held`` to take, a lock that one process of all those sharing
    ``engine``'s database may hold at a time. Thread-safe."""

    def __init__(self, engine: Engine, key: int = LOOPS_LOCK) -> None:
        self.engine = engine
        self.key = key
        self._mutex = threading.Lock()
        self._connection: Connection | None = None
        self._file: IO[str] | None = None
        self._holding = False
        self.taken_at: datetime | None = None
        """When this process last took the lock (None while it does not hold it)."""

    def held(self) -> bool:
        """Whether this process holds the lock now, taking it if it is free; False (logged)
        while the database cannot be reached."""
        with self._mutex:
            had, self._holding = self._holding, False
            try:
                if self.engine.dialect.name == "postgresql":
                    holds = self._hold_advisory_lock()
                else:
                    holds = self._hold_file_lock()
            except UNREACHABLE as exc:
                log.warning("could not take or check the lock of the API's loops (%s)", exc)
                return False
            if holds and not had:
                log.info("process %d took the lock: it runs the API's loops", os.getpid())
                self.taken_at = utcnow()
            self._holding = holds
            if not holds:
                self.taken_at = None
            return holds

    def release(self) -> None:
        """Give the lock up (at shutdown), so that another process takes it at its next try."""
        with self._mutex:
            self._holding, self.taken_at = False, None
            if self._connection is not None:
                with contextlib.suppress(*DATABASE_ERRORS):
                    self._connection.execute(
                        text("SELECT pg_advisory_unlock(:key)"), {"key": self.key}
                    )
                self._drop_connection()
            if self._file is not None:
                self._file.close()  # closing the only descriptor releases the flock
                self._file = None

    def _hold_advisory_lock(self) -> bool:
        if self._connection is not None:
            try:
                self._connection.execute(text("SELECT 1"))  # a live session keeps its lock
                return True
            except DATABASE_ERRORS:
                log.warning("the API's loops lost their database session, and with it the lock")
                self._drop_connection()
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            taken = connection.execute(  # one statement: the holder is named as it takes it
                text(
                    "SELECT CASE WHEN pg_try_advisory_lock(:key) "
                    "THEN set_config('application_name', :name, false) IS NOT NULL "
                    "ELSE false END"
                ),
                {
                    "key": self.key,
                    "name": f"{HOLDER_PREFIX} {socket.gethostname()} pid {os.getpid()}"[:63],
                },
            ).scalar_one()
        except BaseException:
            connection.invalidate()
            connection.close()
            raise
        if not taken:
            connection.close()
            return False
        self._connection = connection
        return True

    def _drop_connection(self) -> None:
        """Close the lock's connection without handing it back to the pool (it carries the
        holder's name, and perhaps the lock)."""
        assert self._connection is not None
        with contextlib.suppress(*DATABASE_ERRORS):
            self._connection.invalidate()
            self._connection.close()
        self._connection = None

    def _hold_file_lock(self) -> bool:
        if self._file is not None:
            return True
        path = lock_file(self.engine)
        if path is None:  # an in-memory database lives in one process only
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        file = open(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+")  # noqa: SIM115
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            return False
        file.seek(0)
        file.write(f"{os.getpid()}\n")  # over the last holder's pid, so never an empty file
        file.truncate()
        file.flush()
        self._file = file
        return True


def lock_file(engine: Engine, name: str = "loops") -> Path | None:
    """The file whose lock the holder keeps, beside a SQLite database file (None in memory)."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(f"{database}.{name}-lock")


@contextlib.contextmanager
def one_at_a_time(engine: Engine, key: int, name: str, *, wait_s: float) -> Iterator[bool]:
    """Whether this process (or thread) took lock ``key`` within ``wait_s``, held while the
    block runs: one of all those sharing ``engine``'s database at a time, and none waits
    longer for a holder that hangs. On PostgreSQL a transaction-level advisory lock on a
    connection of its own, released however the block ends; on SQLite the file lock of
    ``lock_file(engine, name)`` (for every key); always taken on an in-memory database."""
    deadline = time.monotonic() + wait_s
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection, connection.begin():
            try_lock = text("SELECT pg_try_advisory_xact_lock(:key)")
            while not (taken := connection.execute(try_lock, {"key": key}).scalar_one()):
                if time.monotonic() > deadline:
                    break
                time.sleep(TRY_EVERY_S)
            yield bool(taken)
        return
    path = lock_file(engine, name)
    if path is None:
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:  # closing it releases the lock
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(TRY_EVERY_S)
            else:
                yield True
                return


def holder(engine: Engine, key: int = LOOPS_LOCK) -> str | None:
    """Who holds the lock now: on PostgreSQL the holder's ``application_name`` ("convlab loops
    HOST pid PID"), on SQLite "pid PID" from the lock file (which this takes for an instant
    when it is free, so a process trying then waits one pass more); None when nobody does."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            found = connection.execute(
                text(
                    "SELECT activity.application_name FROM pg_locks AS locks "
                    "JOIN pg_stat_activity AS activity ON activity.pid = locks.pid "
                    "WHERE locks.locktype = 'advisory' AND locks.granted "
                    "AND locks.database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database()) "
                    "AND locks.classid::bigint = :high AND locks.objid::bigint = :low "
                    "AND locks.objsubid = 1"
                ),
                {"high": key >> 32, "low": key & 0xFFFFFFFF},
            ).scalar_one_or_none()
        return None if found is None else str(found)
    path = lock_file(engine)
    if path is None or not path.exists():
        return None
    with path.open() as file:
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return f"pid {file.readline().strip() or '(being written)'}"
        fcntl.flock(file, fcntl.LOCK_UN)  # free: nobody holds it
        return None
