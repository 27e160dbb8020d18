"""scripts/ensure-services.sh on a fresh Debian machine: a container from the Debian base image
(nothing but Python), where it installs PostgreSQL and Redis and leaves them answering the
tests' login; as a user other than root it stops, saying why."""

import subprocess

import pytest

from tests.docker_engine import BASE_IMAGE, ROOT, engine_with_images

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "ensure-services.sh"
NOBODY = "65534"


def _in_fresh_debian(command: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``command`` in a new container of the base image (its own network: its PostgreSQL and
    Redis are not this machine's), with the script mounted read-only; removed afterwards."""
    engine_with_images()
    mount = f"{SCRIPT}:/ensure-services.sh:ro"
    return subprocess.run(
        ["docker", "run", "--rm", "-v", mount, *flags, BASE_IMAGE, "bash", "-c", command],
        capture_output=True,
        text=True,
        timeout=1200,
    )


def test_installs_postgres_and_redis_answering_the_tests_login() -> None:
    ran = _in_fresh_debian(
        "/ensure-services.sh"
        " && psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc 'SHOW server_encoding'"
        " && redis-cli -h 127.0.0.1 -p 6379 ping"
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["UTF8", "PONG"]


def test_refuses_with_a_sentence_when_not_root() -> None:
    ran = _in_fresh_debian("/ensure-services.sh", "--user", NOBODY)
    assert ran.returncode != 0
    assert "redis-server postgresql missing and not root here" in ran.stderr, ran.stderr


def test_refuses_with_a_sentence_without_apt() -> None:
    ran = _in_fresh_debian("rm /usr/bin/apt-get && /ensure-services.sh")
    assert ran.returncode != 0
    assert "redis-server postgresql missing and no apt-get here" in ran.stderr, ran.stderr
