"""Benchmark 4: reads under load. A database holding 1,000 finished experiments x 50 epochs
(26 of them a chapter study), on SQLite and on PostgreSQL, served by one API process and
driven by wrk at concurrency 32: ``GET /experiments/{id}/history`` (a random experiment per
request), ``GET /experiments?limit=50`` and the study's table. Optionally, side by side, an
MLflow tracking server holding the same runs' four metrics, read through
``/api/2.0/mlflow/metrics/get-history`` (one request per metric).

    python bench/queries.py [--experiments 1000] [--epochs 50] [--seconds 10]
                            [--mlflow-python /path/to/venv-with-mlflow/bin/python]
"""

import argparse
import os
import random
import re
import shutil
import subprocess
import tempfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from common import ROOT, running_stack, show
from curves import METRICS, curve

from models.presets import resolve
from models.status import Status
from models.studies import CHAPTER, from_presets, plan
from store.db import get_engine, migrate, session_scope
from store.experiments import create_experiment
from store.runs import refresh_summary
from store.studies import create_study
from store.tables import EpochRecord, Experiment
from tests.services import postgres_database

CONCURRENCY = int(os.environ.get("WRK_C", "32"))


def populate(url: str, experiments: int, epochs: int) -> tuple[list[str], str]:
    """Finished experiments with ``epochs`` rows each; their ids and the study's id."""
    engine = get_engine(url)
    migrate(engine)
    rng = random.Random(0)
    overrides = {"training": {"epochs": epochs}}
    with session_scope(engine) as session:
        runs = plan(from_presets(CHAPTER, overrides, ("presets",)), [0, 1])
        study, members = create_study(
            session, name="chapter", kind="template", definition={}, runs=runs, seeds=[0, 1]
        )
        spec = resolve("base", overrides).model_dump(mode="json")
        loose = [
            create_experiment(session, name=f"bench {i}", spec=spec)
            for i in range(experiments - len(members))
        ]
        ids = [experiment.id for experiment in [*members, *loose]]
    with session_scope(engine) as session:
        rows = [
            {"experiment_id": experiment_id, "epoch": epoch, **curve(epoch, rng)}
            for experiment_id in ids
            for epoch in range(1, epochs + 1)
        ]
        session.execute(EpochRecord.__table__.insert(), rows)  # type: ignore[attr-defined]
    with session_scope(engine) as session:
        for experiment_id in ids:
            experiment = session.get(Experiment, experiment_id)
            assert experiment is not None
            experiment.status = Status.succeeded
            refresh_summary(session, experiment_id)
    return ids, study.id


def wrk(url: str, paths: list[str], seconds: int, token: str | None = None) -> dict[str, float]:
    """Requests per second and p50/p99 latency (ms), each request a random path of ``paths``
    (with ``token`` as its bearer token, if given)."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        quoted = ",".join(f'"{path}"' for path in paths)
        script.write(
            f"paths = {{{quoted}}}\n"
            "request = function() return wrk.format('GET', paths[math.random(#paths)]) end\n"
        )
    done = subprocess.run(
        [
            "wrk",
            *(["-H", f"Authorization: Bearer {token}"] if token else []),
            *["-t2", f"-c{CONCURRENCY}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    Path(script.name).unlink()
    return _parse_wrk(done.stdout)


def _parse_wrk(text: str) -> dict[str, float]:
    def milliseconds(value: str) -> float:
        found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
        if found is None:
            raise RuntimeError(f"wrk printed a latency of {value!r}:\n{text}")
        number, unit = found.groups()
        return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if errors:
        raise RuntimeError(f"{errors.group(1)} error responses under load:\n{text}")
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),  # type: ignore[union-attr]
        "p50": milliseconds(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
        "p99": milliseconds(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),  # type: ignore[union-attr]
    }


def convlab_reads(
    backend: str, args: argparse.Namespace, folder: Path
) -> dict[str, dict[str, float]]:
    with postgres_database() if backend == "postgresql" else nullcontext(None) as postgres:
        home = folder / backend
        home.mkdir()
        url = postgres or f"sqlite:///{home / 'convlab.sqlite'}"
        ids, study_id = populate(url, args.experiments, args.epochs)
        with running_stack(home, workers=0, database_url=url) as stack:
            return {
                "history": wrk(stack.url, [f"/experiments/{i}/history" for i in ids], args.seconds),
                "list": wrk(stack.url, ["/experiments?limit=50"], args.seconds),
                "study table": wrk(stack.url, [f"/studies/{study_id}/table"], args.seconds),
            }


def mlflow_reads(python: Path, args: argparse.Namespace, folder: Path) -> dict[str, float]:
    """The same runs' metrics in an MLflow server (SQLite store), read one metric a request."""
    from tests.services import free_port, stop_process, wait_for

    store = f"sqlite:///{folder / 'mlflow.sqlite'}"
    fill = subprocess.run(
        [
            str(python),
            str(ROOT / "bench" / "mlflow_fill.py"),
            store,
            str(args.experiments),
            str(args.epochs),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    run_ids = fill.stdout.split()
    port = free_port()
    with (folder / "mlflow.log").open("wb") as log:
        server = subprocess.Popen(
            [
                str(python),
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                store,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    import httpx

    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(httpx, base), timeout=120, what="the MLflow server")
        paths = [
            f"/api/2.0/mlflow/metrics/get-history?run_id={run}&metric_key={metric}"
            for run in run_ids
            for metric in METRICS
        ]
        return wrk(base, paths, args.seconds)
    finally:
        stop_process(server)


def _answers(httpx: Any, base: str) -> bool:
    try:
        return bool(httpx.get(f"{base}/health", timeout=2).status_code == 200)
    except httpx.TransportError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--mlflow-python", type=Path, help="a Python that has mlflow installed")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        history_rps = {}
        for backend in ("sqlite", "postgresql"):
            for name, figures in convlab_reads(backend, args, folder).items():
                rows.append(row_of(f"{backend} {name}", figures))
                if name == "history":
                    history_rps[backend] = figures["rps"]
        if args.mlflow_python:
            figures = mlflow_reads(args.mlflow_python, args, folder)
            rows.append(row_of("mlflow get-history (one metric)", figures))
            per_history = figures["rps"] / len(METRICS)
            rows.append(("mlflow whole histories/s (4 requests each)", f"{per_history:.0f}"))
            rows.append(
                (
                    "convlab sqlite history / mlflow whole history",
                    f"{history_rps['sqlite'] / per_history:.1f}x",
                )
            )
    show(
        f"queries: {args.experiments} experiments x {args.epochs} epochs, wrk -c{CONCURRENCY}, "
        f"{args.seconds} s each, one API process (target history: >= 500 req/s, p99 <= 50 ms)",
        rows,
    )


def row_of(name: str, figures: dict[str, float]) -> tuple[str, str]:
    rate, p50, p99 = figures["rps"], figures["p50"], figures["p99"]
    return name, f"{rate:7.0f} req/s   p50 {p50:6.1f} ms   p99 {p99:6.1f} ms"


if __name__ == "__main__":
    main()
