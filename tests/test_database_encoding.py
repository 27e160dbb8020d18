"""A PostgreSQL database in SQL_ASCII is refused at start with a sentence saying what to do,
not a SQLAlchemy TypeError."""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.services import ROOT, postgres_database


@pytest.fixture
def sql_ascii_database() -> Iterator[str]:
    """A database in SQL_ASCII on the local PostgreSQL, dropped afterwards."""
    with postgres_database(
        "ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
    ) as url:
        yield url


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
