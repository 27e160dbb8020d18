"""The front door under abuse, over HTTP against a running API: malformed paging cursors, names
that look like mathtext, methods a path does not have, foreign Host headers and a broker that
is away are each a 4xx or 503 with a sentence, never a 500 or a leaked address."""

import base64
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from core.config import Settings
from tests.pictures import PNG_SIGNATURE
from tests.services import Stack, free_port, running_stack, wait_for

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
CURSOR_SENTENCE = "The cursor is not one this server gave out; start again without it."


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = {
    "not base64": "!!!",
    "not JSON": _b64(b"not json"),
    "not UTF-8": _b64(b"\xff\xfe"),
    "a JSON object": _b64(b'{"a": 1, "b": 2}'),
    "numbers": _b64(b"[1, 2]"),
    "three items": _b64(b'["2026-01-01T00:00:00", "a", "b"]'),
    "a NUL in the id": _b64(b'["2026-01-01T00:00:00", "a\\u0000b"]'),
    "not a date": _b64(b'["yesterday", "abc"]'),
    "not as the server writes it": _b64(b'["2026-01-01T00:00:00","abc"]'),
    "nested 3000 deep": _b64(b"[" * 3000 + b"]" * 3000),
    "huge": "A" * 8000,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Auth off (the `make up` default), one extra host name allowed."""
    home = tmp_path_factory.mktemp("front-door")
    with running_stack(home, workers=0, allowed_hosts='["lab.example"]') as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


@pytest.fixture(scope="module")
def broker_away(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Auth on, and a broker URL where nothing listens."""
    home = tmp_path_factory.mktemp("broker-away")
    broker_url = f"redis://127.0.0.1:{free_port()}/0"
    with running_stack(home, workers=0, auth="true", broker_url=broker_url) as running:
        yield running


@pytest.fixture(scope="module")
def alice(broker_away: Stack) -> Iterator[httpx.Client]:
    with broker_away.client(broker_away.token("alice")) as client:
        yield client


@pytest.mark.parametrize("path", ["/experiments", "/studies"])
def test_a_malformed_cursor_is_a_422_sentence_in_every_listing(
    client: httpx.Client, path: str
) -> None:
    for kind, cursor in BAD_CURSORS.items():
        response = client.get(path, params={"cursor": cursor})
        assert response.status_code == 422, kind
        (error,) = response.json()["detail"]
        assert error["loc"] == ["query", "cursor"], kind
        assert error["msg"] == CURSOR_SENTENCE, kind


def test_a_cursor_the_server_gave_out_still_pages(client: httpx.Client) -> None:
    for _ in range(2):
        assert client.post("/experiments", json=RUN).status_code == 201
    first = client.get("/experiments", params={"limit": 1}).json()
    second = client.get("/experiments", params={"limit": 1, "cursor": first["next_cursor"]})
    assert second.status_code == 200
    assert second.json()["items"][0]["id"] != first["items"][0]["id"]


def test_names_are_drawn_letter_for_letter_not_as_mathtext(client: httpx.Client) -> None:
    experiment = client.post("/experiments", json={**RUN, "name": r"$\foo$"}).json()
    png = client.get(f"/experiments/{experiment['id']}/plot.png")
    assert png.status_code == 200
    assert png.content.startswith(PNG_SIGNATURE)
    svg = client.get(f"/experiments/{experiment['id']}/plot.svg")
    assert svg.status_code == 200
    assert r">$\foo$: queued, 0/1 epochs<" in svg.text
    variants = [{"name": r"$\bar{x}$"}, {"name": "_base"}, {"name": "costs $5 or $6"}]
    body = {**RUN, "name": "$x^2$", "preset": "base", "variants": variants}
    study = client.post("/studies", json=body).json()
    svg = client.get(f"/studies/{study['id']}/plot.svg")
    assert svg.status_code == 200
    for text in ("$x^2$: test curves, mean over seeds", *(v["name"] for v in variants)):
        assert f">{text}<" in svg.text, text


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/datasets", "GET, POST"),
        ("DELETE", "/presets", "GET"),
        ("PUT", "/experiments", "GET, POST"),
        ("PUT", "/experiments/0123", "DELETE, GET, PATCH"),
        ("POST", "/health", "GET"),
        ("POST", "/", "GET"),
        ("POST", "/ui/app.js", "GET, HEAD"),
    ],
)
def test_every_405_names_the_methods_the_path_has(
    client: httpx.Client, method: str, path: str, allowed: str
) -> None:
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": f"{method} is not allowed here; use {allowed}."}


def test_with_auth_off_only_this_servers_names_are_served(
    stack: Stack, client: httpx.Client
) -> None:
    port = urlsplit(stack.url).port
    served = ["localhost", "127.0.0.1", "[::1]", "lab.example", "LAB.example"]
    for host in [*served, *(f"{name}:{port}" for name in served)]:
        assert client.get("/presets", headers={"Host": host}).status_code == 200, host
    for host in [
        "evil.example",
        f"evil.example:{port}",
        "localhost.evil.example",
        "127.0.0.1.nip.io",
    ]:
        response = client.get("/presets", headers={"Host": host})
        assert response.status_code == 400, host
        assert "CONVLAB_ALLOWED_HOSTS" in response.json()["detail"]


def test_with_auth_on_any_host_is_served(alice: httpx.Client) -> None:
    assert alice.get("/presets", headers={"Host": "evil.example"}).status_code == 200


def test_ready_names_the_broker_that_is_away_but_not_its_address(
    broker_away: Stack, alice: httpx.Client
) -> None:
    port = str(urlsplit(broker_away.env["CONVLAB_BROKER_URL"]).port)
    response = alice.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"] == "ok"
    assert re.fullmatch(r"unreachable \(\w+\)", body["broker"]), body
    assert port not in response.text and "127.0.0.1" not in response.text
    wait_for(
        lambda: "/ready: the broker is unreachable" in broker_away.log_text(),
        timeout=10,
        what="the broker's failure in the API's log",
    )


def test_a_page_on_a_listed_origin_may_edit_experiments(tmp_path: Path) -> None:
    """The dashboard's PATCH (tags, notes, names) from an origin in CONVLAB_CORS_ORIGINS."""
    settings = Settings(home=tmp_path, cors_origins=["http://lab.example"])
    with TestClient(create_app(settings)) as client:
        preflight = client.options(
            "/experiments/any",
            headers={"Origin": "http://lab.example", "Access-Control-Request-Method": "PATCH"},
        )
    assert preflight.status_code == 200, preflight.text
    assert "PATCH" in preflight.headers["access-control-allow-methods"]
