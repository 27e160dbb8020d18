"""The chapter's comparison table: one row per variant, Train/Test x Accuracy/Loss from the last
epoch, as mean and standard deviation over seeds, plus best epoch, epochs run and speed; each
row but the baseline's also says how far it lies from the baseline, and whether beyond noise."""

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence

from pydantic import BaseModel, Field

from models.study_state import by_variant
from store.db import Session
from store.studies import seconds_per_epoch
from store.tables import Experiment
from views.significance import Difference, difference


class Stat(BaseModel):
    """Mean and sample standard deviation (None for fewer than two runs) over seeds."""

    mean: float | None
    std: float | None

    @classmethod
    def of(cls, values: Sequence[float | None]) -> "Stat":
        present = [value for value in values if value is not None]
        return cls(
            mean=statistics.fmean(present) if present else None,
            std=statistics.stdev(present) if len(present) > 1 else None,
        )

    def text(self, digits: int = 3) -> str:
        if self.mean is None:
            return "-"
        mean = f"{self.mean:.{digits}f}"
        return mean if self.std is None else f"{mean} ± {self.std:.{digits}f}"


class TableRow(BaseModel):
    variant: str
    runs: int
    """Experiments of this variant that finished at least one epoch."""
    train_accuracy: Stat
    test_accuracy: Stat
    train_loss: Stat
    test_loss: Stat
    best_epoch: Stat
    best_val_accuracy: Stat
    epochs_run: Stat
    seconds_per_epoch: Stat
    difference: dict[str, Difference] | None = Field(
        None,
        description="Per column (train_accuracy, ...): this row's mean minus the baseline's over "
        "seeds (Welch), with its 95% interval, p-value and the seeds per variant that would "
        "detect it at 80% power; null on the baseline's row.",
    )


COLUMNS: list[tuple[str, str, Callable[[TableRow], Stat]]] = [
    ("train_accuracy", "Train accuracy", lambda row: row.train_accuracy),
    ("test_accuracy", "Test accuracy", lambda row: row.test_accuracy),
    ("train_loss", "Train loss", lambda row: row.train_loss),
    ("test_loss", "Test loss", lambda row: row.test_loss),
    ("best_epoch", "Best epoch", lambda row: row.best_epoch),
    ("best_val_accuracy", "Best val_accuracy", lambda row: row.best_val_accuracy),
    ("epochs_run", "Epochs run", lambda row: row.epochs_run),
    ("seconds_per_epoch", "Seconds/epoch", lambda row: row.seconds_per_epoch),
]


def table(
    groups: list[tuple[str, list[Experiment]]],
    seconds_per_epoch: dict[str, float],
    baseline: int = 0,
) -> list[TableRow]:
    """A row per (label, experiments) group, in the order given; each but the ``baseline``'th
    compared with it."""
    columns = [_columns(experiments, seconds_per_epoch) for _, experiments in groups]
    rows = []
    for index, ((label, _), values) in enumerate(zip(groups, columns, strict=True)):
        against = None
        if index != baseline and baseline < len(columns):
            base = columns[baseline]
            against = {key: difference(values[key], base[key]) for key, _, _ in COLUMNS}
        stats = {key: Stat.of(values[key]) for key, _, _ in COLUMNS}
        runs = len(values["runs"])
        rows.append(TableRow(variant=label, runs=runs, difference=against, **stats))
    return rows


def _columns(experiments: list[Experiment], seconds: dict[str, float]) -> dict[str, list[float]]:
    """Each column's values over the group's runs that finished an epoch (``runs``: their
    count as ones), those without the value left out."""
    done = [experiment for experiment in experiments if experiment.final]
    finals = [experiment.final or {} for experiment in done]
    bests = [experiment.best or {} for experiment in done]
    found: dict[str, list[float | None]] = {
        "runs": [1.0 for _ in done],
        "train_accuracy": [final.get("accuracy") for final in finals],
        "test_accuracy": [final.get("val_accuracy") for final in finals],
        "train_loss": [final.get("loss") for final in finals],
        "test_loss": [final.get("val_loss") for final in finals],
        "best_epoch": [best.get("epoch") for best in bests],
        "best_val_accuracy": [best.get("val_accuracy") for best in bests],
        "epochs_run": [float(experiment.epochs_done) for experiment in done],
        "seconds_per_epoch": [seconds.get(experiment.id) for experiment in done],
    }
    return {key: [value for value in values if value is not None] for key, values in found.items()}


def comparison(
    session: Session, groups: list[tuple[str, list[Experiment]]], baseline: int = 0
) -> list[TableRow]:
    """The comparison table for experiments grouped into labelled rows."""
    ids = [experiment.id for _, members in groups for experiment in members]
    return table(groups, seconds_per_epoch(session, ids), baseline)


def study_table(
    session: Session, experiments: list[Experiment], baseline: int = 0
) -> list[TableRow]:
    """One row per variant, in the order the study created them."""
    return comparison(session, by_variant(experiments), baseline)


