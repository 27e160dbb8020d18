"""docker-compose.yml, its GPU and CPU overrides, Dockerfile and .env.example: valid, and saying
what the stack relies on.

Checked by Debian's ``docker-compose`` (v1.29) ``config``; the commands its services run are
exported for the tests that run those very commands against local PostgreSQL and Redis.
tests/test_compose_up.py starts the stack itself on a Docker engine.
"""

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
GPU_FILE = ROOT / "docker-compose.override.yml"
"""Read by Compose after COMPOSE_FILE when no -f is given: the worker's GPU."""
CPU_FILE = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"


# What the api and worker containers run; tests that start the stack by hand use these.
_SERVICES = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
API_COMMAND: str = _SERVICES["api"]["command"]
WORKER_COMMAND: str = _SERVICES["worker"]["command"]

# The variables the compose file reads; the shell's values must not leak into these tests.
COMPOSE_VARIABLES = sorted(
    set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
)


PASSWORDS = {"POSTGRES_PASSWORD": "pg-secret-for-tests", "REDIS_PASSWORD": "redis-secret-for-tests"}
"""What a user sets in .env before the first start (.env.example leaves them empty)."""


def _env_example() -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in ENV_EXAMPLE.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    )
    return {name.strip(): value.strip() for name, value in pairs}


def _user_env() -> dict[str, str]:
    """.env.example as a user's .env has it: the passwords set."""
    return _env_example() | PASSWORDS


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text("".join(f"{name}={value}\n" for name, value in _user_env().items()))
    return path


