"""Database engine, sessions and migrations, shared by the API and the worker."""

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlmodel import Session

from core.config import get_settings
from store.encoding import require_utf8

MIGRATIONS = Path(__file__).with_name("migrations")
VERSION_TABLE = "convlab_alembic_version"
"""Not Alembic's default name: Optuna keeps its own schema version in the same database."""
SQLITE_BUSY_TIMEOUT_MS = 30_000
"""How long a SQLite statement waits for another connection's write lock before it fails."""


@cache
def get_engine(url: str | None = None) -> Engine:
    """The process's engine for ``url`` (default: the configured database)."""
    settings = get_settings()
    url = url or settings.resolved_database_url
    pool = {"pool_size": settings.db_pool_size, "max_overflow": 10}
    if not is_sqlite(url):
        engine = create_engine(url, pool_pre_ping=True, **pool)
        require_utf8(engine)
        return engine
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect in a new database
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


def is_sqlite(url: str) -> bool:
    """Whether ``url`` names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def sqlite_file_of(url: str) -> str | None:
    """The file a SQLite URL names (None for an in-memory one)."""
    return make_url(url).database


def open_session(engine: Engine) -> Session:
    """A session on ``engine`` whose rows stay readable after a commit (the caller closes it,
    with ``with``)."""
    return Session(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits when the block succeeds and rolls back when it raises."""
    with open_session(engine or get_engine()) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def engine_of(session: Session) -> Engine:
    """The engine ``session`` is bound to."""
    engine = session.get_bind()
    assert isinstance(engine, Engine), "a session bound to an engine"
    return engine


def migrate(engine: Engine | None = None, revision: str = "head") -> None:
    """Apply every Alembic migration up to ``revision``; safe when the API and workers start at
    once."""
    _run_migrations(engine or get_engine(), command.upgrade, revision)


def downgrade(engine: Engine, revision: str) -> None:
    """Undo the migrations above ``revision``, keeping the rows of the tables that remain."""
    _run_migrations(engine, command.downgrade, revision)


def _run_migrations(engine: Engine, step: Callable[[Config, str], None], revision: str) -> None:
    """Run ``step`` to ``revision`` in one transaction under the migration lock. On SQLite,
    foreign keys are off meanwhile (recreating ``experiments`` would otherwise cascade-delete
    its epochs and checkpoints) and checked before the commit."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with (
        schema_lock(engine),
        engine.connect() as connection,
        _sqlite_foreign_keys_off(connection),
        connection.begin(),
    ):
        if sqlite:  # the driver begins only before DML: a failure would keep earlier DDL
            connection.exec_driver_sql("BEGIN")
        config.attributes["connection"] = connection
        step(config, revision)
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
            if broken:
                raise RuntimeError(f"migration to {revision} broke foreign keys: {broken}")


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """SQLite's foreign keys off on ``connection`` for the block, on again after it; to be
    entered before a transaction begins, since SQLite ignores the pragma inside one."""
    if connection.dialect.name != "sqlite":
        yield
        return
    _set_sqlite_foreign_keys(connection, on=False)
    try:
        yield
    finally:
        try:
            _set_sqlite_foreign_keys(connection, on=True)
        except BaseException:
            connection.invalidate()  # never hand the pool back a connection without them
            raise


def _set_sqlite_foreign_keys(connection: Connection, *, on: bool) -> None:
    """Set the pragma on the driver's connection (no SQLAlchemy transaction begins) and check
    that SQLite took it."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(f"PRAGMA foreign_keys={'ON' if on else 'OFF'}")
        cursor.execute("PRAGMA foreign_keys")
        row = cursor.fetchone()
        if row is None or row[0] != on:
            raise RuntimeError("SQLite ignored PRAGMA foreign_keys: a transaction was open")
    finally:
        cursor.close()


@contextmanager
def schema_lock(engine: Engine) -> Iterator[None]:
    """Serialize schema changes across processes (convlab's migrations, Optuna creating its
    tables): an advisory lock on PostgreSQL, a file lock beside a SQLite file."""
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(7210251)"))
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(7210251)"))
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with sqlite_file_lock(database):
        yield


@contextmanager
def sqlite_file_lock(database: str) -> Iterator[None]:
    """An exclusive lock, across processes, on a file beside the SQLite file ``database``."""
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{database}.migrate-lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def upsert(
    session: Session,
    table: Any,
    values: dict[str, Any],
    *,
    keys: tuple[str, ...],
    update: tuple[str, ...] | None = None,
) -> None:
    """Insert ``values`` into ``table``, or on a row with the same ``keys`` set its ``update``
    columns (default: every one given but the keys), on SQLite and PostgreSQL alike."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table).values(**values)
    changed = update if update is not None else [key for key in values if key not in keys]
    statement = statement.on_conflict_do_update(
        index_elements=list(keys), set_={key: statement.excluded[key] for key in changed}
    )
    session.exec(statement)
