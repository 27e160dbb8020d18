"""The README stays true, and so do the docs pages its sections moved to: every ``console`` and
``python`` block that can run here runs against a real stack, as `make up` runs it (SQLite, the
SQLite broker, one worker); each command must exit as the page says (0, or non-zero in a block
marked ``fails``) and its output must show what the page shows (status codes, field names,
headers, flags and words; not the numbers)."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.readme import ID, Block, Command, differences, readme_blocks
from tests.services import BIN, Stack, running_stack, wait_for

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parents[1]
ARTIFACTS = ROOT / "test-artifacts"
"""Where each command's real output is written, to compare with the README by eye."""
STAND_IN = {
    "preset": "dropout",
    "dataset": {"name": "digits"},
    "training": {"epochs": 3, "batch_size": 64},
}
"""What an id the README uses without creating it stands for (its examples' dropout run)."""
TERMINAL = {"succeeded", "failed", "cancelled"}
PAGES = (
    "README.md",
    "docs/guide.md",
    "docs/deploy.md",
    "docs/config.md",
    "docs/security.md",
    "docs/reliability.md",
    "docs/architecture.md",
)
"""The pages whose blocks run, in this order: ids may stand for runs an earlier page made."""
WITHOUT_PANDAS = 'import sys\nsys.modules["pandas"] = None  # the examples run without pandas\n'
"""Run before every ``python`` block: the client does not bring pandas, so neither may they."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("readme")) as running:
        yield running


class Reader:
    """Runs the README's commands in order, its ids standing for the runs they made."""

    def __init__(self, stack: Stack, folder: Path, api: httpx.Client) -> None:
        self.stack, self.folder, self.api = stack, folder, api
        self.ids: dict[str, str] = {}
        """README id → the id of the run it stands for here."""
        self.fresh: set[str] = set()

    def run(self, page: str, block: Block, command: Command) -> list[str]:
        """The command's differences from what the README shows, and an exit status other than
        the README's, each naming where."""
        if block.directive != "fresh":
            self._wait_until_ended()
        typed = self._substituted(command.line, fresh=block.directive == "fresh")
        program = (
            [str(BIN / "python"), "-c", WITHOUT_PANDAS + typed]
            if block.language == "python"
            else ["bash", "-o", "pipefail", "-c", typed]
        )
        done = subprocess.run(
            program,
            cwd=self.folder,
            env={
                **self.stack.env,
                "PATH": f"{BIN}:/usr/bin:/bin",
                "CONVLAB_URL": self.stack.url,
                "COLUMNS": "200",
            },
            capture_output=True,
            text=True,
            timeout=300,
        )
        output = done.stdout.splitlines() + done.stderr.splitlines()
        self._learn_ids(command.shown, output)
        problems = differences(command.shown, output)
        if (done.returncode != 0) != (block.directive == "fails"):
            shown = "shows an error" if block.directive == "fails" else "does not show an error"
            problems.append(f"exited {done.returncode}, but the README {shown}")
        first_line = command.line.splitlines()[0] if command.line else ""
        where = f"{page} line {block.number}, {block.language}: {first_line[:70]}"
        with (ARTIFACTS / "readme-outputs.txt").open("a") as record:
            record.write(f"== {where} ({len(problems)} differences)\n$ {typed}\n")
            record.write("\n".join(output) + "\n\n")
        return [f"{where}: {problem}" for problem in problems]

    def _substituted(self, line: str, *, fresh: bool) -> str:
        for readme_id in dict.fromkeys(ID.findall(line)):
            if fresh and readme_id not in self.fresh:
                self.fresh.add(readme_id)
                self.ids[readme_id] = self._submit()
            elif readme_id not in self.ids:
                self.ids[readme_id] = self._submit()
                self._wait_until_ended()
            line = line.replace(readme_id, self.ids[readme_id])
        return line.replace("localhost:8000", self.stack.url.removeprefix("http://"))

    def _submit(self) -> str:
        response = self.api.post("/experiments", json=STAND_IN)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def _learn_ids(self, shown: list[str], output: list[str]) -> None:
        """Pair the ids the README shows with those the run printed, in order of appearance."""
        readme_ids = list(dict.fromkeys(ID.findall("\n".join(shown))))
        printed = list(dict.fromkeys(ID.findall("\n".join(output))))
        for readme_id, real in zip(readme_ids, printed, strict=False):
            self.ids.setdefault(readme_id, real)

    def _wait_until_ended(self) -> None:
        for real in set(self.ids.values()):
            wait_for(  # 65 runs of the chapter study on two cores shared with the suite
                lambda real=real: self._ended(real), timeout=900, what=f"{real} to end"
            )

    def _ended(self, real: str) -> bool:
        for kind in ("experiments", "studies"):
            response = self.api.get(f"/{kind}/{real}")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body["status"] in TERMINAL
        return True  # deleted, or not a run


