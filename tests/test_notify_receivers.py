"""Notifications against receivers and resolvers that try to hurt the server: a running API (its
names resolved by ``tests/resolver``, the only thing planted in it) and real receivers on
loopback. No receiver gets the server to connect where it did not check, to follow a redirect,
to hold an attempt past its deadline, to read a large answer, or to store the receiver's words."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.receivers import Receiver, receiver
from tests.services import ROOT, Stack, running_stack, wait_for

DEADLINE_S = 2.0
REBOUND = "rebound.convlab.test"
"""Public when checked (a multicast address: TCP cannot connect to it, so no packet leaves this
machine), then 127.0.0.1 from its third look-up on."""
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
SETTINGS = {
    "notify_secret": "a test secret of the lab",
    "notify_allowed_hosts": "127.0.0.1",
    "notify_timeout_s": str(DEADLINE_S),
    "notify_attempts": "1",
    "sweep_interval_s": "0.2",
    "test_resolve": f"{REBOUND}=224.0.0.1,224.0.0.1,127.0.0.1",
}


@pytest.fixture(scope="module")
def hooks() -> Iterator[Receiver]:
    with receiver() as running:
        yield running


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("notify")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", str(ROOT / "tests" / "resolver"))
        with running_stack(home, workers=0, **SETTINGS) as running:
            yield running


def _submit(client: httpx.Client, url: str) -> str:
    created = client.post("/experiments", json={**RUN, "notify": url})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _end(client: httpx.Client, experiment_id: str) -> float:
    """Cancel the queued run (it ends at once); when."""
    assert client.post(f"/experiments/{experiment_id}/cancel").status_code == 202
    return time.monotonic()


def _outcome(client: httpx.Client, experiment_id: str, timeout: float = 20) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        notification = client.get(f"/experiments/{experiment_id}").json()["notification"]
        return None if notification["state"] == "pending" else notification

    return dict(wait_for(settled, timeout=timeout, what="the notification's outcome", every=0.1))


def _memory_peak_kb(stack: Stack) -> int:
    status = Path(f"/proc/{stack.api.pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])


def test_a_redirect_is_not_followed_and_recorded_as_its_status(
    stack: Stack, hooks: Receiver
) -> None:
    with stack.client() as client:
        run = _submit(client, f"{hooks.url}/redirect")
        _end(client, run)
        notification = _outcome(client, run)
    assert notification["state"] == "failed"
    assert notification["error"] == (
        "attempt 1: the receiver answered 307 Temporary Redirect (redirects are not followed)"
    )
    assert len(hooks.at("/redirect")) == 1
    assert hooks.at("/caught") == []


def test_a_name_that_turns_private_after_its_check_is_never_connected_to(
    stack: Stack, hooks: Receiver
) -> None:
    port = hooks.url.rsplit(":", 1)[1]
    with stack.client() as client:
        run = _submit(client, f"http://{REBOUND}:{port}/rebound")  # checked: public
        _end(client, run)
        notification = _outcome(client, run)
    assert hooks.at("/rebound") == []  # the loopback listener never got the POST
    assert notification["state"] == "failed"
    assert notification["error"] == "attempt 1: could not connect (TCP or TLS)"


def test_a_receivers_own_words_are_never_stored(stack: Stack, hooks: Receiver) -> None:
    with stack.client() as client:
        banner, failing = (
            _submit(client, f"{hooks.url}/banner"),
            _submit(client, f"{hooks.url}/fail"),
        )
        _end(client, banner)
        _end(client, failing)
        errors = [_outcome(client, run)["error"] for run in (banner, failing)]
    assert errors == [
        "attempt 1: the answer was not HTTP",
        "attempt 1: the receiver answered 500 Internal Server Error",
    ]


def test_slow_receivers_hold_neither_another_notification_nor_the_servers_memory(
    stack: Stack, hooks: Receiver
) -> None:
    peak_before = _memory_peak_kb(stack)
    with stack.client() as client:
        slow = {
            path: _submit(client, f"{hooks.url}{path}") for path in ("/drip", "/silent", "/flood")
        }
        prompt = _submit(client, f"{hooks.url}/prompt")
        for run in slow.values():
            _end(client, run)
        ended = _end(client, prompt)
        outcomes = {path: _outcome(client, run) for path, run in slow.items()}
        assert _outcome(client, prompt)["state"] == "delivered"
    (arrived,) = hooks.at("/prompt")
    assert arrived.at - ended < 2 * DEADLINE_S  # held by one slow attempt at most, not two
    no_answer = f"attempt 1: no answer within {DEADLINE_S:g} s"
    assert outcomes["/drip"] == {"state": "failed", "attempts": 1, "error": no_answer}
    assert outcomes["/silent"] == {"state": "failed", "attempts": 1, "error": no_answer}
    assert outcomes["/flood"]["state"] == "delivered"  # its status line said 200
    grown_mb = (_memory_peak_kb(stack) - peak_before) / 1024
    assert grown_mb < 16, f"the API's peak memory grew by {grown_mb:.0f} MB"


def test_a_receiver_that_never_answers_is_given_up_at_the_deadline(
    stack: Stack, hooks: Receiver
) -> None:
    with stack.client() as client:
        run = _submit(client, f"{hooks.url}/silent?never")
        _end(client, run)
        wait_for(lambda: hooks.at("/silent?never"), timeout=10, what="the attempt")
        (arrived,) = hooks.at("/silent?never")
        notification = _outcome(client, run)
        settled = time.monotonic()
    assert notification["error"] == f"attempt 1: no answer within {DEADLINE_S:g} s"
    assert DEADLINE_S - 0.5 < settled - arrived.at < DEADLINE_S + 1.5


def test_a_host_taken_off_the_allow_list_after_submit_is_refused_at_send(
    stack: Stack, hooks: Receiver
) -> None:
    with stack.client() as client:
        run = _submit(client, f"{hooks.url}/unlisted")  # 127.0.0.1 is allowed at submit
    _restart(stack, notify_allowed_hosts="")
    try:
        with stack.client() as client:
            _end(client, run)
            notification = _outcome(client, run)
    finally:
        _restart(stack, notify_allowed_hosts=SETTINGS["notify_allowed_hosts"])
    assert hooks.at("/unlisted") == []
    assert notification["state"] == "failed"
    assert notification["error"] == (
        "attempt 1: 127.0.0.1 is a loopback or private address (127.0.0.1); this server "
        "notifies such a host only if CONVLAB_NOTIFY_ALLOWED_HOSTS lists it."
    )


def _restart(stack: Stack, **settings: str) -> None:
    stack.env.update({f"CONVLAB_{key.upper()}": value for key, value in settings.items()})
    stack.restart_api()

    def healthy() -> bool:
        try:
            return httpx.get(f"{stack.url}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(healthy, timeout=60, what="the restarted API")
