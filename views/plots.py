"""Learning curves as pictures, drawn headless with matplotlib's Agg and SVG backends: the
chapter's two panels for one experiment (accuracy and val_accuracy; loss and val_loss per
epoch), and every variant's validation curves overlaid for a study. matplotlib is imported
on the first picture, so the API starts without it."""

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal

from store.tables import EpochMetrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ImageFormat = Literal["png", "svg"]
MEDIA_TYPES: dict[ImageFormat, str] = {"png": "image/png", "svg": "image/svg+xml"}

PANELS = (("accuracy", "Accuracy"), ("loss", "Loss"))
"""Each panel's metric (train; ``val_`` + metric is the test curve) and its title."""


def experiment_plot(title: str, epochs: Sequence[EpochMetrics], fmt: ImageFormat) -> bytes:
    """The chapter's two panels for one run: train and test curves per epoch."""
    figure, axes = _panels(title)
    numbers = [row.epoch for row in epochs]
    for axis, (metric, _) in zip(axes, PANELS, strict=True):
        axis.plot(numbers, [getattr(row, metric) for row in epochs], marker=".", label="train")
        validation = [getattr(row, f"val_{metric}") for row in epochs]
        if any(value is not None for value in validation):
            axis.plot(numbers, validation, marker=".", label="test")
        axis.legend()
    return _encode(figure, fmt)


def study_plot(
    title: str, curves: Mapping[str, Sequence[Sequence[EpochMetrics]]], fmt: ImageFormat
) -> bytes:
    """Every variant's val_accuracy and val_loss per epoch, averaged over its seeds."""
    figure, axes = _panels(title)
    for variant, runs in curves.items():
        for axis, (metric, _) in zip(axes, PANELS, strict=True):
            numbers, means = _mean_curve(runs, f"val_{metric}")
            axis.plot(numbers, means, marker=".", label=_literal(variant))
    for axis in axes:
        axis.set_title(f"Test {axis.get_title().lower()}")
        if curves:
            axis.legend(handles=axis.get_lines(), fontsize="small")  # names with a leading _ too
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
) -> tuple[list[int], list[float]]:
    """Per epoch, the mean of ``metric`` over the runs that reached that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for row in run:
            value = getattr(row, metric)
            if value is not None:
                by_epoch.setdefault(row.epoch, []).append(value)
    numbers = sorted(by_epoch)
    return numbers, [sum(by_epoch[n]) / len(by_epoch[n]) for n in numbers]


def _encode(figure: "Figure", fmt: ImageFormat) -> bytes:
    from matplotlib import rc_context

    buffer = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):  # SVG text stays text: searchable, smaller
        figure.savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()
