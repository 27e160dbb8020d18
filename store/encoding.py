"""A PostgreSQL database convlab cannot use, refused at the first connection with a sentence.

A database in SQL_ASCII (initialised without a UTF-8 locale, as some PostgreSQL images and hosts
do) hands back bytes where text is due, and SQLAlchemy fails on its first query with a
``TypeError`` that names neither PostgreSQL nor the encoding.
"""

from typing import Any

from sqlalchemy import Engine, event


class DatabaseNotUTF8(RuntimeError):
    """The PostgreSQL database convlab was given is not in UTF-8."""


def require_utf8(engine: Engine) -> None:
    """Make every new connection of ``engine`` (psycopg 3) refuse a database not in UTF-8."""

    @event.listens_for(engine, "connect", insert=True)
    def _check(dbapi_connection: Any, _record: Any) -> None:
        encoding = dbapi_connection.info.parameter_status("server_encoding")
        if encoding != "UTF8":
            database = dbapi_connection.info.dbname
            raise DatabaseNotUTF8(
                f"PostgreSQL database {database!r} is in {encoding}, and convlab needs UTF8: "
                f"create it with CREATE DATABASE {database} ENCODING 'UTF8' "
                "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' TEMPLATE template0 (the postgres "
                "image: POSTGRES_INITDB_ARGS='--encoding=UTF8 --locale=C.UTF-8' on a new volume), "
                "then move its data over with pg_dump and pg_restore."
            )
