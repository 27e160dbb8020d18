"""``convlab`` commands on what a server can run: its presets and its datasets."""

import typer

from convlab_client.cli_common import api, print_table

commands = typer.Typer()


@commands.command()
def presets() -> None:
    """The presets an experiment may start from (the chapter's variants)."""
    with api() as client:
        found = client.presets()
    print_table(("name", "description"), ((item["name"], item["description"]) for item in found))


@commands.command()
def datasets() -> None:
    """The datasets a spec may name, and whether their files are on the server."""
    with api() as client:
        found = client.datasets()
    print_table(
        ("name", "available", "classes", "shape", "train", "test", "description"),
        (
            (
                item["name"],
                "yes" if item["available"] else "no",
                str(item["classes"]),
                "x".join(map(str, item["shape"])),
                str(item["train_size"]),
                str(item["test_size"]),
                item["description"],
            )
            for item in found
        ),
    )
