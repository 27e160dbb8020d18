"""make lint's check that no module imports one that imports it back (check-cycles.py)."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import grimp

SCRIPT = Path(__file__).parents[1] / "scripts" / "check-cycles.py"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_cycles", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cycles_names_the_modules_that_import_each_other_through_others() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a"), ("e", "f")]:
        graph.add_import(importer=importer, imported=imported)
    assert _script().cycles(graph) == [["a", "b", "c"]]


def test_cycles_finds_none_where_every_import_points_one_way() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("a", "c")]:
        graph.add_import(importer=importer, imported=imported)
    assert _script().cycles(graph) == []


def test_the_project_has_no_import_cycle() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=SCRIPT.parents[1]
    )
    assert result.returncode == 0, result.stderr
