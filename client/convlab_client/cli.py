"""``convlab``: experiments and studies over the API (``CONVLAB_URL``, ``CONVLAB_TOKEN``).

HTTP only. An installed server adds its own commands (``convlab token``, which talks to the
database) as Typer apps in the ``convlab.commands`` entry-point group; they are imported only
when one of them runs or the help lists them.
"""

import functools
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import typer
import typer.main
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

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
study = typer.Typer(help="Studies: variants crossed with seeds, compared.", no_args_is_help=True)
app.add_typer(study, name="study")

console = Console(markup=False, highlight=False)
"""Tables and progress on stdout; names and errors are shown as given, never as markup."""
if not console.is_terminal:
    console.width = max(console.width, 160)  # piped or captured: whole ids, unsquashed tables
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

Sets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY.PATH=VALUE",
        help="A spec override, e.g. training.epochs=10 (JSON if it parses, else text); repeatable.",
    ),
]
Name = Annotated[str | None, typer.Option("--name", help="A label for people.")]


# Every API or network error ends the command with its sentence on stderr.


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def _api() -> Iterator[Client]:
    """A client on CONVLAB_URL and CONVLAB_TOKEN whose errors end the command."""
    try:
        with Client() as client:
            yield client
    except ApiError as exc:
        _fail(str(exc))


@contextmanager
def _following(what: str) -> Iterator[None]:
    """Ctrl-C stops following, not the work."""
    try:
        yield
    except KeyboardInterrupt:
        _fail(f"Stopped following; {what} keeps running on the server.", 130)


def _json_value(text: str) -> Any:
    """``text`` as JSON when it parses (10, 0.5, true, [32, 64], null), else as a string."""

    def refuse(constant: str) -> NoReturn:
        raise ValueError(f"{constant} is not a JSON number")

    try:
        return json.loads(text, parse_constant=refuse)
    except ValueError:
        return text


def _overrides(assignments: list[str] | None) -> Json:
    """Nested spec overrides from ``key.path=value`` assignments, later ones winning."""
    body: Json = {}
    for assignment in assignments or []:
        path, equals, text = assignment.partition("=")
        keys = path.strip().split(".")
        if not equals or not all(keys):
            raise typer.BadParameter(f"{assignment!r} is not KEY.PATH=VALUE", param_hint="--set")
        node = body
        for depth, key in enumerate(keys[:-1], 1):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                prefix = ".".join(keys[:depth])
                raise typer.BadParameter(
                    f"{prefix} was set to a value, not keys", param_hint="--set"
                )
        node[keys[-1]] = _json_value(text)
    return body


def _given(**options: Any) -> Json:
    """The options that were given."""
    return {key: value for key, value in options.items() if value is not None}


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _metrics(epoch: Json) -> str:
    """The metrics the epoch (or best epoch) has, in the chapter's order."""
    return "  ".join(f"{name} {_number(epoch[name])}" for name in METRICS if name in epoch)


