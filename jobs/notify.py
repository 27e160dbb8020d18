"""Notifications: when an experiment or study with a ``notify`` URL ends, the API POSTs a JSON
body about it there, signed with HMAC-SHA256 (``X-Convlab-Signature: sha256=<hex>``, key
``CONVLAB_NOTIFY_SECRET``), retrying with a doubling backoff; the outcome is recorded on the
row. A URL whose host is a loopback, private or otherwise non-public address is refused at
submit and again before each attempt (its name may resolve elsewhere by then), unless
``CONVLAB_NOTIFY_ALLOWED_HOSTS`` lists the host."""

import hashlib
import hmac
import ipaddress
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import Engine

from core.config import Settings
from jobs.search import trials_to_come
from store.notifications import Delivery, Notified, due, record_outcome, take_attempt
from store.studies import progress, status_of
from store.tables import ACTIVE, Experiment, Study

log = logging.getLogger(__name__)
SIGNATURE_HEADER = "X-Convlab-Signature"


def refusal(url: str, allowed_hosts: frozenset[str]) -> str | None:
    """Why the server will not POST to ``url`` (a sentence), or None."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return f"{url!r} is not an http:// or https:// URL with a host."
    if host in allowed_hosts:
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = {str(info[4][0]) for info in found}
    except (OSError, ValueError, UnicodeError) as exc:
        return f"{host} does not resolve from this server ({exc})."
    for address in sorted(addresses):
        if not ipaddress.ip_address(address.split("%")[0]).is_global:
            return (
                f"{host} is a loopback or private address ({address}); this server notifies "
                "such a host only if CONVLAB_NOTIFY_ALLOWED_HOSTS lists it."
            )
    return None


def signature(secret: str, body: bytes) -> str:
    """The ``X-Convlab-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliver_due(engine: Engine, settings: Settings) -> int:
    """Send each notification that is due once; the number sent successfully."""
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
    with httpx.Client(timeout=settings.notify_timeout_s, follow_redirects=False) as client:
        return sum(_attempt(engine, settings, client, row, body) for row, body in bodies)


def _attempt(
    engine: Engine, settings: Settings, client: httpx.Client, row: Notified, body: dict[str, Any]
) -> bool:
    """One delivery attempt, recorded; whether it was delivered."""
    attempt = row.notify_attempts + 1
    backoff = settings.notify_retry_s * 2 ** (attempt - 1)
    if not take_attempt(engine, row, retry_after_s=backoff) or row.notify_url is None:
        return False
    problem = refusal(row.notify_url, settings.notify_hosts)
    if problem is None:
        problem = _post(client, row.notify_url, body, settings.notify_secret or "")
    if problem is None:
        record_outcome(engine, row, Delivery.delivered, None)
        return True
    final = attempt >= settings.notify_attempts
    state = Delivery.failed if final else Delivery.pending
    record_outcome(engine, row, state, f"attempt {attempt}: {problem}")
    log.warning("notification of %s %s, attempt %d: %s", body["kind"], row.id, attempt, problem)
    return False


def _post(client: httpx.Client, url: str, body: dict[str, Any], secret: str) -> str | None:
    """POST the signed body; None if the receiver answered 2xx, else what went wrong."""
    data = json.dumps(body, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: signature(secret, data),
        "X-Convlab-Delivery": f"{body['kind']}:{body['id']}",
    }
    try:
        response = client.post(url, content=data, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if response.is_success:
        return None
    return f"the receiver answered {response.status_code} {response.reason_phrase}"


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
