"""The chapter's comparison table: one row per variant, Train/Test x Accuracy/Loss from the last
epoch, as mean and standard deviation over seeds, plus best epoch, epochs run and speed."""

import csv
import io
import json
import statistics
from collections.abc import Callable, Sequence

from pydantic import BaseModel

from models.study_state import by_variant
from store.db import Session
from store.studies import seconds_per_epoch
from store.tables import Experiment


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
    groups: list[tuple[str, list[Experiment]]], seconds_per_epoch: dict[str, float]
) -> list[TableRow]:
    """A row per (label, experiments) group, in the order given."""
    rows = []
    for label, experiments in groups:
        done = [experiment for experiment in experiments if experiment.final]
        finals = [experiment.final or {} for experiment in done]
        bests = [experiment.best or {} for experiment in done]
        rows.append(
            TableRow(
                variant=label,
                runs=len(done),
                train_accuracy=Stat.of([final.get("accuracy") for final in finals]),
                test_accuracy=Stat.of([final.get("val_accuracy") for final in finals]),
                train_loss=Stat.of([final.get("loss") for final in finals]),
                test_loss=Stat.of([final.get("val_loss") for final in finals]),
                best_epoch=Stat.of([best.get("epoch") for best in bests]),
                best_val_accuracy=Stat.of([best.get("val_accuracy") for best in bests]),
                epochs_run=Stat.of([experiment.epochs_done for experiment in done]),
                seconds_per_epoch=Stat.of([seconds_per_epoch.get(e.id) for e in done]),
            )
        )
    return rows


def comparison(session: Session, groups: list[tuple[str, list[Experiment]]]) -> list[TableRow]:
    """The comparison table for experiments grouped into labelled rows."""
    ids = [experiment.id for _, members in groups for experiment in members]
    return table(groups, seconds_per_epoch(session, ids))


def study_table(session: Session, experiments: list[Experiment]) -> list[TableRow]:
    """One row per variant, in the order the study created them."""
    return comparison(session, by_variant(experiments))


def by_spec(experiments: list[Experiment]) -> list[tuple[str, list[Experiment]]]:
    """Runs grouped by their resolved spec less its seed, in the order first seen; each group
    is labelled by its first run's name (unnamed: its preset and short id, as the dashboard
    shows it), with its count of runs when over one."""
    groups: dict[str, list[Experiment]] = {}
    for experiment in experiments:
        unseeded = {key: value for key, value in experiment.spec.items() if key != "seed"}
        groups.setdefault(json.dumps(unseeded, sort_keys=True), []).append(experiment)
    return [(_group_label(members), members) for members in groups.values()]


def markdown(rows: list[TableRow]) -> str:
    """The table as the chapter prints it (mean ± standard deviation)."""
    header = ["Variant", "Runs", *(title for _, title, _ in COLUMNS)]
    return _markdown(header, [[row.variant, str(row.runs), *_texts(row)] for row in rows])


def runs_markdown(runs: list[tuple[Experiment, TableRow]]) -> str:
    """One line per run, named by id, name and status, then each column's value."""
    header = ["Id", "Name", "Status", *(title for _, title, _ in COLUMNS)]
    body = [[run.id, run.name or "", run.status, *_texts(row)] for run, row in runs]
    return _markdown(header, body)


def as_csv(rows: list[TableRow]) -> str:
    """One line per variant; each statistic as a _mean and a _std column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["variant", "runs", *(f"{key}_{part}" for key, _, _ in COLUMNS for part in ("mean", "std"))]
    )
    for row in rows:
        values: list[object] = [row.variant, row.runs]
        for _, _, stat in COLUMNS:
            values += [_blank(stat(row).mean), _blank(stat(row).std)]
        writer.writerow(values)
    return buffer.getvalue()


def runs_csv(runs: list[tuple[Experiment, TableRow]]) -> str:
    """One line per run: its id, name and status, then each column's value."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["id", "name", "status", *(key for key, _, _ in COLUMNS)])
    for run, row in runs:
        values = [_blank(stat(row).mean) for _, _, stat in COLUMNS]
        writer.writerow([run.id, run.name or "", run.status, *values])
    return buffer.getvalue()


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


def _blank(value: float | None) -> object:
    return "" if value is None else value
