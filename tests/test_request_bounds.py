"""No single request can hurt the shared server, over HTTP against a running API with auth on,
on SQLite and on PostgreSQL: a study's size is refused from its counts before anything is
built; a run made from another gets its caller's priority, never more; every name the server
accepts or composes fits its column."""

import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from core.config import Settings
from models.epochs import EpochMetrics
from models.status import Status
from models.studies import LABEL_CHARS, NAME_CHARS
from store.db import get_engine
from store.runs import record_epoch
from store.tables import Experiment, Study
from tests.services import Stack, Trainer, stack_on

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}
HUGE_GRID = {f"optimizer.{field}": [0.1 + i / 100 for i in range(20)] for field in "abcdefgh"}
"""8 keys x 20 values: 2.56e10 variants, the most the schema allows (the keys need not resolve:
the size is refused before any variant is made)."""
OVER_BY_SEEDS = {"presets": ["base", "sgd"] * 15, "seeds": list(range(20))}
"""600 experiments from 30 presets: over the cap, and as cheap to refuse as any request."""
TRIES = 3
MEMORY_BOUND_KB = 10_000
"""How much the API's resident memory may grow over refusing the huge grid three times (the
unbounded expansion of a grid of 4 keys took 230 MB)."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Settings]]:
    """No worker: runs stay queued unless a Trainer writes them; auth on."""
    home = tmp_path_factory.mktemp(f"bounds-{request.param}")
    settings = {"auth": "true", "max_reads_per_minute": "100000"}
    with stack_on(request.param, home, **settings) as running:
        url = running.env.get("CONVLAB_DATABASE_URL")
        yield running, Settings(home=home, database_url=url)


@pytest.fixture(scope="module")
def tokens(stack: tuple[Stack, Settings]) -> dict[str, str]:
    running, _ = stack
    return {"alice": running.token("alice"), "root": running.token("root", "--admin")}


@pytest.fixture(scope="module")
def alice(stack: tuple[Stack, Settings], tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with stack[0].client(tokens["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def root(stack: tuple[Stack, Settings], tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with stack[0].client(tokens["root"]) as client:
        yield client


def _resident_kb(pid: int) -> int:
    """The process's resident memory now (VmRSS)."""
    status = Path(f"/proc/{pid}/status")
    if not status.exists():
        pytest.skip("no /proc here to read the API's memory from")
    line = next(line for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def _timed_refusal(client: httpx.Client, body: dict[str, Any], timeout: float) -> float:
    """Seconds until ``body`` is refused with a 422 (a study of digits, one epoch)."""
    started = time.perf_counter()
    try:
        response = client.post("/studies", json={**RUN, **body}, timeout=timeout)
    except httpx.TimeoutException:
        pytest.fail(f"no answer within {timeout:.2f} s (the study is being built?)")
    assert response.status_code == 422, response.text
    return time.perf_counter() - started


def test_submit_huge_grid_is_refused_from_its_counts_at_once(
    stack: tuple[Stack, Settings], alice: httpx.Client
) -> None:
    pid = stack[0].api.pid
    baseline = statistics.median(
        _timed_refusal(alice, OVER_BY_SEEDS, timeout=30) for _ in range(TRIES)
    )
    before = _resident_kb(pid)
    huge = min(
        _timed_refusal(alice, {"grid": HUGE_GRID}, timeout=max(1.0, 20 * baseline))
        for _ in range(TRIES)
    )
    grown = _resident_kb(pid) - before
    assert huge < 5 * baseline, f"the huge grid took {huge:.3f} s, a small refusal {baseline:.3f}"
    assert grown < MEMORY_BOUND_KB, f"the API's resident memory grew by {grown} KB"
    (error,) = alice.post("/studies", json={**RUN, "grid": HUGE_GRID}).json()["detail"]
    assert error["loc"] == ["body", "grid"]
    assert error["msg"] == (
        "the grid's 20 x 20 x 20 x 20 x 20 x 20 x 20 x 20 values make 25,600,000,000 variants; "
        "x 1 seeds that is 25,600,000,000 experiments, and a study holds at most 500 (a grid "
        "takes 1 to 8 keys of 1 to 20 values each, and their product times the seeds must be at "
        "most 500)"
    )


@pytest.mark.parametrize(
    ("body", "loc", "message"),
    [
        (OVER_BY_SEEDS, ["body", "presets"], "30 variants x 20 seeds is 600 experiments"),
        (
            {"variants": [{"name": f"v{i}"} for i in range(100)], "seeds": [0, 1, 2, 3, 4, 5]},
            ["body", "variants"],
            "100 variants x 6 seeds is 600 experiments",
        ),
        (
            {
                "grid": {"model.dropout": [i / 100 for i in range(20)], "model.l2": [0.0, 0.1]},
                "seeds": list(range(20)),
            },
            ["body", "grid"],
            "the grid's 20 x 2 values make 40 variants; x 20 seeds that is 800 experiments",
        ),
        (
            {
                "search": {
                    "space": {"model.dropout": {"type": "float", "low": 0, "high": 0.5}},
                    "n_trials": 200,
                },
                "seeds": [0, 1, 2],
            },
            ["body", "search", "n_trials"],
            "200 trials x 3 seeds is 600 experiments",
        ),
    ],
)
def test_submit_study_over_the_cap_is_422_at_the_field_and_stores_nothing(
    stack: tuple[Stack, Settings],
    alice: httpx.Client,
    body: dict[str, Any],
    loc: list[Any],
    message: str,
) -> None:
    studies = alice.get("/studies").json()["items"]
    response = alice.post("/studies", json={**RUN, **body})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert message in error["msg"] and "at most 500" in error["msg"]
    assert alice.get("/studies").json()["items"] == studies


def _ended_with_checkpoint(stack: tuple[Stack, Settings], client: httpx.Client, **body: Any) -> str:
    """A run ``client`` submits, trained one epoch as a worker records it (with weights to
    continue from), then succeeded."""
    response = client.post("/experiments", json={**RUN, **body})
    assert response.status_code == 201, response.text
    experiment_id = str(response.json()["id"])
    trainer = Trainer(stack[1])
    trainer.start(experiment_id)
    metrics = EpochMetrics(1, 1.0, 0.5, 1.0, 0.5, 0.1)
    record_epoch(
        trainer.engine,
        experiment_id,
        trainer.owner,
        metrics,
        checkpoint=b"weights",
        lease_seconds=60,
    )
    trainer.finish(experiment_id, Status.succeeded)
    return experiment_id


@pytest.fixture(scope="module")
def admins_high_run(stack: tuple[Stack, Settings], root: httpx.Client) -> str:
    return _ended_with_checkpoint(stack, root, priority="high")


@pytest.mark.parametrize(
    ("caller", "how", "asked", "status", "priority"),
    [
        ("alice", "continue", None, 201, "normal"),
        ("alice", "continue", "low", 201, "low"),
        ("alice", "continue", "high", 403, None),
        ("alice", "from", None, 201, "normal"),
        ("alice", "from", "high", 403, None),
        ("root", "continue", None, 201, "high"),
        ("root", "from", None, 201, "high"),
        ("root", "from", "low", 201, "low"),
    ],
)
def test_run_made_from_an_admins_high_run_takes_the_callers_rights(
    alice: httpx.Client,
    root: httpx.Client,
    admins_high_run: str,
    caller: str,
    how: str,
    asked: str | None,
    status: int,
    priority: str | None,
) -> None:
    client = {"alice": alice, "root": root}[caller]
    given = {} if asked is None else {"priority": asked}
    if how == "continue":
        response = client.post(
            f"/experiments/{admins_high_run}/continue", json={"epochs": 1, **given}
        )
    else:
        response = client.post("/experiments", json={"from": admins_high_run, **given})
    assert response.status_code == status, response.text
    if status == 403:
        assert "Only an admin may submit at priority high" in response.text
    else:
        child = response.json()
        assert (child["priority"], child["parent_id"]) == (priority, admins_high_run)


def test_continue_keeps_a_users_own_low_priority(
    stack: tuple[Stack, Settings], alice: httpx.Client
) -> None:
    parent = _ended_with_checkpoint(stack, alice, priority="low")
    child = alice.post(f"/experiments/{parent}/continue", json={"epochs": 1}).json()
    assert child["priority"] == "low"
    assert alice.post("/experiments", json={"from": parent}).json()["priority"] == "low"


LONG = "é" * NAME_CHARS
"""A name at its limit, in characters that take two bytes each."""


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/experiments", {**RUN, "name": LONG + "x"}, ["body", "name"]),
        ("/studies", {**RUN, "presets": ["base"], "name": LONG + "x"}, ["body", "name"]),
        ("/studies", {**RUN, "variants": [{"name": LONG + "x"}]}, ["body", "variants", 0, "name"]),
    ],
)
def test_submit_name_over_its_column_is_422_naming_the_field(
    alice: httpx.Client, path: str, body: dict[str, Any], loc: list[Any]
) -> None:
    response = alice.post(path, json=body)
    assert response.status_code == 422, response.text
    assert loc in [error["loc"] for error in response.json()["detail"]]