def baseline_of(groups: list[tuple[str, list[Experiment]]], key: str | None) -> int | None:
    """Which group ``key`` names (None: the first): its label, else the group of a run it
    names by id, name or an id prefix that one group's runs alone begin with; None for none."""
    if key is None:
        return 0
    tests: list[Callable[[str, Experiment], bool]] = [
        lambda label, _: label == key,
        lambda _, run: key in (run.id, run.name),
        lambda _, run: run.id.startswith(key),
    ]
    for test in tests:
        found = {
            index for index, (label, runs) in enumerate(groups) for r in runs if test(label, r)
        }
        if len(found) == 1:
            return found.pop()
    return None


def by_spec(experiments: list[Experiment]) -> list[tuple[str, list[Experiment]]]:
    """Runs grouped by their resolved spec less its seed, in the order first seen; each group
    is labelled by its first run's name (unnamed: its preset and short id, as the dashboard
    shows it), with its count of runs when over one."""
    groups: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        unseeded = {key: value for key, value in experiment.spec.items() if key != "seed"}
        groups.setdefault(json.dumps(unseeded, sort_keys=True), []).append(experiment)
    return [(_group_label(members), members) for members in groups.values()]


def markdown(rows: list[TableRow], baseline: str) -> str:
    """The table as the chapter prints it (mean ± standard deviation), each row's test
    accuracy beside it as a difference to ``baseline``'s with its interval."""
    header = ["Variant", "Runs", *(title for _, title, _ in COLUMNS), *_against(baseline)]
    body = [[row.variant, str(row.runs), *_texts(row), *_versus(row)] for row in rows]
    return _markdown(header, body)


def runs_markdown(runs: list[tuple[Experiment, TableRow]], baseline: str) -> str:
    """One line per run, named by id, name and status, then each column's value, then its
    group's test accuracy as a difference to ``baseline``'s."""
    header = ["Id", "Name", "Status", *(title for _, title, _ in COLUMNS), *_against(baseline)]
    body = [[run.id, run.name or "", run.status, *_texts(row), *_versus(row)] for run, row in runs]
    return _markdown(header, body)


def as_csv(rows: list[TableRow]) -> str:
    """One line per variant; each statistic as a _mean and a _std column, then whether it is
    the baseline and each statistic's difference to it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    means = [f"{key}_{part}" for key, _, _ in COLUMNS for part in ("mean", "std")]
    writer.writerow(["variant", "runs", *means, *DIFFERENCE_HEADER])
    for row in rows:
        values: list[object] = [row.variant, row.runs]
        for _, _, stat in COLUMNS:
            values += [_blank(stat(row).mean), _blank(stat(row).std)]
        writer.writerow([*values, *_difference_cells(row)])
    return buffer.getvalue()


def runs_csv(runs: list[tuple[Experiment, TableRow]]) -> str:
    """One line per run: its id, name and status, then each column's value, then whether its
    group is the baseline and each statistic's difference to it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "status", *(key for key, _, _ in COLUMNS), *DIFFERENCE_HEADER])
    for run, row in runs:
        values = [_blank(stat(row).mean) for _, _, stat in COLUMNS]
        writer.writerow([run.id, run.name or "", run.status, *values, *_difference_cells(row)])
    return buffer.getvalue()


MARKDOWN_METRIC = "test_accuracy"
"""The column whose difference the markdown tables show: the chapter's figure of merit."""
DIFFERENCE_PARTS = ("diff", "diff_low", "diff_high", "p_value", "seeds_needed", "beyond_noise")
DIFFERENCE_HEADER = [
    "baseline",
    *(f"{key}_{part}" for key, _, _ in COLUMNS for part in DIFFERENCE_PARTS),
]


def _against(baseline: str) -> list[str]:
    return [f"Test accuracy vs {baseline} (95% CI)", "p", "Seeds for 80% power"]


def _versus(row: TableRow) -> list[str]:
    """The markdown cells of a row's test accuracy difference (the baseline's say so)."""
    if row.difference is None:
        return ["baseline", "", ""]
    found = row.difference[MARKDOWN_METRIC]
    p = "-" if found.p_value is None else f"{found.p_value:.2g}"
    return [found.text(), p, "-" if found.seeds_needed is None else str(found.seeds_needed)]


def _difference_cells(row: TableRow) -> list[object]:
    if row.difference is None:
        return [True, *("" for _ in COLUMNS for _ in DIFFERENCE_PARTS)]
    cells: list[object] = [False]
    for key, _, _ in COLUMNS:
        found = row.difference[key]
        parts = (
            found.mean,
            found.low,
            found.high,
            found.p_value,
            found.seeds_needed,
            found.beyond_noise,
        )
        cells += [_blank(part) for part in parts]
    return cells


SHORT_ID = 8
"""The characters of an id the dashboard shows, enough to name a run (prefixes of 6 work)."""


def _group_label(members: list[Experiment]) -> str:
    first = members[0]
    label = first.name or f"{first.preset} {first.id[:SHORT_ID]}"
    return label if len(members) == 1 else f"{label} ({len(members)} runs)"


def _texts(row: TableRow) -> list[str]:
    return [
        stat(row).text(1 if key in {"best_epoch", "epochs_run"} else 3) for key, _, stat in COLUMNS
    ]


def _markdown(header: list[str], body: list[list[str]]) -> str:
    lines = [_markdown_line(header), "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *(_markdown_line(cells) for cells in body)]) + "\n"


def _markdown_line(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def _blank(value: float | bool | None) -> object:
    return "" if value is None else value
