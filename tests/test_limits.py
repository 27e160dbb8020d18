"""The front door under abuse, against a real running API with auth on: a rate of reads per
user, stated bounds on fan-out, an active-job cap that holds under concurrent submits (on SQLite
and PostgreSQL), and /health and token checks that never queue behind slow routes."""

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from api.schemas import StudyCreate
from core.config import Settings
from jobs import search
from models.studies import CHAPTER, from_presets, plan
from store import studies
from store.db import get_engine, session_scope
from tests.services import Stack, running_stack, stack_on

pytestmark = pytest.mark.slow

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
READS_PER_MINUTE = 60
LIMITS = {
    "auth": "true",
    "max_active_per_user": "3",
    "max_reads_per_minute": str(READS_PER_MINUTE),
}
SEEDS = 20
"""Seeds of each seeded study: the chapter's 13 presets make 260 experiments."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("limits"), workers=0, **LIMITS) as running:
        yield running


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def racing_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A stack whose sync routes have 8 threads, so that concurrent submits really meet in the
    cap check (the other tests keep the default 2: more threads only slow each other down at
    the GIL, /health included)."""
    home = tmp_path_factory.mktemp(f"limits-{request.param}")
    with stack_on(request.param, home, **LIMITS, api_threads="8") as running:
        yield running


@pytest.fixture(scope="module")
def big_studies(stack: Stack) -> list[str]:
    """Five studies of 260 experiments each, stored directly (the cap allows 3 per user),
    oldest first."""
    runs = plan(from_presets(CHAPTER, RUN, ("template",)), list(range(SEEDS)))
    with session_scope(get_engine(_database_url(stack))) as session:
        made = [
            studies.create_study(
                session,
                name=f"big {index}",
                kind="template",
                definition={"template": "chapter", **RUN},
                runs=runs,
                seeds=list(range(SEEDS)),
                owner="seeder",
            )[0]
            for index in range(5)
        ]
    return [study.id for study in made]


def test_reads_over_the_rate_are_a_429_for_that_user_only(stack: Stack) -> None:
    with stack.client(stack.token("reader")) as reader, stack.client(stack.token("other")) as other:
        for _ in range(READS_PER_MINUTE):
            assert reader.get("/presets").status_code == 200
        limited = reader.get("/presets")
        assert limited.status_code == 429
        assert 0 < int(limited.headers["retry-after"]) <= 60
        assert f"More than {READS_PER_MINUTE} reads a minute; try again in" in limited.text
        assert other.get("/presets").status_code == 200
        assert other.get("/health").status_code == 200
        for _ in range(3):
            assert httpx.get(f"{stack.url}/health").status_code == 200


def test_fan_out_parameters_have_a_maximum_the_422_states(stack: Stack) -> None:
    with stack.client(stack.token("fanout")) as client:
        ids = ",".join(f"{index:032x}" for index in range(51))
        compared = client.get("/compare", params={"ids": ids})
        assert compared.status_code == 422
        assert "at most 50 experiment ids" in compared.json()["detail"][0]["msg"]
        for path, limit, maximum in (("/studies", 101, "100"), ("/experiments", 501, "500")):
            listed = client.get(path, params={"limit": limit})
            assert listed.status_code == 422
            assert maximum in listed.json()["detail"][0]["msg"]


def test_a_page_of_studies_ends_before_1000_experiments(
    stack: Stack, big_studies: list[str]
) -> None:
    with stack.client(stack.token("lister")) as client:
        first = client.get("/studies", params={"limit": 100}).json()
        assert [study["id"] for study in first["items"]] == big_studies[:-4:-1]  # 3 x 260
        second = client.get("/studies", params={"limit": 100, "cursor": first["next_cursor"]})
        assert [study["id"] for study in second.json()["items"]] == big_studies[1::-1]


def test_a_study_plot_draws_its_first_100_experiments(stack: Stack, big_studies: list[str]) -> None:
    with stack.client(stack.token("plotter")) as client:
        svg = client.get(f"/studies/{big_studies[0]}/plot.svg")
        assert svg.status_code == 200
        assert "(first 5 of 13 variants)" in svg.text  # 5 x 20 seeds


def test_the_active_cap_holds_under_concurrent_submits(racing_stack: Stack) -> None:
    token, name = racing_stack.token("eager"), "twelve at once"
    start = threading.Barrier(12)

    def submit(_: int) -> httpx.Response:
        with racing_stack.client(token) as client:
            client.get("/health")  # connected before the start
            start.wait()
            return client.post("/experiments", json={**RUN, "name": name})

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(submit, range(12)))
    assert sorted(answer.status_code for answer in answers) == [201] * 3 + [429] * 9
    refused = next(answer for answer in answers if answer.status_code == 429)
    assert "eager has 3 experiments queued, running or paused; the cap is 3" in refused.text
    with racing_stack.client(token) as client:
        listed = client.get("/experiments", params={"limit": 500}).json()["items"]
    assert sum(item["name"] == name for item in listed) == 3


def test_a_search_not_started_yet_counts_its_first_trials(racing_stack: Stack) -> None:
    token = racing_stack.token("planner")
    space = {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}}
    body = StudyCreate.model_validate(
        {**RUN, "search": {"space": space, "n_trials": 9, "parallel": 2}}
    )
    url = _database_url(racing_stack)
    with session_scope(get_engine(url)) as session:  # as a submit stores it before its trials
        study = studies.create_search_study(
            session, name=None, definition=body.model_dump(mode="json"), seeds=[0], owner="planner"
        )
    search.create(url, study)  # the sweeper may start its trials now: they count the same
    with racing_stack.client(token) as client:
        assert client.post("/experiments", json=RUN).status_code == 201
        capped = client.post("/experiments", json=RUN)
    assert capped.status_code == 429
    assert "planner has 3 experiments queued, running or paused; the cap is 3" in capped.text


def test_health_and_token_checks_answer_while_slow_reads_hold_every_thread(
    stack: Stack, big_studies: list[str]
) -> None:
    busy, probe = stack.token("busy"), stack.token("probe")
    with stack.client(probe) as client:
        assert client.get("/openapi.json").status_code == 200  # built once, then cached

    def slow_read(_: int) -> tuple[float, float]:
        with stack.client(busy) as client:
            started = time.monotonic()
            assert client.get("/studies", params={"limit": 100}).status_code == 200
            return started, time.monotonic()

    with ThreadPoolExecutor(24) as pool:
        reads = pool.map(slow_read, range(24))  # 780 experiments each, 2 threads for all
        time.sleep(0.5)
        health, cheap, refused = _timed(stack, None), _timed(stack, probe), _timed(stack, "x")
        probed = time.monotonic()
        spans = list(reads)
    assert max(end for _, end in spans) > probed, "the slow reads ended before the probes"
    slowest = max(end - started for started, end in spans)
    assert max(health, cheap, refused) < slowest / 4, (health, cheap, refused, slowest)


def _database_url(stack: Stack) -> str:
    """The stack's database, for rows stored directly."""
    settings = Settings(home=Path(stack.env["CONVLAB_HOME"]), database_url=None)
    return stack.env.get("CONVLAB_DATABASE_URL") or settings.resolved_database_url


def _timed(stack: Stack, token: str | None) -> float:
    """Seconds for /health (no token), or for /openapi.json with ``token`` (an async route, so
    its time is the token check's; "x" is refused)."""
    with stack.client(token) as client:
        started = time.monotonic()
        answer = client.get("/health" if token is None else "/openapi.json")
        elapsed = time.monotonic() - started
    assert answer.status_code == (200 if token != "x" else 401)
    return elapsed
