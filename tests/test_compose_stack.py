"""The compose stack's own commands (uvicorn, celery worker) against real Redis and PostgreSQL:
one experiment trained through HTTP, as on a lab server."""

from pathlib import Path

import pytest

from tests.services import postgres_database, redis_server, running_stack, wait_for_status
from tests.test_compose import API_COMMAND, WORKER_COMMAND

pytestmark = pytest.mark.slow

COMPOSE_BIND = "--host 0.0.0.0 --port 8000"


def test_compose_commands_train_an_experiment_on_redis_and_postgres(tmp_path: Path) -> None:
    assert COMPOSE_BIND in API_COMMAND
    api_command = API_COMMAND.replace(COMPOSE_BIND, "--host 127.0.0.1 --port {port}")
    with (
        postgres_database() as database_url,
        redis_server(password="compose-test") as broker_url,
        running_stack(
            tmp_path,
            api_command=api_command,
            worker_command=WORKER_COMMAND,
            database_url=database_url,
            broker_url=broker_url,
        ) as stack,
        stack.client() as client,
    ):
        ready = client.get("/ready").json()
        assert (ready["status"], ready["database"], ready["broker"]) == ("ok", "ok", "ok")
        response = client.post(
            "/experiments",
            json={"preset": "batch_norm", "dataset": {"name": "digits"}, "training": {"epochs": 3}},
        )
        assert response.status_code == 201
        experiment = wait_for_status(
            client, response.json()["id"], {"succeeded", "failed", "cancelled"}
        )
        assert experiment["status"] == "succeeded", stack.log_tail()
        history = client.get(f"/experiments/{experiment['id']}/history").json()["epochs"]
        assert [row["epoch"] for row in history] == [1, 2, 3]
        assert not (tmp_path / "convlab.sqlite").exists()
        assert not (tmp_path / "broker.sqlite").exists()
