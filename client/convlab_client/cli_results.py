"""``convlab`` commands on what experiments produced: comparisons, curves, evaluations, trained
models and their predictions."""

from pathlib import Path
from typing import Annotated, Literal

import typer

from convlab_client.cli_common import WeightsOption, api, image_format, number, print_table, save
from convlab_client.client import ImageFormat

commands = typer.Typer()


@commands.command()
def compare(
    ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Experiment ids.")],
    format: Annotated[Literal["markdown", "csv"], typer.Option()] = "markdown",
    plot: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="Also save their test curves (.png, or .svg)."),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="The runs the others are measured against: an id (its spec's seeds)."),
    ] = None,
) -> None:
    """A row per experiment: last and best epochs' metrics, epochs run, speed, then its spec's
    test accuracy (pooled over seeds) against the baseline's, with a 95% interval."""
    fmt: ImageFormat = image_format(plot) if plot is not None else "png"
    with api() as client:
        typer.echo(client.compare(ids, format, baseline=baseline), nl=False)
        if plot is not None:
            plot.write_bytes(client.compare_plot(ids, fmt))


@commands.command()
def plot(
    experiment_id: str,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE", help=".png or .svg.")
    ] = None,
) -> None:
    """Save an experiment's accuracy and loss curves per epoch; print the file's name.

    The file is FILE (.png or .svg), else convlab-ID.png."""
    path = output or Path(f"convlab-{experiment_id}.png")
    fmt = image_format(path)
    with api() as client:
        save(path, client.plot(experiment_id, fmt))


@commands.command()
def model(
    experiment_id: str,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Default: the server's file name."),
    ] = None,
    weights: WeightsOption = None,
) -> None:
    """Download an ended experiment's .keras model; print the file's name.

    The file is FILE, else the server's name for it (convlab-ID-epochN.keras); it loads with
    keras.models.load_model."""
    with api() as client:
        name, data = client.model(experiment_id, weights)
    save(output or Path(name), data)


@commands.command()
def predict(
    experiment_id: str,
    image: Annotated[
        Path,
        typer.Argument(exists=True, dir_okay=False, help="A PNG or JPEG like the dataset's."),
    ],
    weights: WeightsOption = None,
    top: Annotated[int, typer.Option(min=1, help="Show this many classes.")] = 3,
) -> None:
    """The most probable classes of a picture by an ended experiment's model."""
    with api() as client:
        result = client.predict(experiment_id, image.read_bytes(), weights)
    rows = ((item["label"], number(item["probability"])) for item in result["probabilities"][:top])
    print_table(("class", "probability"), rows)
    typer.echo(f"{result['top']}, by the weights of epoch {result['epoch']}")


@commands.command()
def evaluation(experiment_id: str) -> None:
    """An ended run's test set by class: images, right, accuracy; then the overall accuracy."""
    with api() as client:
        result = client.evaluation(experiment_id)
    confusion = result["confusion"]
    print_table(
        ("class", "images", "right", "accuracy"),
        (
            (name, str(sum(row)), str(row[index]), number(result["per_class_accuracy"][index]))
            for index, (name, row) in enumerate(zip(result["classes"], confusion, strict=True))
        ),
    )
    right = sum(row[index] for index, row in enumerate(confusion))
    total = sum(map(sum, confusion))
    typer.echo(f"{right} of {total} right with the {result['weights']} weights")
