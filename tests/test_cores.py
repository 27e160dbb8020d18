"""The cores a worker is given, read as a container or ``taskset`` gives them: TensorFlow then
runs each op on that many threads instead of one per core of the host."""

import subprocess
import sys
from pathlib import Path

import pytest

from worker.cores import cores_given, cpu_quota


def _cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def _cgroup_v1(root: Path, quota_us: int, period_us: int = 100_000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


@pytest.mark.parametrize(("cpu_max", "quota"), [("150000 100000", 1.5), ("max 100000", None)])
def test_a_cgroup_v2_quota_is_read_in_cores(
    tmp_path: Path, cpu_max: str, quota: float | None
) -> None:
    assert cpu_quota(_cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize(("quota_us", "quota"), [(50_000, 0.5), (-1, None)])
def test_a_cgroup_v1_quota_is_read_in_cores(
    tmp_path: Path, quota_us: int, quota: float | None
) -> None:
    assert cpu_quota(_cgroup_v1(tmp_path, quota_us)) == quota


def test_without_a_cpu_controller_there_is_no_quota(tmp_path: Path) -> None:
    assert cpu_quota(tmp_path) is None


def test_a_quota_caps_the_cores_and_rounds_up(tmp_path: Path) -> None:
    unlimited = cores_given(tmp_path)
    assert unlimited >= 1
    assert cores_given(_cgroup_v1(tmp_path / "half", 50_000)) == 1
    above = _cgroup_v2(tmp_path / "above", f"{100_000 * unlimited + 1} 100000")
    assert cores_given(above) == unlimited  # a quota above the affinity changes nothing


@pytest.mark.slow
def test_a_worker_pinned_to_one_core_runs_tensorflow_on_one_thread() -> None:
    probe = (
        "import worker.training, tensorflow as tf;"
        "print(tf.config.threading.get_intra_op_parallelism_threads())"
    )
    pinned = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert pinned.stdout.split()[-1] == "1"
