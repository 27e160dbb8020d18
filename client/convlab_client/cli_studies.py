"""``convlab study``: studies, variants crossed with seeds, compared side by side."""

import json
from typing import Annotated, Literal

import typer

from convlab_client.cli_common import (
    Name,
    PriorityOption,
    api,
    following,
    print_facts,
    print_table,
    progress_bar,
)
from convlab_client.cli_spec import (
    BatchSize,
    Dataset,
    Epochs,
    LearningRate,
    Optimizer,
    Sets,
    request_body,
    spec_options,
)
from convlab_client.client import TERMINAL, Client, Json

study = typer.Typer(help="Studies: variants crossed with seeds, compared.", no_args_is_help=True)


@study.command("submit")
def study_submit(
    template: Annotated[
        Literal["chapter"] | None, typer.Option(help="chapter: its thirteen presets.")
    ] = None,
    presets: Annotated[
        list[str] | None, typer.Option("--preset", metavar="PRESET", help="A variant; repeatable.")
    ] = None,
    dataset: Dataset = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: LearningRate = None,
    sets: Sets = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option("--seed", metavar="SEED", help="Run every variant with it; repeatable."),
    ] = None,
    name: Name = None,
    priority: PriorityOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress, then the table.")
    ] = False,
) -> None:
    """Submit a study and print its id; with --follow, exit 0 only if no experiment failed.

    --dataset, --epochs, --batch-size, --optimizer and --lr set every variant's field (a
    variant that sets it itself keeps its own), as --set does."""
    body = request_body(
        sets,
        {
            **spec_options(dataset, epochs, batch_size, optimizer, lr),
            "--template": ("template", template),
            "--preset": ("presets", presets),
            "--seed": ("seeds", seeds),
            "--name": ("name", name),
            "--priority": ("priority", priority),
        },
    )
    with api(sets) as client:
        created = client.submit_study(body)
        typer.echo(created["id"])
        if follow:
            _follow_study(client, created["id"])


def _ended(study: Json) -> tuple[int, int]:
    """How many of a study's experiments (a search: of its planned trials) have ended, of how
    many."""
    counts = study["progress"]
    total = counts.get("trials_planned", len(study["experiment_ids"]))
    return sum(counts[status] for status in TERMINAL), total


def _ended_line(state: Json) -> str:
    done, total = _ended(state)
    return f"{done}/{total} experiments ended, {state['progress']['failed']} failed"


def _follow_study(client: Client, study_id: str) -> None:
    """One progress bar over the study's experiments, then its table; exit 1 if any failed."""
    with following(f"study {study_id}"), progress_bar() as progress:
        task = progress.add_task("experiments", detail="")
        reported = 0
        for state in client.watch_study(study_id):
            done, total = _ended(state)
            if done > reported:
                reported = done
                progress.console.print(_ended_line(state))
            detail = f"{done}/{total}, {state['progress']['running']} running"
            progress.update(task, total=total, completed=done, detail=detail)
    typer.echo(client.study_table(study_id, "markdown"), nl=False)
    failed = client.experiments(study_id=study_id, status="failed", limit=None)
    for experiment in failed:
        typer.echo(f"Experiment {experiment['id']} failed: {experiment['error']}", err=True)
    if failed:
        raise typer.Exit(1)


Baseline = Annotated[
    str | None,
    typer.Option(help="The row the others are compared with: a variant, or an experiment id."),
]


@study.command("table")
def study_table(
    study_id: str,
    format: Annotated[Literal["markdown", "csv", "json"], typer.Option()] = "markdown",
    baseline: Baseline = None,
) -> None:
    """A study's comparison table: a row per variant, mean ± std over seeds, and each row's
    test accuracy beside it as a difference to the baseline's with its 95% interval."""
    with api() as client:
        if format == "json":
            rows = client.study_table(study_id, baseline=baseline)
            typer.echo(json.dumps(rows, indent=2))
        else:
            typer.echo(client.study_table(study_id, format, baseline=baseline), nl=False)


@study.command("seeds")
def study_seeds(
    study_id: str,
    add: Annotated[
        int | None, typer.Option(min=1, help="This many seeds after the study's highest.")
    ] = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option("--seed", metavar="SEED", help="This new seed; repeatable."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress, then the table.")
    ] = False,
) -> None:
    """Run every variant of a study again at new seeds (--add N or --seed S ...); print the
    new seeds and how many experiments were queued."""
    if (add is None) == (not seeds):
        raise typer.BadParameter("give --add N or --seed S (repeatable), not both")
    with api() as client:
        before = client.study(study_id)
        grown = client.add_seeds(study_id, seeds=seeds or None, add=add)
        added = [seed for seed in grown["seeds"] if seed not in before["seeds"]]
        queued = len(grown["experiment_ids"]) - len(before["experiment_ids"])
        typer.echo(f"{study_id}: seeds {', '.join(map(str, added))} queued ({queued} experiments)")
        if follow:
            _follow_study(client, study_id)


@study.command("ls")
def study_list(limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 20) -> None:
    """Studies, newest first, with their status and how many experiments ended."""
    with api() as client:
        items = client.studies(limit=limit)
    print_table(
        ("id", "name", "kind", "status", "ended", "created"),
        (
            (
                item["id"],
                item["name"] or "",
                item["kind"],
                item["status"],
                "{}/{}".format(*_ended(item)),
                item["created_at"][:16].replace("T", " "),
            )
            for item in items
        ),
    )


@study.command("show")
def study_show(study_id: str) -> None:
    """A study's status, progress, variants and seeds, best trial, then its table."""
    with api() as client:
        found = client.study(study_id)
        table = client.study_table(study_id, "markdown")
    counts, best = found["progress"], found["best_trial"]
    print_facts(
        [
            ("id", found["id"]),
            ("name", found["name"] or "-"),
            ("kind", found["kind"]),
            ("status", found["status"]),
            ("progress", f"{_ended_line(found)}, {counts['running']} running"),
            ("epochs", f"{counts['epochs_done']}/{counts['epochs_total']}"),
            ("variants", ", ".join(found["variants"]) or "-"),
            ("seeds", ", ".join(map(str, found["seeds"]))),
            ("best trial", json.dumps(best) if best else "-"),
        ]
    )
    typer.echo(table, nl=False)


@study.command("cancel")
def study_cancel(study_id: str) -> None:
    """Cancel a study's experiments that have not ended; a search starts no more trials."""
    with api() as client:
        found = client.cancel_study(study_id)
    note = "" if found["status"] in TERMINAL else " (running experiments stop at their next batch)"
    typer.echo(f"{study_id} {found['status']}{note}")
