"""Notifications: when an experiment or study with a ``notify`` URL ends, the API POSTs a JSON
body about it there, signed with HMAC-SHA256 (``X-Convlab-Signature: sha256=<hex>``, key
``CONVLAB_NOTIFY_SECRET``), retrying with a doubling backoff; the outcome is recorded on the
row as the receiver's status code, or a sentence of the server's own. A URL whose host is a
loopback, private or otherwise non-public address is refused at submit and again before each
attempt, unless ``CONVLAB_NOTIFY_ALLOWED_HOSTS`` lists the host; an attempt looks the name up
once and connects to the addresses it checked (``jobs.webhook``), so a name that resolves
elsewhere by the time of the connection cannot lead it into the LAN. The notifications due
are sent side by side, each attempt ending by ``CONVLAB_NOTIFY_TIMEOUT_S``: a slow receiver
holds no other."""

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import Any
from urllib.parse import SplitResult, urlsplit

from core.config import Settings
from jobs.search import trials_to_come
from jobs.webhook import Unanswered, post
from models.status import ACTIVE
from models.study_state import progress, status_of
from store.db import Engine
from store.notifications import Delivery, Notified, due, record_outcome, take_attempt
from store.tables import Experiment, Study

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Convlab-Signature"


def refusal(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Why the server will not POST to ``url`` (a sentence), or None. A host that
    ``allowed_hosts`` lists is not looked up (it need not resolve before the run ends)."""
    parts = urlsplit(url)
    if (problem := _not_http(parts)) is not None:
        return problem
    if (parts.hostname or "").lower() in allowed_hosts:
        return None
    found = addresses(url, allowed_hosts)
    return found if isinstance(found, str) else None


def addresses(url: str, allowed_hosts: frozenset[str]) -> list[str] | str:
    """The addresses of ``url``'s host, looked up once, every one of them public unless
    ``allowed_hosts`` lists the host; else why the server will not POST there (a sentence)."""
    parts = urlsplit(url)
    if (problem := _not_http(parts)) is not None:
        return problem
    host = (parts.hostname or "").lower()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, ValueError, UnicodeError) as exc:
        return f"{host} does not resolve from this server ({exc})."
    ordered = list(dict.fromkeys(str(info[4][0]) for info in found))
    if host in allowed_hosts:
        return ordered
    for address in ordered:
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            return (
                f"{host} is a loopback or private address ({address}); this server notifies "
                "such a host only if CONVLAB_NOTIFY_ALLOWED_HOSTS lists it."
            )
    return ordered


def _not_http(parts: SplitResult) -> str | None:
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{parts.geturl()!r} is not an http:// or https:// URL with a host."
    return None


def signature(secret: str, body: bytes) -> str:
    """The ``X-Convlab-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_due(engine: Engine, settings: Settings) -> int:
    """Send each notification that is due once, side by side (the pass lasts about one
    attempt's deadline however many receivers are slow); the number sent successfully."""
    if settings.notify_secret is None:
        return 0
    runs, studies = due(engine)
    bodies: list[tuple[Notified, dict[str, Any]]] = [(run, _about_run(run)) for run in runs]
    for study, members in studies:
        status = status_of(members, trials_to_come(study))
        if status not in ACTIVE:
            bodies.append((study, _about_study(study, members, status)))
    if not bodies:
        return 0
    with ThreadPoolExecutor(len(bodies), thread_name_prefix="notify") as senders:
        sent = senders.map(lambda job: _attempt(engine, settings, *job), bodies)
        return sum(sent)


def _attempt(engine: Engine, settings: Settings, row: Notified, body: dict[str, Any]) -> bool:
    """One delivery attempt, recorded; whether it was delivered."""
    attempt = row.notify_attempts + 1
    backoff = settings.notify_retry_s * 2 ** (attempt - 1)
    if not take_attempt(engine, row, retry_after_s=backoff) or row.notify_url is None:
        return False
    problem = _send(row.notify_url, body, settings)
    if problem is None:
        record_outcome(engine, row, Delivery.delivered, None)
        return True
    final = attempt >= settings.notify_attempts
    state = Delivery.failed if final else Delivery.pending
    record_outcome(engine, row, state, f"attempt {attempt}: {problem}")
    log.warning("notification of %s %s, attempt %d: %s", body["kind"], row.id, attempt, problem)
    return False


def _send(url: str, body: dict[str, Any], settings: Settings) -> str | None:
    """POST the signed body to the addresses checked now; None if the receiver answered 2xx,
    else what went wrong: its status code with the standard phrase, or the server's words."""
    checked = addresses(url, settings.notify_hosts)  # the allow-list as it stands now
    if isinstance(checked, str):
        return checked
    data = json.dumps(body, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(settings.notify_secret or "", data),
        "X-Convlab-Delivery": f"{body['kind']}:{body['id']}",
    }
    try:
        status = post(url, checked, data, headers, deadline_s=settings.notify_timeout_s)
    except Unanswered as exc:
        return str(exc)
    if 200 <= status < 300:
        return None
    redirect = " (redirects are not followed)" if 300 <= status < 400 else ""
    return f"the receiver answered {_status_line(status)}{redirect}"


def _status_line(status: int) -> str:
    """``status`` with its standard phrase (the receiver's own phrase is never shown)."""
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _about_run(run: Experiment) -> dict[str, Any]:
    return {
        "kind": "experiment",
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "epochs_done": run.epochs_done,
        "epochs_total": run.epochs_total,
        "final": run.final,
        "best": run.best,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _about_study(study: Study, members: list[Experiment], status: str) -> dict[str, Any]:
    return {
        "kind": "study",
        "id": study.id,
        "name": study.name,
        "status": status,
        "progress": progress(members),
    }