def test_every_block_of_the_readme_and_its_pages_exits_and_shows_what_a_real_stack_answers(
    stack: Stack, tmp_path: Path
) -> None:
    shutil.copytree(ROOT / "docs", tmp_path / "docs")  # the pictures the examples upload
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "readme-outputs.txt").unlink(missing_ok=True)
    pages = {page: list(readme_blocks((ROOT / page).read_text())) for page in PAGES}
    blocks = [block for page_blocks in pages.values() for block in page_blocks]
    assert len(pages["README.md"]) >= 6, "the README's console blocks were not found"
    assert len(pages["docs/guide.md"]) >= 8, "the guide's console blocks were not found"
    assert any(block.language == "python" for block in blocks), "no python block was found"
    assert any(block.directive == "fails" for block in blocks), "no block shows an error"
    problems: list[str] = []
    with stack.client() as api:
        reader = Reader(stack, tmp_path, api)
        for page, page_blocks in pages.items():
            for block in page_blocks:
                if block.directive != "skip":
                    for command in block.commands:
                        problems += reader.run(page, block, command)
    assert not problems, "\n".join(problems)


SHOWN = [
    "HTTP/1.1 201 Created",
    "location: /experiments/e00fc9b9e4444ae2a376dfb62aaff578",
    "",
    '{"id":"e00fc9b9e4444ae2a376dfb62aaff578","status":"queued","final":null,"epochs_done":0}',
    "epoch 1/5  loss 2.2524  val_accuracy 0.5833  1.76s",
    "| base | 2 | 0.367 ± 0.219 |",
    "| ... (13 rows) |",
]


def test_the_comparison_ignores_numbers_and_ids_but_not_names_codes_or_words() -> None:
    served = [
        "HTTP/1.1 201 Created",
        "date: Mon, 30 Nov 2026 02:29:22 GMT",
        "location: /experiments/74d1559d3f0e47a0a50c6619b990e099",
        '{"id":"74d1559d3f0e47a0a50c6619b990e099","status":"running","final":{"loss":1.0},'
        '"epochs_done":12}',
        "epoch 10/50  loss 0.1  val_accuracy 0.99  0.2s",
        "| base | 3 | 0.9 ± 0.01 |",
        "| sgd | 3 | 0.1 ± 0.001 |",
    ]
    assert differences(SHOWN, served) == []
    assert differences(SHOWN, ["HTTP/1.1 202 Accepted", *served[1:]])[0].startswith(
        "no line like 'HTTP/1.1 201 Created'"
    )
    renamed = [line.replace("val_accuracy", "val_acc") for line in served]
    assert "no line like 'epoch 1/5" in differences(SHOWN, renamed)[0]
    more = [*served[:3], served[3].replace("}", ',"worker":null}'), *served[4:]]
    assert differences(SHOWN, more) == [".worker is served but not shown"]
    elided = ['{"id":"e00fc9b9e4444ae2a376dfb62aaff578", ..., "workers_lost":0, ...}']
    assert differences(elided, served) == ["workers_lost is shown but not served"]
    noise = ["| prelu | 5 | -0.004 [-0.167, +0.159] (noise) | 0.96 | - |"]  # a sign is noise too
    assert differences(noise, ["| prelu | 5 | +0.004 [-0.160, +0.168] (noise) | 0.95 | - |"]) == []
    beyond = ["| prelu | 5 | +0.104 [+0.060, +0.148] | 0.001 | 4 |"]  # but not the verdict
    assert differences(noise, beyond)[0].startswith("no line like '| prelu")


def test_readme_blocks_read_commands_continuations_outputs_programs_and_directives() -> None:
    text = "\n".join(
        [
            "<!-- readme-test: fresh -->",
            "```console",
            "$ curl -X POST localhost:8000/x \\",
            "    -d '{}'",
            "{}",
            "$ convlab ls",
            "id  status",
            "```",
            "```sh",
            "$ not a console block",
            "```",
            "<!-- readme-test: fails -->",
            "```console",
            "$ convlab submit --epochs 0",
            "The server refused the request: ...",
            "```",
            "```python",
            "import sys",
            "print(sys.argv)",
            "```",
        ]
    )
    console, failing, program = readme_blocks(text)
    assert (console.number, console.directive, console.language) == (2, "fresh", "console")
    assert [(command.line, command.shown) for command in console.commands] == [
        ("curl -X POST localhost:8000/x -d '{}'", ["{}"]),
        ("convlab ls", ["id  status"]),
    ]
    assert (failing.directive, [command.line for command in failing.commands]) == (
        "fails",
        ["convlab submit --epochs 0"],
    )
    assert (program.number, program.directive, program.language) == (17, None, "python")
    assert [(command.line, command.shown) for command in program.commands] == [
        ("import sys\nprint(sys.argv)", [])
    ]