def test_rename_or_tag_over_the_column_is_422_naming_the_field(alice: httpx.Client) -> None:
    experiment = alice.post("/experiments", json={**RUN, "name": LONG}).json()
    assert experiment["name"] == LONG
    url = f"/experiments/{experiment['id']}"
    for body, loc in (
        ({"name": LONG + "x"}, ["body", "name"]),
        ({"tags": ["t" * 65]}, ["body", "tags", 0]),
        ({"add_tags": ["t" * 65]}, ["body", "add_tags", 0]),
    ):
        response = alice.patch(url, json=body)
        assert response.status_code == 422, response.text
        assert loc in [error["loc"] for error in response.json()["detail"]]
    assert alice.patch(url, json={"name": LONG}).json()["name"] == LONG


def test_study_of_long_variant_names_keeps_each_runs_seed_in_its_name(
    stack: tuple[Stack, Settings], alice: httpx.Client
) -> None:
    names = [LONG, "ü" * (NAME_CHARS - 1) + "b"]
    seeds = [0, 2**31 - 1]
    body = {**RUN, "name": LONG, "variants": [{"name": name} for name in names], "seeds": seeds}
    response = alice.post("/studies", json=body)
    assert response.status_code == 201, response.text
    study = response.json()
    assert (study["name"], study["variants"]) == (LONG, names)
    runs = _runs(alice, study["id"])
    assert len(runs) == 4
    for run in runs:
        assert len(run["name"]) <= NAME_CHARS
        assert run["name"].endswith(f"\u2026, seed {run['spec']['seed']}")
    _assert_stored_as_served(stack, study, runs)


