"""Reads side by side: this checkout's API and the API of an earlier revision with the same
database schema (checked out into a temporary git worktree) serve one database, each in one
process; wrk runs against them in turn (ABBA: neither always goes first), ``--rounds``
times, on ``GET /experiments/{id}/history`` for random finished experiments. Prints each
round and the medians' ratio, so a change to the read path is judged on this machine in one
run, whatever its speed that day.

    python bench/reads_against.py REVISION [--rounds 4] [--seconds 6] [--database postgresql]
                                  [--experiments 1000] [--epochs 50]
"""

import argparse
import subprocess
import sys
import tempfile
from contextlib import ExitStack, nullcontext
from pathlib import Path

from common import ROOT, median, running_stack, show
from queries import populate, row_of, wrk

from tests.services import API_COMMAND, postgres_database


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revision", help="a git revision of this repository, e.g. HEAD~3")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--experiments", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    figures: dict[str, list[dict[str, float]]] = {"this checkout": [], args.revision: []}
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        earlier = folder / "earlier"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(earlier), args.revision],
            check=True,
            capture_output=True,
        )
        stack.callback(
            subprocess.run, ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(earlier)]
        )
        postgres = stack.enter_context(
            postgres_database() if args.database == "postgresql" else nullcontext(None)
        )
        url = postgres or f"sqlite:///{folder / 'convlab.sqlite'}"
        ids, _ = populate(url, args.experiments, args.epochs)
        paths = [f"/experiments/{i}/history" for i in ids]
        apis = {
            "this checkout": API_COMMAND,
            args.revision: f"{API_COMMAND} --app-dir {earlier}",  # its packages come first
        }
        urls = {}
        for name, command in apis.items():
            home = folder / name.replace("/", "_")
            home.mkdir()
            running = stack.enter_context(
                running_stack(home, api_command=command, workers=0, database_url=url)
            )
            wrk(running.url, paths, 2)  # warm up
            urls[name] = running.url
        for round_number in range(1, args.rounds + 1):
            turns = list(urls.items())
            for name, url_of_api in turns if round_number % 2 else reversed(turns):
                figures[name].append(wrk(url_of_api, paths, args.seconds))
                print(round_number, *row_of(name, figures[name][-1]), flush=True)
    medians = {
        name: {key: median([run[key] for run in runs]) for key in ("rps", "p50", "p99")}
        for name, runs in figures.items()
    }
    ours, theirs = medians["this checkout"], medians[args.revision]
    show(
        f"history reads, this checkout against {args.revision}: {args.database}, "
        f"{args.experiments} experiments x {args.epochs} epochs, {args.rounds} rounds of "
        f"{args.seconds} s each, medians",
        [
            *(row_of(name, values) for name, values in medians.items()),
            ("requests/s ratio", f"x{ours['rps'] / theirs['rps']:.2f}"),
            ("p99 ratio", f"x{ours['p99'] / theirs['p99']:.2f}"),
        ],
    )


if __name__ == "__main__":
    sys.exit(main())
