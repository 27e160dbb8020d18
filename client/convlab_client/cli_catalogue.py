"""``convlab`` commands on what a server can run: its presets and its datasets."""

from pathlib import Path
from typing import Annotated

import typer

from convlab_client.cli_common import api, print_facts, print_table

commands = typer.Typer()
datasets = typer.Typer(
    help="The datasets a spec may name; upload or delete your own.", no_args_is_help=False
)
commands.add_typer(datasets, name="datasets")


@commands.command()
def presets() -> None:
    """The presets an experiment may start from (the chapter's variants)."""
    with api() as client:
        found = client.presets()
    print_table(("name", "description"), ((item["name"], item["description"]) for item in found))


@datasets.callback(invoke_without_command=True)
def list_datasets(context: typer.Context) -> None:
    """The datasets a spec may name (built in, uploaded, folders), and whether each can be
    used."""
    if context.invoked_subcommand is not None:
        return
    with api() as client:
        found = client.datasets()
    print_table(
        ("name", "available", "classes", "shape", "train", "test", "kind", "description"),
        (
            (
                item["name"],
                "yes" if item["available"] else "no",
                str(item["classes"]),
                "x".join(map(str, item["shape"])),
                str(item["train_size"]),
                str(item["test_size"]),
                item.get("kind", "built-in"),
                item.get("problem") or item["description"],
            )
            for item in found
        ),
    )


@datasets.command()
def upload(
    name: Annotated[str, typer.Argument(help="The name specs will use (lowercase, - and _).")],
    file: Annotated[
        Path,
        typer.Argument(
            help="An .npz: numpy.savez(FILE, x_train=..., y_train=..., x_test=..., y_test=...)",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
) -> None:
    """Upload an .npz of uint8 images and integer labels as a dataset specs may name."""
    with api() as client:
        item = client.upload_dataset(name, file)
    print_facts(
        (
            ("dataset", item["name"]),
            ("shape", "x".join(map(str, item["shape"]))),
            ("classes", ", ".join(item["class_names"] or map(str, range(item["classes"])))),
            ("train", str(item["train_size"])),
            ("test", str(item["test_size"])),
        )
    )


@datasets.command()
def delete(
    name: Annotated[str, typer.Argument(help="An uploaded dataset's name.")],
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Delete it although ended runs used it (their models stay usable)."
        ),
    ] = False,
) -> None:
    """Delete an uploaded dataset (yours, or any as an admin; not while experiments use it)."""
    with api() as client:
        client.delete_dataset(name, force=force)
    typer.echo(f"Deleted dataset {name}.")