def test_grid_labels_past_the_column_are_cut_short_and_stay_distinct(
    stack: tuple[Stack, Settings], alice: httpx.Client
) -> None:
    grid: dict[str, list[Any]] = {
        "optimizer.learning_rate": [0.001, 0.002],
        "optimizer.beta_1": [0.9],
        "optimizer.beta_2": [0.999],
        "optimizer.epsilon": [1e-07],
        "model.batch_norm_momentum": [0.99],
        "training.label_smoothing": [0.0],
        "model.dense_units": [[128, 128, 128, 128]],
        "model.conv_filters": [[16, 16, 16], [16, 16, 32]],
    }
    full = ", ".join(f"{key}={values[0]}" for key, values in grid.items())
    assert len(full) > NAME_CHARS, "the grid's labels must not fit to test this"
    response = alice.post("/studies", json={**RUN, "grid": grid, "seeds": [7]})
    assert response.status_code == 201, response.text
    study = response.json()
    labels = study["variants"]
    assert len(set(labels)) == 4
    for number, label in enumerate(labels, start=1):
        assert len(label) == LABEL_CHARS
        assert label.startswith("optimizer.learning_rate=0.00")
        assert label.endswith(f"\u2026 (point {number})")
    runs = _runs(alice, study["id"])
    assert sorted(run["name"] for run in runs) == sorted(f"{label}, seed 7" for label in labels)
    _assert_stored_as_served(stack, study, runs)


def _runs(client: httpx.Client, study_id: str) -> list[dict[str, Any]]:
    response = client.get("/experiments", params={"study_id": study_id, "sort": "created_at"})
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def _assert_stored_as_served(
    stack: tuple[Stack, Settings], study: dict[str, Any], runs: list[dict[str, Any]]
) -> None:
    """The database holds the names as the API served them (SQLite would hold longer ones)."""
    with Session(get_engine(stack[1].resolved_database_url)) as session:
        stored = session.get(Study, study["id"])
        assert stored is not None and stored.name == study["name"]
        rows = list(session.exec(select(Experiment).where(col(Experiment.study_id) == study["id"])))
    assert sorted(row.name or "" for row in rows) == sorted(run["name"] for run in runs)
    assert {row.variant for row in rows} == set(study["variants"])


def test_name_limits_are_the_columns_widths() -> None:
    columns = (Experiment.__table__.c.name, Experiment.__table__.c.variant, Study.__table__.c.name)  # type: ignore[attr-defined]
    assert {column.type.length for column in columns} == {NAME_CHARS}
