"""Placement: the spec's ``resources`` say which workers may take a run; a worker claims only
what its accelerator satisfies (the claim's SQL), a run no worker up may take says what it
waits for, a submit nobody seen in a day could take is accepted with a warning, and studies and
searches pass ``resources`` to every run."""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import col, select

from models.accelerator import CPU, Accelerator
from models.placement import described, fits
from models.spec import Resources
from store.db import session_scope
from store.dispatch import mark_published
from store.experiments import create_experiment
from store.placement import fits as fits_in_sql
from store.tables import Experiment
from store.transitions import claim, claim_next
from tests.services import Stack, running_stack, wait_for, wait_for_status

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 2}}
BIG_GPU = {"accelerator": "gpu", "min_memory_mb": 40000}

ASKED = [
    {},
    {"accelerator": "any"},
    {"accelerator": "cpu"},
    {"accelerator": "gpu"},
    {"accelerator": "GPU", "min_memory_mb": 16000},
    {"accelerator": "any", "min_memory_mb": 40000},
    {"accelerator": "a100"},
    {"accelerator": "H100", "min_memory_mb": 80000},
    {"accelerator": "H100 80GB"},
]
ACCELERATORS = [
    CPU,
    Accelerator("NVIDIA A100-SXM4-40GB", 40536),
    Accelerator("NVIDIA H100 80GB HBM3", 81559),
    Accelerator("Tesla T4", 15360),
]


def test_the_claims_sql_takes_what_the_rule_says(engine: Engine) -> None:
    with session_scope(engine) as session:
        ids = {
            create_experiment(
                session, name=None, spec={"preset": "base", **DIGITS, "resources": asked}
            ).id: Resources.model_validate(asked)
            for asked in ASKED
        }
        legacy = create_experiment(session, name=None, spec={"preset": "base", **DIGITS}).id
    for accelerator in ACCELERATORS:
        with session_scope(engine) as session:
            taken = set(session.exec(select(Experiment.id).where(fits_in_sql(accelerator))).all())
        expected = {id_ for id_, resources in ids.items() if fits(resources, accelerator)}
        assert taken == expected | {legacy}, accelerator  # a spec from before resources: any
    assert fits(Resources(accelerator="h100"), ACCELERATORS[2])
    assert not fits(Resources(min_memory_mb=40000), CPU)
    assert not fits(Resources(accelerator="gpu", min_memory_mb=40000), ACCELERATORS[3])


def test_a_worker_gives_back_only_the_messages_of_runs_it_could_take(engine: Engine) -> None:
    """A run it could take but may not (its user at the running cap) goes back to the sweeper
    at once; a run for another accelerator keeps its message, or every sweep would publish it
    again to the workers that cannot take it."""
    with session_scope(engine) as session:
        ids = [
            create_experiment(
                session, name=None, spec={"preset": "base", **DIGITS, "resources": asked}
            ).id
            for asked in ({}, {"accelerator": "gpu"}, {"accelerator": "cpu"})
        ]
    running, for_gpu, capped = ids
    terms: dict[str, Any] = {"lease_seconds": 60, "max_lost": 3, "accelerator": CPU}
    assert claim(engine, running, "elsewhere/1/1", **terms) is not None
    for run in (for_gpu, capped):
        mark_published(engine, run)
        assert claim_next(engine, run, "here/2/2", max_running_per_user=1, **terms) is None
    with session_scope(engine) as session:
        rows = session.exec(select(Experiment).where(col(Experiment.id).in_(ids))).all()
        published = {row.id: row.dispatched_at for row in rows}
    assert published[for_gpu] is not None
    assert published[capped] is None


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"accelerator": "tpu%"}, "accelerator"),
        ({"accelerator": ""}, "accelerator"),
        ({"accelerator": "cpu", "min_memory_mb": 1000}, "min_memory_mb"),
        ({"min_memory_mb": 0}, "min_memory_mb"),
        ({"min_memory_mb": "lots"}, "min_memory_mb"),
        ({"gpus": 2}, "gpus"),
    ],
)
def test_bad_resources_are_a_422_naming_the_field(
    client: TestClient, resources: dict[str, Any], field: str
) -> None:
    answer = client.post("/experiments", json={**DIGITS, "resources": resources})
    assert answer.status_code == 422, answer.text
    assert [entry["loc"] for entry in answer.json()["detail"]] == [["body", "resources", field]]


