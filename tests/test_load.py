"""One client's worth of abuse at once against a running API: 200 open event streams and 20
concurrent pixel-bomb predictions while /health is polled. Every /health answer comes sooner
than this machine decodes two bombs (one decode measured in the same test), nothing is a 5xx
and the API's memory stays bounded."""

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.pictures import blank_png, decode_seconds, peak_rss_kb
from tests.services import running_stack, stop_process, wait_for, wait_for_status

pytestmark = pytest.mark.slow

STREAMS = 200
BOMBS = 20
MEMORY_BOUND_MB = 100
"""How much the API's peak resident memory may grow under the whole load (one decoded bomb
would take 144 MB)."""
QUICK = {"dataset": {"name": "digits"}, "training": {"epochs": 1, "batch_size": 64}}


@contextmanager
def health_polled(url: str) -> Iterator[list[tuple[float, int]]]:
    """/health asked every 50 ms from a thread of its own, for as long as the block runs:
    each answer's time and status."""
    answers: list[tuple[float, int]] = []
    done = threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=url, timeout=10) as client:
            while not done.wait(0.05):
                started = time.perf_counter()
                status = client.get("/health").status_code
                answers.append((time.perf_counter() - started, status))

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        yield answers
    finally:
        done.set()
        poller.join()


async def _abuse(url: str, trained: str, waiting: str) -> Counter[int]:
    """Open every stream and keep it open while the bombs go in: the status of each answer."""
    statuses: Counter[int] = Counter()
    opened = asyncio.Semaphore(0)
    release = asyncio.Event()
    limits = httpx.Limits(max_connections=STREAMS + BOMBS + 5)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def hold_stream() -> None:
            async with client.stream("GET", f"/experiments/{waiting}/events") as response:
                statuses[response.status_code] += 1
                opened.release()
                await release.wait()

        async def bomb() -> None:
            files = {"file": ("bomb.png", blank_png(12000, 12000), "image/png")}
            response = await client.post(f"/experiments/{trained}/predict", files=files)
            statuses[response.status_code] += 1

        streams = [asyncio.create_task(hold_stream()) for _ in range(STREAMS)]
        for _ in range(STREAMS):
            await opened.acquire()
        await asyncio.gather(*(bomb() for _ in range(BOMBS)))
        release.set()
        await asyncio.gather(*streams)
    return statuses


def test_streams_and_pixel_bombs_leave_health_quick_and_memory_bounded(tmp_path: Path) -> None:
    settings = {"max_event_streams_per_user": str(STREAMS)}
    with running_stack(tmp_path, **settings) as stack, stack.client() as client:
        trained = client.post("/experiments", json=QUICK).json()["id"]
        finished = wait_for_status(client, trained, {"succeeded", "failed"}, timeout=180)
        assert finished["status"] == "succeeded", stack.log_tail()
        stop_process(stack.worker)  # from here on nothing trains: the streamed run stays queued
        waiting = client.post("/experiments", json=QUICK).json()["id"]
        before = peak_rss_kb(stack.api.pid)

        with health_polled(stack.url) as health:
            statuses = asyncio.run(_abuse(stack.url, trained, waiting))
            wait_for(lambda: len(health) >= 5, timeout=10, what="some /health answers")

        grown_mb = (peak_rss_kb(stack.api.pid) - before) / 1024
        slowest = max(seconds for seconds, _ in health)
        decoding = decode_seconds(blank_png(12000, 12000))
        print(
            f"\nload: {dict(statuses)}; /health answered {len(health)} times, slowest "
            f"{slowest * 1000:.0f} ms (decoding one bomb here: {decoding * 1000:.0f} ms); the "
            f"API's peak memory grew {grown_mb:.0f} MB"
        )
        assert statuses[200] == STREAMS
        assert sum(count for status, count in statuses.items() if status >= 500) == 0
        assert statuses[413] >= 1 and statuses[413] + statuses[429] == BOMBS, statuses
        assert {status for _, status in health} == {200}
        assert slowest < 2 * decoding, "a /health waited as long as decoding two bombs takes"
        assert grown_mb < MEMORY_BOUND_MB
        assert "Traceback" not in stack.log_text(), stack.log_tail()
