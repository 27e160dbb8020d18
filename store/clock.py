"""The database's clock, for leases: one time for every machine, whatever their own clocks say.

A worker whose clock runs 90 s behind would otherwise write leases that have already expired,
and one 90 s ahead leases that outlive it by 90 s.
"""

from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlmodel import Session

_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_POSTGRES_NOW = text("SELECT clock_timestamp(), pg_postmaster_start_time()")


def db_now(session: Session) -> datetime:
    """The database server's current time, in UTC."""
    return _read(session)[0]


def takeover_cutoff(session: Session, lease_seconds: float) -> tuple[datetime, datetime | None]:
    """The database's time, and the time before which an expired lease means its holder is
    gone: None in the first lease period after the database server started, when holders that
    were alive had no way to renew while it was down."""
    now, started = _read(session)
    restarted_lately = started is not None and now - started < timedelta(seconds=lease_seconds)
    return now, None if restarted_lately else now


def _read(session: Session) -> tuple[datetime, datetime | None]:
    """(now, when the server started); SQLite runs in this process and has no start time."""
    if session.get_bind().dialect.name == "postgresql":
        now, started = session.connection().execute(_POSTGRES_NOW).one()
        return now, started
    stamp = session.connection().execute(_SQLITE_NOW).scalar_one()
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC), None
