"""Waiting out a database that blinks: a restart, a failover, a dropped connection.

A write that fails because the database cannot be reached is tried again with backoff for a
configured time, so an outage costs a worker time, not its run. Errors that retrying cannot fix
(a constraint, a bug) are raised at once.
"""

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential_jitter,
)
from tenacity.stop import stop_base

log = logging.getLogger(__name__)

T = TypeVar("T")


DATABASE_ERRORS: tuple[type[Exception], ...] = (DBAPIError, PoolTimeout)
"""What a database call raises when it fails, transient or not (``is_transient`` tells)."""


class DatabaseUnavailable(Exception):
    """The database stayed unreachable for longer than this process waits for it."""


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it wraps, as Optuna's storage does) says the database is
    unreachable or busy rather than that the statement is wrong."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OperationalError | InterfaceError | PoolTimeout):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def through_outages(
    call: Callable[[], T],
    *,
    seconds: float,
    what: str,
    give_up: threading.Event | None = None,
) -> T:
    """``call()``, tried again with backoff while the database is unreachable, for up to
    ``seconds`` (or until ``give_up`` is set); then ``DatabaseUnavailable``."""
    stop: stop_base = stop_after_delay(seconds)
    if give_up is not None:
        stop = stop | stop_when_event_set(give_up)

    def _warn(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        log.warning("database unreachable while %s (%s); trying again", what, error)

    retrying = Retrying(
        retry=retry_if_exception(is_transient),
        stop=stop,
        wait=wait_exponential_jitter(initial=0.25, max=5),
        before_sleep=_warn,
    )
    try:
        return retrying(call)
    except RetryError as exc:
        raise DatabaseUnavailable(
            f"the database stayed unreachable for {seconds:g} s while {what}"
        ) from exc.last_attempt.exception()
