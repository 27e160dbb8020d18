"""The ``notify`` field of a submission: refused (422 at ``notify``) where the server would not
send to it (``store.notifications.ask_to_notify`` records it, and ``jobs.notify`` sends it)."""

from core.config import Settings
from jobs.notify import refusal
from models.errors import SpecError, error_entry

NO_SECRET = "This server sends no notifications: CONVLAB_NOTIFY_SECRET is not set."


def check_notify(url: str | None, settings: Settings) -> None:
    """A SpecError at ``notify`` if the server will not notify ``url``."""
    if url is None:
        return
    problem = NO_SECRET if settings.notify_secret is None else refusal(url, settings.notify_hosts)
    if problem is not None:
        raise SpecError([error_entry(("notify",), problem, url)])
