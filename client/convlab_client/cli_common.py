"""What the ``convlab`` commands share: the console, errors as one sentence, numbers, tables,
progress bars and image files."""

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal, NoReturn

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from convlab_client.cli_spec import explain
from convlab_client.client import ApiError, Client, ImageFormat, Json, Weights

console = Console(markup=False, highlight=False)
"""Tables and progress on stdout; names and errors are shown as given, never as markup."""
if not console.is_terminal:
    console.width = max(console.width, 160)  # piped or captured: whole ids, unsquashed tables
METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")

Name = Annotated[str | None, typer.Option("--name", help="A label for people.")]
PriorityOption = Annotated[
    Literal["low", "normal", "high"] | None,
    typer.Option(help="Which queued runs start first (default normal; high: admins only)."),
]
WeightsOption = Annotated[
    Weights | None,
    typer.Option(
        "--weights", help="best: the best monitored epoch's; last: the newest checkpoint's."
    ),
]


def fail(message: str, code: int = 1) -> NoReturn:
    """End the command with ``message`` on stderr."""
    typer.echo(message, err=True)
    raise typer.Exit(code)


@contextmanager
def api(sets: list[str] | None = None) -> Iterator[Client]:
    """A client on CONVLAB_URL (or CONVLAB_PORT) and CONVLAB_TOKEN whose errors end the
    command with their sentence (and a hint for a refused --set value)."""
    try:
        with Client() as client:
            yield client
    except ApiError as exc:
        fail(explain(exc, sets))


@contextmanager
def following(what: str, again: str = "") -> Iterator[None]:
    """Ctrl-C stops following, not the work; ``again``: the command that follows it again."""
    try:
        yield
    except KeyboardInterrupt:
        hint = f"; `{again}` follows it again" if again else ""
        fail(f"Stopped following; {what} keeps running on the server{hint}.", 130)


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


NO_WORKER = "no worker is running: start one with make up"
"""What a queued run waits for when the server has heard from no worker."""


def place_in_line(experiment: Json) -> str:
    """A queued run's place and expected start ("#2, ~4m"), that no worker is running to
    start it, or what it waits for when no worker up may take it; else nothing."""
    position, eta = experiment.get("queue_position"), experiment.get("eta_seconds")
    if position is None:
        waiting_for = experiment.get("waiting_for")
        return f"waiting for {waiting_for}" if waiting_for else ""
    if experiment.get("workers_up") == 0:
        return f"#{position}, {NO_WORKER}"
    if eta is None:
        return f"#{position}"
    minutes, seconds = divmod(round(eta), 60)
    return f"#{position}, ~{minutes}m" if minutes else f"#{position}, ~{seconds}s"


def metrics(epoch: Json) -> str:
    """The metrics the epoch (or best epoch) has, in the chapter's order."""
    return "  ".join(f"{name} {number(epoch[name])}" for name in METRICS if name in epoch)


def progress_bar() -> Progress:
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


def print_facts(facts: Iterable[tuple[str, str]]) -> None:
    """Labelled values, a line each, the values aligned."""
    grid = Table.grid(padding=(0, 2))
    for label, value in facts:
        grid.add_row(label, value)
    console.print(grid)


def print_table(columns: Iterable[str], rows: Iterable[Iterable[str]]) -> None:
    """A table whose first column (ids, names) never wraps."""
    table = Table(*columns)
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(*row)
    console.print(table)


def image_format(path: Path) -> ImageFormat:
    """The image format a file name asks for: .png or .svg; a usage error otherwise."""
    if path.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter(f"{path} must end in .png or .svg.")
    return "svg" if path.suffix.lower() == ".svg" else "png"


def save(path: Path, data: bytes) -> None:
    """Write a downloaded file and print where it went."""
    path.write_bytes(data)
    typer.echo(path)
