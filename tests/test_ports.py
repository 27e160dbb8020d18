"""The test servers' ports: a free port is found by binding and releasing it, so another
process may take it before the server binds it; each server then starts on another."""

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import services


@pytest.fixture
def taken(monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    """A port another process listens on, handed out as the next free port, once."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = int(holder.getsockname()[1])
        handed = iter([port])
        real = services.free_port
        monkeypatch.setattr(services, "free_port", lambda: next(handed, None) or real())
        yield port


def test_a_private_redis_whose_port_was_taken_starts_on_another(taken: int) -> None:
    with services.private_redis() as redis:
        assert redis.port != taken
        assert redis.process is not None and redis.process.poll() is None
        redis.stop()
        redis.start()  # a bounced broker comes back on its own port
        assert services._accepts(redis.port)


def test_a_private_postgresql_whose_port_was_taken_starts_on_another(taken: int) -> None:
    with services.postgres_cluster() as cluster:
        assert cluster.port != taken
        assert f":{cluster.port}/" in cluster.url


def test_an_api_whose_port_was_taken_starts_on_another(taken: int, tmp_path: Path) -> None:
    with services.running_stack(tmp_path, workers=0) as stack:
        assert not stack.url.endswith(f":{taken}")
        assert httpx.get(f"{stack.url}/health").status_code == 200