def test_resources_default_to_any_worker_without_warning(client: TestClient) -> None:
    answer = client.post("/experiments", json=DIGITS)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["spec"]["resources"] == {"accelerator": "any", "min_memory_mb": None}
    assert (body["warnings"], body["preemptions"], body["waiting_for"]) == ([], 0, None)


def test_studies_and_searches_pass_resources_to_every_run(client: TestClient) -> None:
    asked = {"accelerator": "A100", "min_memory_mb": 20000}
    grid = client.post(
        "/studies",
        json={**DIGITS, "resources": asked, "grid": {"optimizer.name": ["sgd", "adam"]}},
    )
    assert grid.status_code == 201, grid.text
    searched = client.post(
        "/studies",
        json={
            **DIGITS,
            "resources": asked,
            "search": {
                "space": {"model.dropout": {"type": "float", "low": 0.0, "high": 0.5}},
                "n_trials": 4,
                "parallel": 2,
            },
        },
    )
    assert searched.status_code == 201, searched.text
    for study in (grid.json(), searched.json()):
        assert len(study["experiment_ids"]) == 2
        for experiment_id in study["experiment_ids"]:
            spec = client.get(f"/experiments/{experiment_id}").json()["spec"]
            assert spec["resources"] == asked
        assert study["warnings"] == [  # no worker was ever seen here
            "no worker seen in the last day can take a run asking for a GPU whose name "
            "contains 'A100' with at least 20000 MB (accelerators seen: none); it stays queued "
            "until such a worker starts"
        ]


# Black-box: a CPU-only stack with one real worker.


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("placement")) as running:
        yield running


def _worker_seen(client: httpx.Client) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = client.get("/workers").json()
    return workers


@pytest.mark.slow
def test_a_gpu_run_waits_on_a_cpu_stack_saying_why_while_a_cpu_run_trains(stack: Stack) -> None:
    with stack.client() as client:
        wait_for(lambda: _worker_seen(client), timeout=120, what="the worker's first heartbeat")
        waiting = client.post("/experiments", json={**DIGITS, "resources": BIG_GPU})
        assert waiting.status_code == 201, waiting.text
        assert waiting.json()["warnings"] == [
            "no worker seen in the last day can take a run asking for a GPU with at least "
            "40000 MB (accelerators seen: cpu); it stays queued until such a worker starts"
        ]
        on_cpu = client.post("/experiments", json={**DIGITS, "resources": {"accelerator": "cpu"}})
        assert on_cpu.status_code == 201 and on_cpu.json()["warnings"] == [], on_cpu.text

        trained = wait_for_status(client, on_cpu.json()["id"], {"succeeded", "failed"})
        assert trained["status"] == "succeeded", trained["error"]
        assert trained["attempt_log"][0]["accelerator"]["name"] == "cpu"

        shown = client.get(f"/experiments/{waiting.json()['id']}").json()
        assert (shown["status"], shown["attempts"]) == ("queued", 0)
        assert shown["waiting_for"] == "a GPU with at least 40000 MB"
        assert (shown["queue_position"], shown["eta_seconds"], shown["workers_up"]) == (
            None,
            None,
            1,
        )
        assert shown["waiting_for"] == described(Resources.model_validate(BIG_GPU))
        listed = client.get("/experiments", params={"status": "queued"}).json()["items"]
        assert [item["waiting_for"] for item in listed] == [shown["waiting_for"]]
        shown_by_cli = stack.convlab("show", waiting.json()["id"])
        assert "waiting for a GPU with at least 40000 MB" in shown_by_cli.stdout, shown_by_cli
        client.post(f"/experiments/{waiting.json()['id']}/cancel")
