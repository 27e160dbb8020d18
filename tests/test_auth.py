"""Tokens and ownership against a real running API with CONVLAB_AUTH on."""

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.config import Settings
from tests.services import BIN, Stack, running_stack, wait_for

pytestmark = pytest.mark.slow

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("auth")
    with running_stack(home, workers=0, auth="true") as running:
        yield running


@pytest.fixture(scope="module")
def tokens(stack: Stack) -> dict[str, str]:
    return {
        "alice": stack.token("alice"),
        "bob": stack.token("bob"),
        "root": stack.token("root", "--admin"),
    }


def test_every_path_but_health_and_the_dashboards_files_needs_a_token(stack: Stack) -> None:
    with stack.client() as anonymous:
        assert anonymous.get("/health").status_code == 200
        page = anonymous.get("/")  # the dashboard's shell: no data, it asks for a token
        assert page.status_code == 200
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert anonymous.get("/ui/app.js").status_code == 200
        for escape in (
            "/ui/%2e%2e/experiments",
            "/ui/..%2fexperiments",
            "/ui/%2e%2e/pyproject.toml",
        ):
            assert anonymous.get(escape).status_code == 404  # the open prefix leads nowhere else
        for method, path in [
            ("GET", "/experiments"),
            ("POST", "/experiments"),
            ("GET", "/presets"),
            ("GET", "/studies"),
            ("GET", "/ready"),
            ("GET", "/openapi.json"),
            ("GET", "/metrics"),
            ("GET", "/experiments/x/events"),
        ]:
            response = anonymous.request(method, path, json={})
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == 'Bearer realm="convlab"'
            assert "convlab token create" in response.json()["detail"]
        wrong = anonymous.get("/experiments", headers={"Authorization": "Bearer clt_00_nope"})
        assert wrong.status_code == 401
        assert wrong.json()["detail"] == "The token is unknown or revoked."


def test_tokens_are_stored_hashed_and_listed_without_secrets(
    stack: Stack, tokens: dict[str, str]
) -> None:
    home = Path(stack.env["CONVLAB_HOME"])
    listed = stack.convlab("token", "list").stdout
    for text in tokens.values():
        token_id, secret = text.split("_", 2)[1:]
        assert token_id in listed and secret not in listed
        assert secret.encode() not in (home / "convlab.sqlite").read_bytes()
    assert stack.convlab("token", "create", "--user", "Not A Name").returncode != 0


