"""Publishing with the broker down or lossy, on a real private Redis stopped and started again:
a broker that is down is waited on once per request or sweeper pass, not once per run, and the
sweeper publishes again only as many runs as the broker lost, oldest first."""

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, update
from sqlmodel import col

from core.config import Settings
from jobs.broker import make_celery
from jobs.queueing import QUEUE, QUIET_AFTER_REFUSAL_S, publish, publish_pending
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment
from store.tables import Experiment, utcnow
from tests.services import RedisServer, private_redis, running_stack, wait_for

SPEC = {"preset": "base", "dataset": {"name": "digits"}, "training": {"epochs": 1}}
CHAPTER = {"template": "chapter", "dataset": {"name": "digits"}, "training": {"epochs": 1}}


@pytest.fixture
def broker() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    made = get_engine(Settings(home=tmp_path).resolved_database_url)
    migrate(made)
    return made


@pytest.fixture
def celery(tmp_path: Path, broker: RedisServer) -> Celery:
    return make_celery(Settings(home=tmp_path, broker_url=broker.url))


def _queued(engine: Engine, count: int) -> list[str]:
    """``count`` queued runs, never published, submitted a minute ago one second apart."""
    start = utcnow() - timedelta(minutes=1)
    with session_scope(engine) as session:
        made = [create_experiment(session, name=None, spec=SPEC) for _ in range(count)]
        for offset, experiment in enumerate(made):
            experiment.created_at = start + timedelta(seconds=offset)
        return [experiment.id for experiment in made]


def _held(broker: RedisServer) -> int:
    with redis.Redis.from_url(broker.url) as client:
        return int(client.llen(QUEUE))


def test_a_sweeper_pass_ends_its_publishing_at_the_first_refusal(
    engine: Engine, celery: Celery, broker: RedisServer
) -> None:
    runs = _queued(engine, 13)
    baseline = _queued(engine, 1)[0]
    broker.stop()
    started = time.monotonic()
    assert publish(engine, celery, baseline) is False
    one_refusal = time.monotonic() - started  # Celery's retries: about 0.6 s
    time.sleep(QUIET_AFTER_REFUSAL_S)
    started = time.monotonic()
    assert publish_pending(engine, celery, grace_seconds=0, horizon_seconds=60) == []
    assert time.monotonic() - started < 2 * one_refusal  # one try, not thirteen

    broker.start()  # back, and empty
    time.sleep(QUIET_AFTER_REFUSAL_S)
    published = publish_pending(engine, celery, grace_seconds=0, horizon_seconds=60)
    assert sorted(published) == sorted([*runs, baseline])
    assert _held(broker) == 14


def test_the_sweeper_publishes_again_only_what_the_broker_lost_oldest_first(
    engine: Engine, celery: Celery, broker: RedisServer
) -> None:
    runs = _queued(engine, 13)
    assert all(publish(engine, celery, run) for run in runs)
    with session_scope(engine) as session:  # published an hour ago, the last run first
        for age, run in enumerate(runs):
            sent_at = utcnow() - timedelta(hours=1, seconds=age)
            session.exec(
                update(Experiment).where(col(Experiment.id) == run).values(dispatched_at=sent_at)
            )
    with redis.Redis.from_url(broker.url) as client:
        assert len(client.lpop(QUEUE, 3) or []) == 3  # three messages lost
    republished = publish_pending(engine, celery, grace_seconds=0, horizon_seconds=60)
    assert republished == runs[::-1][:3]  # the three published longest ago
    assert _held(broker) == 13
    assert publish_pending(engine, celery, grace_seconds=0, horizon_seconds=60) == []


def test_a_study_is_answered_at_once_with_the_broker_down_and_published_once_it_is_back(
    tmp_path: Path, broker: RedisServer
) -> None:
    settings = {"broker_url": broker.url, "sweep_interval_s": "0.3"}  # grace: 0.6 s
    with running_stack(tmp_path, workers=0, **settings) as stack, stack.client() as client:
        broker.stop()
        started = time.monotonic()
        assert client.post("/experiments", json=SPEC).status_code == 201
        one_run = time.monotonic() - started  # one refused publish
        time.sleep(QUIET_AFTER_REFUSAL_S)
        started = time.monotonic()
        study = client.post("/studies", json=CHAPTER)
        thirteen_runs = time.monotonic() - started
        assert study.status_code == 201, study.text
        assert len(study.json()["experiment_ids"]) == 13
        print(f"\nbroker down: one run answered in {one_run:.2f} s, 13 in {thirteen_runs:.2f} s")
        assert thirteen_runs < 3 * one_run, (one_run, thirteen_runs)

        broker.start()
        wait_for(lambda: _held(broker) == 14, timeout=30, what="14 messages in the broker")
        time.sleep(1)  # a few more sweeper passes
        assert _held(broker) == 14
        assert "again" not in stack.log_text()
        assert httpx.get(f"{stack.url}/health").status_code == 200