def _progress() -> Progress:
    """A live bar in a terminal (gone when it ends; lines printed through it stay)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[detail]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _final_table(experiment: Json) -> Table:
    """The chapter's Train/Test table of one experiment's last epoch."""
    final, best = experiment["final"], experiment["best"]
    table = Table("Train accuracy", "Test accuracy", "Train loss", "Test loss", "Best epoch")
    table.add_row(
        *(_number(final[name]) for name in ("accuracy", "val_accuracy", "loss", "val_loss")),
        str(best["epoch"]),
    )
    return table


def _follow(api: Client, experiment: Json) -> None:
    """A progress bar over the epochs, a line per epoch, then the final table; exit 1 unless
    the experiment succeeded."""
    experiment_id, total = experiment["id"], experiment["epochs_total"]
    with _following(f"experiment {experiment_id}"), _progress() as progress:
        task = progress.add_task(
            f"epoch 0/{total}", total=total, detail="waiting for the first epoch"
        )
        for epoch in api.follow(experiment_id):
            done, metrics = f"epoch {epoch['epoch']}/{total}", _metrics(epoch)
            progress.update(task, completed=epoch["epoch"], description=done, detail=metrics)
            progress.console.print(f"{done}  {metrics}  {epoch['seconds']:.2f}s", soft_wrap=True)
    ended = api.experiment(experiment_id)
    if ended["final"]:
        console.print(_final_table(ended))
    if ended["status"] != "succeeded":
        reason = f": {ended['error']}" if ended["error"] else "."
        _fail(f"Experiment {experiment_id} {ended['status']}{reason}")


@app.command()
def submit(
    preset: Annotated[str | None, typer.Option(help="A preset (default base).")] = None,
    sets: Sets = None,
    name: Name = None,
    seed: Annotated[int | None, typer.Option(help="Seeds Python, NumPy, TensorFlow.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Show epochs until it ends.")] = False,
    parent: Annotated[
        str | None,
        typer.Option("--from", help="Rerun this experiment's spec with the --set changes."),
    ] = None,
) -> None:
    """Submit an experiment and print its id; with --follow, exit 0 only if it succeeds."""
    body = _overrides(sets) | _given(preset=preset, name=name, seed=seed, **{"from": parent})
    with _api() as api:
        experiment = api.submit(body)
        typer.echo(experiment["id"])
        if follow:
            _follow(api, experiment)


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
    """Experiments, newest first or sorted, filtered by status, preset, study, tags, dataset and
    text."""
    with _api() as api:
        items = api.experiments(
            status=status,
            preset=preset,
            study_id=study_id,
            tags=tags or (),
            dataset=dataset,
            q=text,
            sort=sort,
            limit=limit,
        )
    table = Table("id", "name", "preset", "status", "epoch", "val_accuracy")
    table.columns[0].no_wrap = True
    for item in items:
        table.add_row(
            item["id"],
            item["name"] or "",
            item["spec"]["preset"],
            item["status"],
            f"{item['epochs_done']}/{item['epochs_total']}",
            _number((item["final"] or {}).get("val_accuracy")),
        )
    console.print(table)


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
    with _api() as api:
        experiment = api.experiment(experiment_id)
    final, best = experiment["final"], experiment["best"]
    facts = Table.grid(padding=(0, 2))
    for label, value in [
        ("id", experiment["id"]),
        ("name", experiment["name"] or "-"),
        ("tags", ", ".join(experiment["tags"]) or "-"),
        ("notes", experiment["notes"] or "-"),
        ("status", f"{experiment['status']} (attempts {experiment['attempts']})"),
        ("progress", f"epoch {experiment['epochs_done']}/{experiment['epochs_total']}"),
        ("error", experiment["error"] or "-"),
        ("final", _metrics(final) if final else "-"),
        ("best", f"epoch {best['epoch']}  {_metrics(best)}" if best else "-"),
        *((f"spec {path}", json.dumps(leaf)) for path, leaf in _flat(experiment["spec"])),
    ]:
        facts.add_row(label, value)
    console.print(facts)


@app.command()
def tag(
    experiment_id: str,
    tags: Annotated[list[str], typer.Argument(metavar="TAG...")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove these tags instead.")] = False,
) -> None:
    """Add tags to an experiment (or remove them), and print the tags it has then."""
    with _api() as api:
        had = api.experiment(experiment_id)["tags"]
        kept = [name for name in had if name not in tags] if remove else [*had, *tags]
        experiment = api.update(experiment_id, {"tags": kept})
    typer.echo(f"{experiment_id} tags: {', '.join(experiment['tags']) or '-'}")


@app.command()
def note(experiment_id: str, text: Annotated[str, typer.Argument(metavar="TEXT")]) -> None:
    """Set an experiment's notes (an empty TEXT removes them)."""
    with _api() as api:
        api.update(experiment_id, {"notes": text or None})


@app.command()
def rename(experiment_id: str, name: Annotated[str, typer.Argument(metavar="NAME")]) -> None:
    """Set an experiment's name (an empty NAME removes it)."""
    with _api() as api:
        api.update(experiment_id, {"name": name or None})


@app.command()
def history(
    experiment_id: str,
    csv: Annotated[bool, typer.Option("--csv", help="The server's CSV, as it is.")] = False,
) -> None:
    """An experiment's finished epochs."""
    with _api() as api:
        if csv:
            sys.stdout.write(api.history_csv(experiment_id))
            return
        epochs = api.history(experiment_id)
    table = Table("epoch", *METRICS, "seconds")
    for epoch in epochs:
        metrics = (_number(epoch[name]) for name in METRICS)
        table.add_row(str(epoch["epoch"]), *metrics, f"{epoch['seconds']:.2f}")
    console.print(table)


@app.command()
def cancel(experiment_id: str) -> None:
    """Cancel an experiment: a queued one never runs, a running one stops at its next batch."""
    with _api() as api:
        experiment = api.cancel(experiment_id)
    note = "" if experiment["status"] in TERMINAL else " (stops at its next batch)"
    typer.echo(f"{experiment_id} {experiment['status']}{note}")


