"""What one user learns of another's work on a shared server (auth on, owner-only reads): a
running API and worker, two users' tokens and an admin's. ``/metrics`` gives the per-user
figures to admins only; ``/workers`` names the run a worker holds to its owner (and admins)."""

from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.services import Stack, running_stack, wait_for

pytestmark = pytest.mark.slow

LONG_RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 200, "batch_size": 16}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("others")
    settings = {
        "auth": "true",
        "reads_owner_only": "true",
        "lease_seconds": "3",  # a heartbeat every 0.5 s
        "checkpoint_seconds": "0",  # weights stored at every epoch
    }
    with running_stack(home, workers=1, **settings) as running:
        yield running


@pytest.fixture(scope="module")
def alices_run(stack: Stack) -> Iterator[str]:
    """Alice's run, training (it has stored an epoch's weights); cancelled afterwards."""
    with stack.client(stack.token("alice")) as alice:
        run = alice.post("/experiments", json=LONG_RUN).json()["id"]
        wait_for(
            lambda: alice.get(f"/experiments/{run}").json()["epochs_done"] >= 1,
            timeout=180,
            what="alice's first epoch",
        )
        yield run
        alice.post(f"/experiments/{run}/cancel")


def _series(stack: Stack, token: str) -> dict[str, dict[str, float]]:
    """The /metrics samples the holder of ``token`` sees: by name, by their user label."""
    with stack.client(token) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200, answer.text
    seen: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            seen.setdefault(sample.name, {})[sample.labels.get("user", "")] = sample.value
    return seen


def test_per_user_figures_in_metrics_are_for_admins_only(stack: Stack, alices_run: str) -> None:
    admin = _series(stack, stack.token("root", "--admin"))
    assert admin["convlab_stored_bytes"]["alice"] > 0
    for user in ("alice", "bob"):
        seen = _series(stack, stack.token(user))
        assert "convlab_stored_bytes" not in seen, user
        assert seen["convlab_queue_depth"] == admin["convlab_queue_depth"]  # the rest is shown


def test_workers_name_a_run_to_its_owner_and_admins_only(stack: Stack, alices_run: str) -> None:
    def held(token: str) -> list[str | None]:
        with stack.client(token) as client:
            answer = client.get("/workers")
        assert answer.status_code == 200, answer.text
        return [worker["experiment_id"] for worker in answer.json()]

    assert held(stack.token("alice")) == [alices_run]
    assert held(stack.token("root", "--admin")) == [alices_run]
    assert held(stack.token("bob")) == [None]  # a worker is busy, with nothing of his