def test_token_commands_where_there_is_no_database_refuse_and_create_nothing(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    env = {**os.environ, "CONVLAB_HOME": str(elsewhere)}
    env.pop("CONVLAB_DATABASE_URL", None)
    for command in (["list"], ["create", "--user", "alice"], ["revoke", "abc"]):
        refused = subprocess.run(
            [str(BIN / "convlab"), "token", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 2, refused.stderr
        assert "No convlab database at" in refused.stderr
        assert "CONVLAB_HOME" in refused.stderr
    assert list(tmp_path.iterdir()) == []


def test_only_the_owner_or_an_admin_may_cancel(stack: Stack, tokens: dict[str, str]) -> None:
    with stack.client(tokens["alice"]) as alice, stack.client(tokens["bob"]) as bob:
        mine = alice.post("/experiments", json=RUN).json()["id"]
        assert bob.get(f"/experiments/{mine}").status_code == 200  # reads are open in the lab
        refused = bob.post(f"/experiments/{mine}/cancel")
        assert refused.status_code == 403
        assert refused.json()["detail"] == "Only alice or an admin may cancel this experiment."
        assert bob.delete(f"/experiments/{mine}").status_code == 403
        assert alice.post(f"/experiments/{mine}/cancel").status_code == 202
        assert alice.delete(f"/experiments/{mine}").status_code == 204
    with stack.client(tokens["alice"]) as alice, stack.client(tokens["root"]) as root:
        theirs = alice.post("/experiments", json=RUN).json()["id"]
        assert root.post(f"/experiments/{theirs}/cancel").status_code == 202


def test_studies_record_their_owner_too(stack: Stack, tokens: dict[str, str]) -> None:
    with stack.client(tokens["alice"]) as alice, stack.client(tokens["bob"]) as bob:
        study = alice.post("/studies", json={"presets": ["base"], **RUN}).json()
        assert bob.post(f"/studies/{study['id']}/cancel").status_code == 403
        assert alice.post(f"/studies/{study['id']}/cancel").status_code == 202


def test_a_revoked_token_stops_working_within_the_seconds_it_is_trusted(stack: Stack) -> None:
    text = stack.token("carol")
    headers = {"Authorization": f"Bearer {text}"}
    with stack.client() as client:
        assert client.get("/experiments", headers=headers).status_code == 200
        assert stack.convlab("token", "revoke", text.split("_")[1]).returncode == 0
        revoked = time.monotonic()
        wait_for(
            lambda: client.get("/experiments", headers=headers).status_code == 401,
            timeout=10,
            what="the revoked token to be refused",
            every=0.05,
        )
    assert time.monotonic() - revoked < Settings().token_cache_seconds + 1


def test_a_token_trusted_for_no_time_is_refused_at_once_once_revoked(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0, auth="true", token_cache_seconds="0") as stack:
        text = stack.token("dave")
        headers = {"Authorization": f"Bearer {text}"}
        with stack.client() as client:
            assert client.get("/experiments", headers=headers).status_code == 200
            assert stack.convlab("token", "revoke", text.split("_")[1]).returncode == 0
            assert client.get("/experiments", headers=headers).status_code == 401


def test_owner_only_reads_hide_other_peoples_work(tmp_path: Path) -> None:
    with running_stack(tmp_path, workers=0, auth="true", reads_owner_only="true") as stack:
        tokens = {user: stack.token(user) for user in ("alice", "bob")}
        with stack.client(tokens["alice"]) as alice, stack.client(tokens["bob"]) as bob:
            mine = alice.post("/experiments", json=RUN).json()["id"]
            study = alice.post("/studies", json={"presets": ["base"], **RUN}).json()["id"]
            assert bob.get(f"/experiments/{mine}").status_code == 404
            assert bob.get(f"/experiments/{mine}/history").status_code == 404
            assert bob.get(f"/studies/{study}").status_code == 404
            assert bob.get("/compare", params={"ids": mine}).status_code == 404
            assert bob.get("/experiments").json()["items"] == []
            assert bob.get("/studies").json()["items"] == []
            assert alice.get(f"/experiments/{mine}").status_code == 200
            assert len(alice.get("/experiments").json()["items"]) == 2


def test_limits_keep_one_user_from_taking_the_server(tmp_path: Path) -> None:
    limits = {
        "max_active_per_user": "2",
        "max_submissions_per_minute": "5",
        "max_body_bytes": "4096",
        "max_parameters": "1000000",
    }
    with running_stack(tmp_path, workers=0, auth="true", **limits) as stack:
        tokens = {user: stack.token(user) for user in ("alice", "bob", "carol")}
        with (
            stack.client(tokens["alice"]) as alice,
            stack.client(tokens["bob"]) as bob,
            stack.client(tokens["carol"]) as carol,
        ):
            big = alice.post("/experiments", json={"model": {"conv_filters": [1024] * 5}})
            assert big.status_code == 422
            assert big.json()["detail"][0]["loc"] == ["body", "model"]
            assert "parameters; this server allows 1,000,000" in big.json()["detail"][0]["msg"]
            wide = {
                "model": {"conv_filters": [128], "dense_units": []},
                "training": {"batch_size": 8192},
            }
            heavy = alice.post("/experiments", json=wide)
            assert heavy.json()["detail"][0]["loc"] == ["body", "training", "batch_size"]
            assert "MB of activations" in heavy.json()["detail"][0]["msg"]

            for _ in range(2):
                assert alice.post("/experiments", json=RUN).status_code == 201
            capped = alice.post("/experiments", json=RUN)
            assert capped.status_code == 429
            assert capped.headers["retry-after"] == "60"
            assert "cap is 2" in capped.json()["detail"]
            assert bob.post("/experiments", json=RUN).status_code == 201
            space = {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}}
            search = {**RUN, "search": {"space": space, "n_trials": 9, "parallel": 2}}
            two_at_once = bob.post("/studies", json=search)  # 1 + 2 trials at once > 2
            assert two_at_once.status_code == 429
            refusal = "bob has 1 experiments queued, running or paused; the cap is 2"
            assert refusal in two_at_once.text

            for _ in range(5):
                assert carol.post("/experiments", json={"seed": "x"}).status_code == 422
            limited = carol.post("/experiments", json=RUN)
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) > 0

            huge = bob.post(
                "/experiments",
                content=b'{"name": "' + b"x" * 50_000_000 + b'"}',
                headers={"content-type": "application/json"},
            )
            assert huge.status_code == 413
            assert "limit of 4,096 bytes" in huge.json()["detail"]

            preflight = bob.options(
                "/experiments",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert "access-control-allow-origin" not in preflight.headers
