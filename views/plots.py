"""Results as pictures, drawn headless with matplotlib's Agg and SVG backends: the chapter's
two panels for one experiment (accuracy and val_accuracy; loss and val_loss per epoch), groups
of runs' validation curves overlaid (a study's variants, compared runs), and a confusion
matrix. matplotlib is imported on the first picture, so the API starts without it."""

import io
import math
import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from models.epochs import EpochMetrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[ImageFormat, str] = {"png": "image/png", "svg": "image/svg+xml"}

PANELS = (("accuracy", "Accuracy"), ("loss", "Loss"))
"""Each panel's metric (train; ``val_`` + metric is the test curve) and its title."""
TAB10 = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
"""matplotlib's default qualitative palette."""
LINE_STYLES = ("-", "--", ":")
LEGEND_COLUMNS = 4
"""An overlay's legend, below its panels, lays its labels out in up to this many columns."""
LEGEND_ROW_INCHES = 0.22
"""The height an overlay grows by for each row of its legend, so its panels keep theirs."""
MAX_WRITTEN_CLASSES = 30
"""A confusion matrix with more classes shows colours only: counts would not fit."""


def experiment_plot(
    title: str, epochs: Sequence[EpochMetrics], fmt: ImageFormat, *, joins: Sequence[int] = ()
) -> bytes:
    """The chapter's two panels for one run: train and test curves per epoch, with a dotted
    line before each epoch in ``joins`` (where a continued run takes over from its parent)."""
    figure, axes = _panels(title)
    numbers = [row.epoch for row in epochs]
    for axis, (metric, _) in zip(axes, PANELS, strict=True):
        if not epochs:
            _say_empty(axis, "No finished epoch")
            continue
        axis.plot(numbers, [getattr(row, metric) for row in epochs], marker=".", label="train")
        validation = [getattr(row, f"val_{metric}") for row in epochs]
        if any(value is not None for value in validation):
            axis.plot(numbers, validation, marker=".", label="test")
        for epoch in joins:
            axis.axvline(
                epoch - 0.5, color="grey", linestyle=":", gid=f"{metric}-continued-at-{epoch}"
            )
        axis.legend()
    return _encode(figure, fmt)


def _say_empty(axis: "Axes", sentence: str) -> None:
    """An axis with a sentence in place of curves (and no meaningless ticks)."""
    axis.text(0.5, 0.5, sentence, ha="center", va="center", transform=axis.transAxes)
    axis.set_xticks([])
    axis.set_yticks([])


def overlay_plot(
    title: str, curves: Sequence[tuple[str, Sequence[Sequence[EpochMetrics]]]], fmt: ImageFormat
) -> bytes:
    """Each labelled group's val_accuracy and val_loss per epoch: the mean over its runs, with
    a band of one standard deviation where two or more runs reached the epoch."""
    figure, axes = _panels(title)
    styles = series_styles(len(curves))
    for (label, runs), (colour, style) in zip(curves, styles, strict=True):
        for axis, (metric, _) in zip(axes, PANELS, strict=True):
            numbers, means, stds = _mean_curve(runs, f"val_{metric}")
            axis.plot(
                numbers, means, color=colour, linestyle=style, marker=".", label=_literal(label)
            )
            if any(stds):
                low = [mean - std for mean, std in zip(means, stds, strict=True)]
                high = [mean + std for mean, std in zip(means, stds, strict=True)]
                axis.fill_between(numbers, low, high, color=colour, alpha=0.15, linewidth=0)
    for axis in axes:
        axis.set_title(f"Test {axis.get_title().lower()}")
    if curves:  # one legend for both panels, below them: it covers no curve and no title
        rows = math.ceil(len(curves) / LEGEND_COLUMNS)
        figure.set_figheight(figure.get_figheight() + LEGEND_ROW_INCHES * rows)
        figure.legend(
            handles=axes[0].get_lines(),  # names with a leading _ too
            loc="outside lower center",
            fontsize="small",
            ncols=min(len(curves), LEGEND_COLUMNS),
        )
    return _encode(figure, fmt)


def series_styles(count: int) -> list[tuple[str, str]]:
    """A (colour, line style) per series, all distinct for up to 30 series: tab10's colours
    solid, then dashed, then dotted."""
    return [(TAB10[index % 10], LINE_STYLES[index // 10 % 3]) for index in range(count)]


def confusion_plot(
    title: str, classes: Sequence[str], confusion: Sequence[Sequence[int]], fmt: ImageFormat
) -> bytes:
    """The confusion matrix: true class down, predicted across, each cell coloured by its share
    of the true class's images and labelled with its count (up to 30 classes)."""
    from matplotlib.figure import Figure

    count = len(classes)
    side = min(3.0 + 0.5 * count, 30.0)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    figure.suptitle(_literal(title))
    axis = figure.subplots()
    shares = [[cell / (sum(row) or 1) for cell in row] for row in confusion]
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axis, label="share of the true class", shrink=0.8)
    names = [_literal(name) for name in classes]
    tilted = count > 10
    axis.set_xticks(
        range(count), names, rotation=45 if tilted else 0, ha="right" if tilted else "center"
    )
    axis.set_yticks(range(count), names)
    axis.set_xlabel("predicted class")
    axis.set_ylabel("true class")
    if count <= MAX_WRITTEN_CLASSES:
        for row, counts in enumerate(confusion):
            for column, cell in enumerate(counts):
                colour = "white" if shares[row][column] > 0.5 else "black"
                axis.text(column, row, str(cell), ha="center", va="center", color=colour)
    return _encode(figure, fmt)


def _literal(text: str) -> str:
    """``text`` as matplotlib draws it letter for letter: a user's ``$x^2$`` or ``$\\foo$`` is
    a name, not mathtext (which would typeset it, or fail on an unknown command)."""
    return text.replace("$", r"\$")


def _panels(title: str) -> tuple["Figure", list["Axes"]]:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(11, 4.2), layout="constrained")
    figure.suptitle(_literal(title))
    axes = list(figure.subplots(1, 2))
    for axis, (_, name) in zip(axes, PANELS, strict=True):
        axis.set_title(name)
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    return figure, axes


def _mean_curve(
    runs: Sequence[Sequence[EpochMetrics]], metric: str
) -> tuple[list[int], list[float], list[float]]:
    """Per epoch, the mean of ``metric`` over the runs that reached that epoch, and their
    sample standard deviation (0 for a single run)."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run:
            value = getattr(row, metric)
            if value is not None:
                by_epoch.setdefault(row.epoch, []).append(value)
    numbers = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[n]) for n in numbers]
    stds = [statistics.stdev(by_epoch[n]) if len(by_epoch[n]) > 1 else 0.0 for n in numbers]
    return numbers, means, stds


def _encode(figure: "Figure", fmt: ImageFormat) -> bytes:
    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, smaller
        figure.savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()