@pytest.fixture(scope="module")
def compose_cli() -> str:
    """Debian's docker-compose v1; a failure under CI=true, a loud skip elsewhere."""
    path = shutil.which("docker-compose")
    if path is None:
        reason = (
            "docker-compose is not installed, so docker-compose.yml is NOT validated: "
            "apt-get install -y docker-compose"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def _compose(cli: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in COMPOSE_VARIABLES and not name.startswith("COMPOSE_")
    }
    return subprocess.run(
        [cli, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def config(compose_cli: str, env_file: Path) -> dict[str, Any]:
    """The compose file as docker-compose resolves it with a user's .env."""
    result = _compose(
        compose_cli, "--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def _resolved(cli: str, env_file: Path, *files: Path) -> dict[str, Any]:
    args = ["--env-file", str(env_file)]
    for path in files:
        args += ["-f", str(path)]
    result = _compose(cli, *args, "config", cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_config_validates_once_the_passwords_are_set(compose_cli: str, env_file: Path) -> None:
    args = ["--env-file", str(env_file), "-f", str(COMPOSE_FILE), "config", "-q"]
    result = _compose(compose_cli, *args, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_env_example_ships_no_password_and_compose_refuses_it(compose_cli: str) -> None:
    assert {name: _env_example()[name] for name in PASSWORDS} == dict.fromkeys(PASSWORDS, "")
    args = ["--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE_FILE), "config", "-q"]
    result = _compose(compose_cli, *args, cwd=ROOT)
    assert result.returncode != 0
    assert any(f"set {name} in .env" in result.stderr for name in PASSWORDS), result.stderr


def test_config_refuses_without_passwords(compose_cli: str, tmp_path: Path) -> None:
    shutil.copy(COMPOSE_FILE, tmp_path / "docker-compose.yml")  # a folder with no .env
    result = _compose(compose_cli, "config", "-q", cwd=tmp_path)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr or "REDIS_PASSWORD" in result.stderr


def test_commands_are_the_ones_the_stack_tests_run(config: dict[str, Any]) -> None:
    assert API_COMMAND == (
        "uvicorn --factory api.main:create_app --host 0.0.0.0 --port 8000 --workers 4 "
        "--timeout-graceful-shutdown 5"
    )
    assert WORKER_COMMAND == (
        "celery -A worker.celery_app worker --loglevel INFO --prefetch-multiplier 1"
    )
    assert config["services"]["api"]["command"] == API_COMMAND
    assert config["services"]["worker"]["command"] == WORKER_COMMAND


def test_ports_published_only_by_api_on_loopback(config: dict[str, Any]) -> None:
    services = config["services"]
    default = {name for name, service in services.items() if not service.get("profiles")}
    assert {name for name in default if services[name].get("ports")} == {"api"}
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000/tcp"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"


def test_redis_requires_password_and_keeps_queue(config: dict[str, Any]) -> None:
    redis = config["services"]["redis"]
    password = PASSWORDS["REDIS_PASSWORD"]
    assert re.search(rf'--requirepass "?{re.escape(password)}"?(\s|$)', redis["command"])
    assert "--appendonly yes" in redis["command"]
    assert any(volume.split(":")[1] == "/data" for volume in redis["volumes"])
    assert not redis.get("ports")
    assert not config["services"]["postgres"].get("ports")


def test_api_and_worker_reach_services_by_name(config: dict[str, Any]) -> None:
    env = _user_env()
    database = (
        f"postgresql+psycopg://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@postgres:5432/{env['POSTGRES_DB']}"
    )
    broker = f"redis://:{env['REDIS_PASSWORD']}@redis:6379/0"
    for name in ("api", "worker"):
        service = config["services"][name]
        assert service["environment"]["CONVLAB_DATABASE_URL"] == database
        assert service["environment"]["CONVLAB_BROKER_URL"] == broker
        assert service["environment"]["CONVLAB_DATA_DIR"] == "/data"
        assert service["environment"]["CONVLAB_AUTH"] == "true"  # closed by default
        assert set(service["depends_on"]) == {"postgres", "redis"}
        assert all(dep["condition"] == "service_healthy" for dep in service["depends_on"].values())


def test_worker_reserves_one_gpu_unless_the_files_are_named(
    compose_cli: str, env_file: Path
) -> None:
    plain = _compose(compose_cli, "--env-file", str(env_file), "config", cwd=ROOT)
    assert plain.returncode == 0, plain.stderr
    worker = yaml.safe_load(plain.stdout)["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["environment"]["CONVLAB_REQUIRE_GPU"] == "true"
    assert "--concurrency" not in worker["command"]  # the worker sizes its pool: its slots
    assert worker["environment"]["CONVLAB_JOBS_PER_GPU"] == "4"
    assert worker["stop_grace_period"] == "2m"
    assert worker["restart"] == "unless-stopped"


def test_api_runs_several_processes_and_training_yields_the_cpu_to_it(
    config: dict[str, Any],
) -> None:
    processes = re.search(r"--workers (\d+)", config["services"]["api"]["command"])
    assert processes is not None and int(processes.group(1)) >= 2
    shares = config["services"]["worker"]["cpu_shares"]
    assert shares < config["services"]["api"].get("cpu_shares", 1024)  # Docker's default


def test_env_example_sets_every_variable_the_compose_file_reads() -> None:
    assert set(COMPOSE_VARIABLES) <= set(_env_example())


def test_cpu_override_builds_plain_tensorflow_and_reserves_no_gpu(
    compose_cli: str, env_file: Path
) -> None:
    services = _resolved(compose_cli, env_file, COMPOSE_FILE, CPU_FILE)["services"]
    worker = services["worker"]
    assert "deploy" not in worker
    assert worker["environment"]["CONVLAB_REQUIRE_GPU"] == "false"
    for name in ("api", "worker"):
        assert services[name]["build"]["args"] == {"TENSORFLOW_EXTRA": ""}
        assert services[name]["image"] == "convlab:cpu"


def test_dockerfile_pins_the_tensorflow_of_pyproject() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = next(dep for dep in dependencies if re.match(r"tensorflow\b", dep))
    dockerfile = DOCKERFILE.read_text()
    version = re.search(r'^ARG TENSORFLOW_VERSION="(.*)"$', dockerfile, re.M)
    assert version is not None, "Dockerfile has no ARG TENSORFLOW_VERSION line"
    assert version.group(1) == pinned.removeprefix("tensorflow")
    assert re.search(r"^ARG TENSORFLOW_EXTRA=and-cuda$", dockerfile, re.M)  # CUDA by default


def test_dockerfile_takes_its_base_and_runs_as_a_user_with_a_healthcheck() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(
        r"^ARG BASE_IMAGE=python:3\.12-slim-bookworm\nFROM \$\{BASE_IMAGE\}$", dockerfile, re.M
    )
    assert re.search(r"^USER convlab$", dockerfile, re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/health", dockerfile, re.M)
    assert not dockerfile.startswith("# syntax="), "BuildKit would fetch that from a registry"
    # A lab's own PyPI mirror, and nothing when none is given.
    assert re.search(r"^ARG PIP_INDEX_URL$", dockerfile, re.M)


def test_prometheus_is_opt_in_and_mounts_the_token_its_config_reads(
    config: dict[str, Any],
) -> None:
    prometheus = config["services"]["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]
    mounted = {str(volume).split(":")[1] for volume in prometheus["volumes"]}
    scrape = yaml.safe_load((ROOT / "monitoring/prometheus.yml").read_text())["scrape_configs"]
    assert "/etc/prometheus/prometheus.yml" in mounted
    assert scrape[0]["authorization"]["credentials_file"] in mounted
    assert scrape[0]["static_configs"] == [{"targets": ["api:8000"]}]


def test_optuna_dashboard_is_opt_in_and_reads_convlabs_database(config: dict[str, Any]) -> None:
    dashboard = config["services"]["optuna-dashboard"]
    assert dashboard["profiles"] == ["optuna"]
    assert dashboard["ports"] == ["127.0.0.1:8080:8080/tcp"]
    assert dashboard["depends_on"]["postgres"]["condition"] == "service_healthy"
    database = config["services"]["api"]["environment"]["CONVLAB_DATABASE_URL"]
    assert PASSWORDS["POSTGRES_PASSWORD"] in database
    # The same database, through the upstream image's driver (psycopg2).
    assert dashboard["command"] == [database.replace("+psycopg://", "+psycopg2://", 1)]
