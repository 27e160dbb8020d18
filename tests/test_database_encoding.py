"""A PostgreSQL database in SQL_ASCII is refused at start with a sentence saying what to do,
not a SQLAlchemy TypeError."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tests.services import POSTGRES_ADMIN_URL, ROOT, missing


@pytest.fixture
def sql_ascii_database() -> Iterator[str]:
    """A database in SQL_ASCII on the local PostgreSQL, dropped afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"convlab_ascii_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(
                text(
                    f"CREATE DATABASE \"{name}\" ENCODING 'SQL_ASCII' LC_COLLATE 'C' "
                    "LC_CTYPE 'C' TEMPLATE template0"
                )
            )
    except Exception as exc:
        admin.dispose()
        missing(f"PostgreSQL at {POSTGRES_ADMIN_URL} ({type(exc).__name__}: {exc})")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_start_on_a_sql_ascii_database_says_to_make_it_utf8(sql_ascii_database: str) -> None:
    started = subprocess.run(
        [sys.executable, "-m", "commands.migrate"],
        cwd=ROOT,
        env={**os.environ, "CONVLAB_DATABASE_URL": sql_ascii_database},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode != 0
    last = started.stderr.strip().splitlines()[-1]
    assert "is in SQL_ASCII, and convlab needs UTF8" in last, started.stderr
    assert "ENCODING 'UTF8'" in last