@app.command()
def pause(experiment_id: str) -> None:
    """Pause an experiment: a queued one at once, a running one at its next batch."""
    with _api() as api:
        experiment = api.pause(experiment_id)
    note = "" if experiment["status"] == "paused" else " (pauses at its next batch)"
    typer.echo(f"{experiment_id} {experiment['status']}{note}")


@app.command()
def resume(experiment_id: str) -> None:
    """Put a paused experiment back in the queue; it goes on from its checkpoint."""
    with _api() as api:
        experiment = api.resume(experiment_id)
    typer.echo(f"{experiment_id} {experiment['status']}")


@app.command("continue")
def continue_experiment(
    experiment_id: str,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train after the last one.")],
    follow: Annotated[bool, typer.Option("--follow", help="Show epochs until it ends.")] = False,
) -> None:
    """Train an ended experiment on from its last checkpoint as a new one; print its id."""
    with _api() as api:
        experiment = api.continue_experiment(experiment_id, epochs)
        typer.echo(experiment["id"])
        if follow:
            _follow(api, experiment)


@study.command("submit")
def study_submit(
    template: Annotated[
        Literal["chapter"] | None, typer.Option(help="chapter: its thirteen presets.")
    ] = None,
    presets: Annotated[
        list[str] | None, typer.Option("--preset", metavar="PRESET", help="A variant; repeatable.")
    ] = None,
    sets: Sets = None,
    seeds: Annotated[
        list[int] | None,
        typer.Option("--seed", metavar="SEED", help="Run every variant with it; repeatable."),
    ] = None,
    name: Name = None,
    follow: Annotated[
        bool, typer.Option("--follow", help="Show progress, then the table.")
    ] = False,
) -> None:
    """Submit a study and print its id; with --follow, exit 0 only if no experiment failed."""
    body = _overrides(sets) | _given(template=template, presets=presets, seeds=seeds, name=name)
    with _api() as api:
        created = api.submit_study(body)
        typer.echo(created["id"])
        if follow:
            _follow_study(api, created["id"])


def _follow_study(api: Client, study_id: str) -> None:
    """One progress bar over the study's experiments, then its table; exit 1 if any failed."""
    with _following(f"study {study_id}"), _progress() as progress:
        task = progress.add_task("experiments", detail="")
        reported = 0
        for state in api.watch_study(study_id):
            counts = state["progress"]
            total = counts.get("trials_planned", len(state["experiment_ids"]))
            done = sum(counts[status] for status in TERMINAL)
            if done > reported:
                reported = done
                progress.console.print(
                    f"{done}/{total} experiments ended, {counts['failed']} failed"
                )
            detail = f"{done}/{total}, {counts['running']} running"
            progress.update(task, total=total, completed=done, detail=detail)
    typer.echo(api.study_table(study_id, "markdown"), nl=False)
    failed = api.experiments(study_id=study_id, status="failed", limit=None)
    for experiment in failed:
        typer.echo(f"Experiment {experiment['id']} failed: {experiment['error']}", err=True)
    if failed:
        raise typer.Exit(1)


@study.command("table")
def study_table(
    study_id: str,
    format: Annotated[Literal["markdown", "csv", "json"], typer.Option()] = "markdown",
) -> None:
    """A study's comparison table: a row per variant, mean ± std over seeds."""
    with _api() as api:
        if format == "json":
            typer.echo(json.dumps(api.study_table(study_id), indent=2))
        else:
            typer.echo(api.study_table(study_id, format), nl=False)


@app.command()
def compare(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Experiment ids.")],
    format: Annotated[Literal["markdown", "csv"], typer.Option()] = "markdown",
    plot: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Also save their test curves (.png, or .svg)."),
    ] = None,
) -> None:
    """A row per experiment: last and best epochs' metrics, epochs run, speed."""
    with _api() as api:
        typer.echo(api.compare(ids, format), nl=False)
        if plot is not None:
            plot.write_bytes(api.compare_plot(ids, "svg" if plot.suffix == ".svg" else "png"))


@app.command()
def evaluation(experiment_id: str) -> None:
    """An ended run's test set by class: images, right, accuracy; then the overall accuracy."""
    with _api() as api:
        result = api.evaluation(experiment_id)
    table = Table("class", "images", "right", "accuracy")
    confusion = result["confusion"]
    for index, (name, row) in enumerate(zip(result["classes"], confusion, strict=True)):
        accuracy = result["per_class_accuracy"][index]
        table.add_row(name, str(sum(row)), str(row[index]), _number(accuracy))
    console.print(table)
    right = sum(row[index] for index, row in enumerate(confusion))
    total = sum(map(sum, confusion))
    typer.echo(f"{right} of {total} right with the {result['weights']} weights")
