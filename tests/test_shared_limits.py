"""The per-user limits on an API of two processes with a Redis broker: reads and submissions a
minute and event streams at once are counted once, in Redis, whichever process answers; a
slot's lease frees a vanished holder's slot; with Redis stopped, requests are still answered
(counted in each process) and the count goes back to Redis once it answers again.

Each test proves that both processes answered its requests from what the processes already
keep for ``/metrics``: with several uvicorn workers, each counts the requests it answers, by
route, in a file of its own named after its pid (prometheus_client's multiprocess mode,
api/shared_metrics.py), which a scrape sums. Reading those files adds nothing to the product."""

import asyncio
import json
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict

from api.limits import Full
from api.shared_counts import RETRY_S, SharedCounts
from tests.services import API_COMMAND, RedisServer, Stack, private_redis, running_stack, wait_for

pytestmark = pytest.mark.slow

READS, SUBMISSIONS, STREAMS = 20, 5, 2
TRIES = 60
"""Requests sent against a rate of ``READS``: far more than two processes' worth."""
OUTAGE = "Redis does not answer"
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3}}
EVENTS = "/experiments/{experiment_id}/events"


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisServer]:
    with private_redis() as server:
        yield server


@pytest.fixture(scope="module")
def stack(redis: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = {
        "auth": "true",
        "broker_url": redis.url,
        "max_reads_per_minute": str(READS),
        "max_submissions_per_minute": str(SUBMISSIONS),
        "max_event_streams_per_user": str(STREAMS),
    }
    home = tmp_path_factory.mktemp("shared-limits")
    with running_stack(
        home, api_command=f"{API_COMMAND} --workers 2", workers=0, **settings
    ) as running:
        wait_for(
            lambda: running.log_text().count("Application startup complete") >= 2,
            timeout=30,
            what="both API processes",
        )
        yield running


def _answered(stack: Stack, route: str) -> Counter[str]:
    """Requests to ``route`` (a route template) each API process has answered so far, by pid,
    as its own counter file for ``/metrics`` holds them."""
    (folder,) = Path(tempfile.gettempdir()).glob(f"convlab-metrics-{stack.api.pid}-*")
    answered: Counter[str] = Counter()
    for counters in folder.glob("counter_*.db"):
        for key, value, *_ in MmapedDict.read_all_values_from_file(str(counters)):
            _, sample, labels, _ = json.loads(key)
            if sample == "convlab_http_requests_total" and labels["route"] == route:
                answered[counters.stem.removeprefix("counter_")] += int(value)
    return answered


def _assert_both_answered(before: Counter[str], after: Counter[str]) -> None:
    answered = after - before
    assert len(answered) == 2, f"requests answered by each process (pid: count): {answered}"


def _each_on_a_new_connection(stack: Stack, token: str, method: str, path: str) -> list[int]:
    """The status of ``TRIES`` requests, four at a time, each on a connection of its own (so
    that both processes answer some)."""

    def send(_: int) -> int:
        with stack.client(token) as client:
            return client.request(method, path, json=RUN if method == "POST" else None).status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(send, range(TRIES)))


def test_reads_a_minute_are_counted_once_across_processes(stack: Stack) -> None:
    token = stack.token("reader")
    before = _answered(stack, "/presets")
    statuses = _each_on_a_new_connection(stack, token, "GET", "/presets")
    _assert_both_answered(before, _answered(stack, "/presets"))
    assert sorted(statuses) == [200] * READS + [429] * (TRIES - READS)
    with stack.client(token) as client:
        limited = client.get("/presets")
    assert limited.status_code == 429
    assert 0 < int(limited.headers["retry-after"]) <= 60
    assert f"More than {READS} reads a minute; try again in" in limited.text


def test_submissions_a_minute_are_counted_once_across_processes(stack: Stack) -> None:
    before = _answered(stack, "/experiments")
    statuses = _each_on_a_new_connection(stack, stack.token("submitter"), "POST", "/experiments")
    _assert_both_answered(before, _answered(stack, "/experiments"))
    assert sorted(statuses) == [201] * SUBMISSIONS + [429] * (TRIES - SUBMISSIONS)


def test_a_users_event_streams_are_capped_across_processes(stack: Stack) -> None:
    token = stack.token("watcher")
    with stack.client(token) as client:
        experiment = client.post("/experiments", json=RUN).json()
    url = f"/experiments/{experiment['id']}/events"
    with ExitStack() as streams:
        for _ in range(STREAMS):
            client = streams.enter_context(stack.client(token))
            opened = streams.enter_context(client.stream("GET", url, timeout=10))
            assert opened.status_code == 200
        before = _answered(stack, EVENTS)
        for _ in range(8):  # each on a new connection: one process or the other
            with stack.client(token) as client:
                refused = client.get(url, timeout=10)
            assert refused.status_code == 429, refused.text
            assert "CONVLAB_MAX_EVENT_STREAMS_PER_USER" in refused.text
        _assert_both_answered(before, _answered(stack, EVENTS))
    wait_for(  # given back when the streams close, not a lease (30 s) later
        lambda: _opens(stack, token, url), timeout=10, what="a slot freed by closed streams"
    )


def _opens(stack: Stack, token: str, url: str) -> bool:
    """Whether a stream of ``url`` opens now (on a new connection); closed at once."""
    with stack.client(token) as client, client.stream("GET", url, timeout=10) as response:
        return response.status_code == 200


def test_a_slot_is_held_while_renewed_and_freed_a_lease_after_its_holder_vanished(
    redis: RedisServer,
) -> None:
    scopes = [("test:of:vanishing", 1)]

    async def take_and_vanish() -> None:
        await SharedCounts(redis.url, lease_s=1).take(scopes)  # never given back

    async def held_then_freed() -> None:
        holder, other = SharedCounts(redis.url, lease_s=1), SharedCounts(redis.url, lease_s=1)
        with pytest.raises(Full):
            await other.take(scopes)  # the vanished holder's lease still runs
        await asyncio.sleep(1.2)
        release = await holder.take(scopes)
        await asyncio.sleep(2.5)  # renewed meanwhile
        with pytest.raises(Full) as full:
            await other.take(scopes)
        assert (full.value.scope, full.value.held) == (0, 1)
        await release()
        await (await other.take(scopes))()
        await holder.close()
        await other.close()

    asyncio.run(take_and_vanish())  # its loop ends: the renewal with it, as in a killed process
    asyncio.run(held_then_freed())


def test_reads_are_answered_while_redis_is_down_and_counted_there_once_it_is_back(
    stack: Stack, redis: RedisServer
) -> None:
    during, after = stack.token("in-outage"), stack.token("after-outage")
    before = _answered(stack, "/presets")
    redis.stop()
    try:
        statuses = _each_on_a_new_connection(stack, during, "GET", "/presets")
    finally:
        redis.start()
    _assert_both_answered(before, _answered(stack, "/presets"))
    assert READS < statuses.count(200) <= 2 * READS  # each process counts its own
    warnings = stack.log_text().count(OUTAGE)
    assert 1 <= warnings <= 2, f"one warning per process and outage, not {warnings}"
    time.sleep(RETRY_S + 0.5)  # then each process asks Redis again
    statuses = _each_on_a_new_connection(stack, after, "GET", "/presets")
    assert sorted(statuses) == [200] * READS + [429] * (TRIES - READS)
