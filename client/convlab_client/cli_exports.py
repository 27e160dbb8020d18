"""``convlab export`` commands: runs in the formats of the ecosystem's own viewers."""

import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import Annotated

import typer

from convlab_client.cli_common import api, fail

commands = typer.Typer(help="Export runs for other tools' viewers.", no_args_is_help=True)


@commands.command()
def tensorboard(
    study_id: Annotated[str, typer.Argument(metavar="STUDY_ID", help="A study's id.")],
    directory: Annotated[
        Path, typer.Argument(metavar="DIR", help="Where to put its log folder (made if missing).")
    ],
    experiment: Annotated[
        bool,
        typer.Option("--experiment", help="STUDY_ID is an experiment's id: export that run."),
    ] = False,
) -> None:
    """Download a study's runs as a TensorBoard log folder into DIR; print the folder.

    Each experiment is a run with its epochs' scalars and its spec in the HParams tab; view
    them with `tensorboard --logdir DIR` (several exports side by side in one DIR compare)."""
    with api() as client:
        data = client.tensorboard(study_id, experiment=experiment)
    folder = extract(data, directory)
    typer.echo(directory / folder)


def extract(data: bytes, directory: Path) -> str:
    """Unpack an export's archive into ``directory``; the name of the folder it holds. Refuses
    an archive with anything but plain files and folders under one folder."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        members = archive.getmembers()
        tops = {PurePosixPath(member.name).parts[0] for member in members}
        for member in members:
            path = PurePosixPath(member.name)
            if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                fail(f"The server's archive holds {member.name!r}, which is not extracted.")
        if len(tops) != 1:
            fail("The server's archive does not hold one folder; nothing was extracted.")
        directory.mkdir(parents=True, exist_ok=True)
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            archive.extractall(directory, members=members, filter="data")
        else:  # checked above, member by member
            archive.extractall(directory, members=members)
    return tops.pop()
