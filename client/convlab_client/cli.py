"""``convlab``: experiments and studies over the API (``CONVLAB_URL`` or ``CONVLAB_PORT``,
``CONVLAB_TOKEN``).

HTTP only. An installed server adds its own commands (``convlab token``, which talks to the
database) as Typer apps in the ``convlab.commands`` entry-point group; they are imported only
when one of them runs or the help lists them. Commands on studies, on what experiments produced
and on the catalogue live in ``cli_studies``, ``cli_results`` and ``cli_catalogue``.
"""

import functools
import json
import sys
from collections.abc import Iterator
from importlib.metadata import EntryPoint, entry_points
from typing import Annotated, Any

import typer
import typer.main
from rich.table import Table
from typer.core import TyperGroup

from convlab_client import cli_catalogue, cli_exports, cli_results
from convlab_client.cli_common import (
    METRICS,
    NO_WORKER,
    Name,
    PriorityOption,
    api,
    console,
    fail,
    following,
    metrics,
    number,
    place_in_line,
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
from convlab_client.cli_studies import study
from convlab_client.cli_verify import environment_line, verdict_facts
from convlab_client.client import TERMINAL, ApiError, Client, Json, Status

COMMANDS = "convlab.commands"
"""The entry-point group of commands other distributions add: ``name = "module:typer_app"``."""


@functools.cache
def _added() -> dict[str, EntryPoint]:
    """The commands installed distributions add, by name."""
    return {entry.name: entry for entry in entry_points(group=COMMANDS)}


class _Commands(TyperGroup):
    """The client's commands, then the added ones, each imported when first asked for."""

    def list_commands(self, ctx: Any) -> list[str]:
        return [*super().list_commands(ctx), *sorted(_added().keys() - self.commands.keys())]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in self.commands and cmd_name in _added():
            command = typer.main.get_group(_added()[cmd_name].load())
            command.name = cmd_name
            self.add_command(command)
        return super().get_command(ctx, cmd_name)


app = typer.Typer(
    cls=_Commands,
    help="convlab: train the chapter's CNNs on a convlab server.",
    no_args_is_help=True,
)
app.add_typer(study, name="study")
app.add_typer(cli_results.commands)
app.add_typer(cli_catalogue.commands)
app.add_typer(cli_exports.commands, name="export")
Follow = Annotated[bool, typer.Option("--follow", help="Show epochs until it ends.")]


def _final_table(experiment: Json) -> Table:
    """The chapter's Train/Test table of one experiment's last epoch."""
    final, best = experiment["final"], experiment["best"]
    table = Table("Train accuracy", "Test accuracy", "Train loss", "Test loss", "Best epoch")
    table.add_row(
        *(number(final[name]) for name in ("accuracy", "val_accuracy", "loss", "val_loss")),
        str(best["epoch"]),
    )
    return table


def _follow(client: Client, experiment: Json) -> None:
    """A progress bar over the epochs, a line per epoch, then the final table; exit 1 unless
    the experiment succeeded."""
    experiment_id, total = experiment["id"], experiment["epochs_total"]
    again = f"convlab follow {experiment_id}"
    with following(f"experiment {experiment_id}", again), progress_bar() as progress:
        waiting = place_in_line(experiment)
        if NO_WORKER in waiting:
            progress.console.print(f"queued {waiting}", soft_wrap=True)
        task = progress.add_task(
            f"epoch 0/{total}", total=total, detail=waiting or "waiting for the first epoch"
        )
        for epoch in client.follow(experiment_id):
            done, shown = f"epoch {epoch['epoch']}/{total}", metrics(epoch)
            progress.update(task, completed=epoch["epoch"], description=done, detail=shown)
            progress.console.print(f"{done}  {shown}  {epoch['seconds']:.2f}s", soft_wrap=True)
    ended = client.experiment(experiment_id)
    if ended["final"]:
        console.print(_final_table(ended))
    if ended["status"] != "succeeded":
        reason = f": {ended['error']}" if ended["error"] else "."
        fail(f"Experiment {experiment_id} {ended['status']}{reason}")


@app.command()
def submit(
    preset: Annotated[
        str | None,
        typer.Argument(metavar="PRESET", help="A preset from `convlab presets` (default base)."),
    ] = None,
    dataset: Dataset = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    optimizer: Optimizer = None,
    lr: LearningRate = None,
    seed: Annotated[int | None, typer.Option(help="Seeds Python, NumPy, TensorFlow.")] = None,
    name: Name = None,
    tags: Annotated[
        list[str] | None, typer.Option("--tag", metavar="TAG", help="A tag to add; repeatable.")
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option("--from", metavar="ID", help="Rerun this experiment's spec with changes."),
    ] = None,
    priority: PriorityOption = None,
    sets: Sets = None,
    follow: Follow = False,
    preset_option: Annotated[str | None, typer.Option("--preset", hidden=True)] = None,
) -> None:
    """Submit an experiment and print its id; with --follow, exit 0 only if it succeeds.

    The options set the spec fields they name; --set sets any other."""
    options = {
        "PRESET": ("preset", preset),
        "--preset": ("preset", preset_option),
        **spec_options(dataset, epochs, batch_size, optimizer, lr),
        "--seed": ("seed", seed),
        "--name": ("name", name),
        "--from": ("from", parent),
        "--priority": ("priority", priority),
    }
    body = request_body(sets, options)
    with api(sets) as client:
        experiment = client.submit(body)
        typer.echo(experiment["id"])
        if tags:
            _tag_new(client, experiment["id"], tags)
        if follow:
            _follow(client, experiment)


def _tag_new(client: Client, experiment_id: str, tags: list[str]) -> None:
    """Tag a just submitted experiment; a refusal says that it was submitted all the same."""
    try:
        client.update(experiment_id, {"tags": tags})
    except ApiError as exc:
        fail(f"Experiment {experiment_id} was submitted without its tags: {exc}")


@app.command("follow")
def follow_experiment(experiment_id: str) -> None:
    """Show an experiment's epochs until it ends (again after Ctrl-C on --follow), then its
    final table; exit 0 only if it succeeds."""
    with api() as client:
        _follow(client, client.experiment(experiment_id))


@app.command("ls")
def list_experiments(
    status: Annotated[Status | None, typer.Option()] = None,
    preset: Annotated[str | None, typer.Option()] = None,
    study_id: Annotated[str | None, typer.Option("--study", help="A study's id.")] = None,
    tags: Annotated[
        list[str] | None,
        typer.Option("--tag", metavar="TAG", help="Only those with this tag; repeatable: all."),
    ] = None,
    dataset: Annotated[str | None, typer.Option()] = None,
    text: Annotated[
        str | None, typer.Option("--query", "-q", help="Only those with it in name or notes.")
    ] = None,
    sort: Annotated[
        str | None,
        typer.Option(help="created_at, final.<metric> or best.<metric>; a '-' first: descending."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 20,
) -> None:
    """Experiments, newest first or sorted; filters: status, preset, study, tag, dataset, text."""
    with api() as client:
        items = client.experiments(
            status=status,
            preset=preset,
            study_id=study_id,
            tags=tags or (),
            dataset=dataset,
            q=text,
            sort=sort,
            limit=limit,
        )
    print_table(
        ("id", "name", "preset", "status", "queue", "epoch", "val_accuracy"),
        (
            (
                item["id"],
                item["name"] or "",
                item["spec"]["preset"],
                item["status"],
                place_in_line(item),
                f"{item['epochs_done']}/{item['epochs_total']}",
                number((item["final"] or {}).get("val_accuracy")),
            )
            for item in items
        ),
    )


def _flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of nested dicts as dotted paths, the way --set names them."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            yield from _flat(item, f"{prefix}{key}.")
    else:
        yield prefix.rstrip("."), value


@app.command()
def show(experiment_id: str) -> None:
    """An experiment's status, progress, error, final and best epochs, and resolved spec."""
    with api() as client:
        experiment = client.experiment(experiment_id)
    final, best = experiment["final"], experiment["best"]
    print_facts(
        [
            ("id", experiment["id"]),
            ("name", experiment["name"] or "-"),
            ("tags", ", ".join(experiment["tags"]) or "-"),
            ("notes", experiment["notes"] or "-"),
            ("status", f"{experiment['status']} (attempts {experiment['attempts']})"),
            ("priority", experiment["priority"]),
            ("queue", place_in_line(experiment) or "-"),
            *(
                (f"attempt {attempt['number']}", _attempt_line(attempt))
                for attempt in experiment["attempt_log"]
            ),
            *(
                (f"attempt {attempt['number']} ran", environment_line(attempt["environment"]))
                for attempt in experiment["attempt_log"]
                if attempt.get("environment")
            ),
            ("progress", f"epoch {experiment['epochs_done']}/{experiment['epochs_total']}"),
            ("error", experiment["error"] or "-"),
            ("final", metrics(final) if final else "-"),
            ("best", f"epoch {best['epoch']}  {metrics(best)}" if best else "-"),
            *((("verifies", experiment["verifies_id"]),) if experiment.get("verifies_id") else ()),
            *verdict_facts(experiment.get("verdict")),
            *((f"spec {path}", json.dumps(leaf)) for path, leaf in _flat(experiment["spec"])),
        ]
    )


def _attempt_line(attempt: Json) -> str:
    accelerator = attempt["accelerator"] or {"name": "?"}
    return f"{attempt['started_at']} on {attempt['worker']} ({accelerator['name']})"


@app.command()
def verify(
    experiment_id: str,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the rerun and print the verdict.")
    ] = False,
    follow: Follow = False,
) -> None:
    """Rerun a succeeded experiment's spec to verify it and print the rerun's id; with --wait
    or --follow, then its verdict (exit 0 whatever it is; 1 if the rerun did not succeed)."""
    with api() as client:
        rerun = client.verify(experiment_id)
        typer.echo(rerun["id"])
        if not (wait or follow):
            return
        if follow:
            _follow(client, rerun)
        else:
            with following(f"verification {rerun['id']}"):
                ended = client.wait(rerun["id"])
            if ended["status"] != "succeeded":
                reason = f": {ended['error']}" if ended["error"] else "."
                fail(f"Verification {rerun['id']} {ended['status']}{reason}")
        verdict = client.verdict(rerun["id"])
    if verdict is None:
        fail(
            f"Verification {rerun['id']} succeeded but has no verdict yet; "
            f"`convlab show {rerun['id']}` shows it once it is recorded."
        )
    print_facts(verdict_facts(verdict))


@app.command()
def tag(
    experiment_id: str,
    tags: Annotated[list[str], typer.Argument(metavar="TAG...")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead.")] = False,
) -> None:
    """Add tags to an experiment (or remove them), and print the tags it has then."""
    with api() as client:
        change = {"remove_tags" if remove else "add_tags": tags}
        experiment = client.update(experiment_id, change)
    typer.echo(f"{experiment_id} tags: {', '.join(experiment['tags']) or '-'}")


@app.command()
def note(experiment_id: str, text: Annotated[str, typer.Argument(metavar="TEXT")]) -> None:
    """Set an experiment's notes (an empty TEXT removes them)."""
    with api() as client:
        client.update(experiment_id, {"notes": text or None})


@app.command()
def rename(experiment_id: str, name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Set an experiment's name (an empty NAME removes it)."""
    with api() as client:
        client.update(experiment_id, {"name": name or None})


@app.command()
def history(
    experiment_id: str,
    csv: Annotated[bool, typer.Option("--csv", help="The server's CSV, as it is.")] = False,
) -> None:
    """An experiment's finished epochs."""
    with api() as client:
        if csv:
            sys.stdout.write(client.history_csv(experiment_id))
            return
        epochs = client.history(experiment_id)
    print_table(
        ("epoch", *METRICS, "seconds"),
        (
            (
                str(epoch["epoch"]),
                *(number(epoch[name]) for name in METRICS),
                f"{epoch['seconds']:.2f}",
            )
            for epoch in epochs
        ),
    )


@app.command()
def cancel(experiment_id: str) -> None:
    """Cancel an experiment: a queued one never runs, a running one stops at its next batch."""
    with api() as client:
        experiment = client.cancel(experiment_id)
    note = "" if experiment["status"] in TERMINAL else " (stops at its next batch)"
    typer.echo(f"{experiment_id} {experiment['status']}{note}")


@app.command()
def pause(experiment_id: str) -> None:
    """Pause an experiment: a queued one at once, a running one at its next batch."""
    with api() as client:
        experiment = client.pause(experiment_id)
    note = "" if experiment["status"] == "paused" else " (pauses at its next batch)"
    typer.echo(f"{experiment_id} {experiment['status']}{note}")


@app.command()
def resume(experiment_id: str) -> None:
    """Put a paused experiment back in the queue; it goes on from its checkpoint."""
    with api() as client:
        experiment = client.resume(experiment_id)
    typer.echo(f"{experiment_id} {experiment['status']}")


@app.command("continue")
def continue_experiment(
    experiment_id: str,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train after the last one.")],
    priority: PriorityOption = None,
    follow: Follow = False,
) -> None:
    """Train an ended experiment on from its last checkpoint as a new one; print its id."""
    with api() as client:
        experiment = client.continue_experiment(experiment_id, epochs, priority=priority)
        typer.echo(experiment["id"])
        if follow:
            _follow(client, experiment)


CONTINUED = "is continued by"
"""What the server's 409 says of an experiment other runs continue."""


@app.command()
def delete(
    experiment_id: str,
    force: Annotated[
        bool, typer.Option("--force", help="Even if other runs continue it: no question.")
    ] = False,
) -> None:
    """Delete an ended experiment with its history, checkpoints and evaluation; one that
    other runs continue (their history with ?lineage=true joins its epochs) after a question
    in a terminal, or with --force."""
    with api() as client:
        try:
            client.delete(experiment_id, force=force)
        except ApiError as exc:
            if exc.status_code != 409 or CONTINUED not in str(exc):
                raise
            if not sys.stdin.isatty():
                fail(str(exc).replace("force=true", "--force"))
            if not typer.confirm(f"{str(exc).rsplit(';', 1)[0]}. Delete it all the same?"):
                fail(f"{experiment_id} not deleted.")
            client.delete(experiment_id, force=True)
    typer.echo(f"{experiment_id} deleted")
