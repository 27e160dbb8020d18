"""Event streams under abuse, against a running API with auth on and no worker (queued work
never finishes, so its streams stay open): caps per user and in all, answered before a stream
starts; slots freed when streams end; a revoked token's stream ends; hostile Last-Event-IDs."""

import time
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest

from api.streams import TOKEN_CHECK_SECONDS
from tests.events import parse_events
from tests.services import Stack, running_stack, wait_for

PER_USER, TOTAL = 2, 5
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {
        "auth": "true",
        "max_event_streams_per_user": str(PER_USER),
        "max_event_streams": str(TOTAL),
    }
    with running_stack(tmp_path_factory.mktemp("streams"), workers=0, **settings) as running:
        yield running


@pytest.fixture(scope="module")
def users(stack: Stack) -> Iterator[dict[str, httpx.Client]]:
    """Clients of four users; each test closes the streams it opens."""
    with ExitStack() as clients:
        yield {
            user: clients.enter_context(stack.client(stack.token(user)))
            for user in ("alice", "bob", "carol", "dave")
        }


@pytest.fixture(scope="module")
def urls(users: dict[str, httpx.Client]) -> dict[str, str]:
    """The event streams of a queued experiment and a queued study: they never end by
    themselves here."""
    alice = users["alice"]
    experiment = alice.post("/experiments", json=RUN).json()["id"]
    study = alice.post("/studies", json={**RUN, "presets": ["base", "dropout"]}).json()["id"]
    return {"experiment": f"/experiments/{experiment}/events", "study": f"/studies/{study}/events"}


def _open(
    streams: ExitStack, client: httpx.Client, url: str, headers: dict[bytes, bytes] | None = None
) -> httpx.Response:
    """A stream opened (its headers read) and closed when ``streams`` closes."""
    return streams.enter_context(client.stream("GET", url, headers=headers, timeout=10))


def _open_when_free(streams: ExitStack, client: httpx.Client, url: str) -> httpx.Response:
    """A stream, once slots freed by closed streams are free (the server sees a closed
    connection a moment after the client closes it)."""

    def opened() -> httpx.Response | None:
        response = _open(streams, client, url)
        if response.status_code == 429:
            response.close()
            return None
        return response

    response: httpx.Response = wait_for(opened, timeout=10, what=f"a free stream slot, {url}")
    assert response.status_code == 200
    return response


def _refused(client: httpx.Client, url: str, setting: str) -> None:
    """429, with a Retry-After, naming ``setting``, and no stream."""
    response = client.get(url, timeout=10)
    assert response.status_code == 429, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert setting in response.json()["detail"]


def test_a_user_over_the_cap_is_refused_while_another_user_is_not(
    users: dict[str, httpx.Client], urls: dict[str, str]
) -> None:
    alice, bob = users["alice"], users["bob"]
    with ExitStack() as streams:
        first = _open_when_free(streams, alice, urls["experiment"])
        _open_when_free(streams, alice, urls["study"])
        _refused(alice, urls["experiment"], "CONVLAB_MAX_EVENT_STREAMS_PER_USER")
        _open_when_free(streams, bob, urls["experiment"])

        first.close()  # closing a stream frees its slot
        _open_when_free(streams, alice, urls["experiment"])
        _refused(alice, urls["study"], "CONVLAB_MAX_EVENT_STREAMS_PER_USER")


def test_the_server_refuses_streams_over_its_total_cap_until_one_closes(
    users: dict[str, httpx.Client], urls: dict[str, str]
) -> None:
    openers = [users["bob"], users["carol"], users["dave"]]
    with ExitStack() as streams:
        opened = [
            _open_when_free(streams, openers[n // PER_USER], urls["experiment"])
            for n in range(TOTAL)
        ]
        _refused(users["alice"], urls["experiment"], "CONVLAB_MAX_EVENT_STREAMS")

        opened[0].close()
        _open_when_free(streams, users["alice"], urls["experiment"])
        _refused(users["dave"], urls["study"], "CONVLAB_MAX_EVENT_STREAMS")


def test_streams_that_end_by_themselves_free_their_slots(
    users: dict[str, httpx.Client], urls: dict[str, str]
) -> None:
    carol = users["carol"]
    experiment = carol.post("/experiments", json=RUN).json()["id"]
    url = f"/experiments/{experiment}/events"
    with ExitStack() as streams:
        ending = [_open_when_free(streams, carol, url) for _ in range(PER_USER)]
        assert carol.post(f"/experiments/{experiment}/cancel").status_code == 202
        for stream in ending:
            events = list(parse_events(stream.iter_lines()))  # ends once cancelled
            assert events[-1]["data"]["status"] == "cancelled"
        for _ in range(PER_USER):
            _open_when_free(streams, carol, urls["study"])


def test_a_revoked_tokens_stream_ends_within_seconds(stack: Stack, urls: dict[str, str]) -> None:
    token = stack.token("hank")
    with ExitStack() as streams, stack.client(token) as hank:
        events = parse_events(_open_when_free(streams, hank, urls["study"]).iter_lines())
        assert next(events)["event"] == "experiment"
        revoked = stack.convlab("token", "revoke", token.split("_")[1])
        assert revoked.returncode == 0, revoked.stderr
        since = time.monotonic()
        last = list(events)[-1]
        assert time.monotonic() - since < TOKEN_CHECK_SECONDS + 2  # a check, a poll and slack
        assert last["event"] == "revoked"
        assert "revoked" in last["data"]["detail"]


@pytest.mark.parametrize(
    "last_event_id",
    [
        b"\xb2",  # '²' in Latin-1, how headers are read: isdigit() says yes, int() refuses
        "²".encode(),
        b"-1",
        b"9" * 20,
        b"9" * 5000,  # over int()'s limit on digits
        b"2147483648",
        b"abc",
        b"1 2",
        b"0123456789ab:\xb2",
        b"0123456789ab:" + b"9" * 20,
        b"0123456789ab:1.",
    ],
)
def test_a_last_event_id_this_server_did_not_write_is_ignored(
    users: dict[str, httpx.Client], urls: dict[str, str], last_event_id: bytes
) -> None:
    for url in urls.values():
        with ExitStack() as streams:
            response = _open(streams, users["dave"], url, {b"Last-Event-ID": last_event_id})
            assert response.status_code == 200, response.read()
            first = next(parse_events(response.iter_lines()))
            assert first["event"] in {"status", "experiment"}
