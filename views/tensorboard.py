"""TensorBoard log directories made from rows, packed as a ``.tar.gz``: a run directory per
experiment with every epoch's metrics as scalars, and each run's spec as hyperparameters in the
HParams plugin's format (a session per run, the experiment's columns at the root).

Written with the ``tensorboard`` package's own record writer and protobufs, which never load
TensorFlow; they are imported when an archive is made (a quarter of a second), not with the API.
"""

import io
import json
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from models.epochs import EpochMetrics
from models.status import Status
from store.db import Session
from store.experiments import history
from store.tables import Experiment

if TYPE_CHECKING:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")
"""The epoch's metrics written as scalars, by their names in the history (a run's learning rate
where its epochs record one)."""
MEDIA_TYPE = "application/gzip"
Value = bool | float | str


@dataclass(frozen=True)
class Run:
    """One experiment as a TensorBoard run."""

    name: str
    """Its directory in the log directory."""
    experiment_id: str
    status: Status
    started: float
    """Seconds since the epoch: the session's start; each epoch's wall time adds its seconds."""
    hparams: dict[str, Any]
    """``variant`` and the spec's fields as ``section.field``, as stored."""
    epochs: list[EpochMetrics]


def runs(session: Session, experiments: Iterable[Experiment]) -> list[Run]:
    """The experiments with their histories, each in a directory of its own name."""
    found, taken = [], set()
    for experiment in experiments:
        label = experiment.variant or experiment.name or experiment.preset
        name = f"{_slug(label)}-seed{experiment.spec.get('seed', 0)}-{experiment.id[:8]}"
        name = experiment.id if name in taken else name
        taken.add(name)
        found.append(
            Run(
                name=name,
                experiment_id=experiment.id,
                status=experiment.status,
                started=(experiment.started_at or experiment.created_at).timestamp(),
                hparams={"variant": label, **flat_spec(experiment.spec)},
                epochs=history(session, experiment.id),
            )
        )
    return found


def flat_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec's fields as ``section.field`` (``preset`` and ``seed`` as they are)."""
    flat: dict[str, Any] = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{field}": inner for field, inner in value.items()})
        else:
            flat[key] = value
    return flat


def archive(runs: list[Run], folder: str, created: datetime) -> bytes:
    """A ``.tar.gz`` of ``folder/``: an event file per run directory, and one at the root with
    the HParams experiment (its columns: the hyperparameters that differ between the runs, all
    of them for a single run)."""
    from tensorboard.compat.proto.event_pb2 import Event

    values = _typed(runs)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for run in runs:
            events = [_session_start(run, values[run.experiment_id])]
            events += _epoch_events(run)
            if (end := _session_end(run)) is not None:
                events.append(end)
            _add_event_file(tar, f"{folder}/{run.name}", run.started, events)
        columns = _columns(runs, values)
        config = _experiment(columns, values, _metrics(runs), created.timestamp())
        root = Event(wall_time=created.timestamp(), step=0, summary=config)
        _add_event_file(tar, folder, created.timestamp(), [root])
    return buffer.getvalue()


def _typed(runs: list[Run]) -> dict[str, dict[str, Value]]:
    """Each run's hyperparameters as the HParams plugin holds them, one type per name across
    the runs: bool, number (a run without the field, such as sgd's ``optimizer.beta_1``, or
    with null leaves its cell empty), else text (JSON for lists, objects and null)."""
    names = sorted({name for run in runs for name in run.hparams})
    typed: dict[str, dict[str, Value]] = {run.experiment_id: {} for run in runs}
    for name in names:
        given = [(run.experiment_id, run.hparams.get(name)) for run in runs]
        present = [value for _, value in given if value is not None]
        if present and all(isinstance(value, bool) for value in present):
            kind: Any = bool
        elif present and all(_is_number(value) for value in present):
            kind = float
        else:
            kind = _text
        for key, value in given:
            if value is not None or kind is _text:
                typed[key][name] = kind(value)
    return typed


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _columns(runs: list[Run], values: dict[str, dict[str, Value]]) -> list[str]:
    names = sorted({name for typed in values.values() for name in typed})
    if len(runs) < 2:
        return names
    differ = [name for name in names if len({repr(v.get(name)) for v in values.values()}) > 1]
    return ["variant", *(name for name in differ if name != "variant")]


def _metrics(runs: list[Run]) -> list[str]:
    """The scalars some run has a value of."""
    return [
        tag
        for tag in SCALARS
        if any(getattr(epoch, tag, None) is not None for run in runs for epoch in run.epochs)
    ]


def _session_start(run: Run, values: dict[str, Value]) -> "Event":
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.plugins.hparams import summary_v2

    summary = summary_v2.hparams_pb(values, trial_id=run.experiment_id, start_time_secs=run.started)
    return Event(wall_time=run.started, step=0, summary=summary)


def _session_end(run: Run) -> "Event | None":
    """How the run ended, for the HParams table's status column (None while it may go on)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    status = {
        Status.succeeded: api_pb2.STATUS_SUCCESS,
        Status.failed: api_pb2.STATUS_FAILURE,
        Status.cancelled: api_pb2.STATUS_UNKNOWN,  # the plugin has no word for cancelled
    }.get(run.status)
    if status is None:
        return None
    ended = run.started + sum(epoch.seconds for epoch in run.epochs)
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(status=status, end_time_secs=ended)
    )
    value = Summary.Value(
        tag=metadata.SESSION_END_INFO_TAG,
        metadata=metadata.create_summary_metadata(data),
        tensor=metadata.NULL_TENSOR,
    )
    return Event(wall_time=ended, step=0, summary=Summary(value=[value]))


def _epoch_events(run: Run) -> list["Event"]:
    """An event per epoch with its scalars at the wall time the epoch ended, as float32 tensors
    as TensorFlow writes them (TensorBoard's data server shows no scalar of another type)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.compat.proto.tensor_pb2 import TensorProto
    from tensorboard.compat.proto.types_pb2 import DT_FLOAT
    from tensorboard.plugins.scalar.metadata import create_summary_metadata

    described = {tag: create_summary_metadata(display_name=tag, description="") for tag in SCALARS}
    events, clock = [], run.started
    for epoch in run.epochs:
        clock += epoch.seconds
        summary = Summary()
        for tag in SCALARS:
            value = getattr(epoch, tag, None)
            if value is None:
                continue
            summary.value.add(
                tag=tag,
                tensor=TensorProto(dtype=DT_FLOAT, float_val=[value]),  # shape []: a scalar
                metadata=described[tag],
            )
        events.append(Event(wall_time=clock, step=epoch.epoch, summary=summary))
    return events


def _experiment(
    columns: list[str], values: dict[str, dict[str, Value]], metrics: list[str], created: float
) -> "Summary":
    """The HParams experiment: a column per hyperparameter with its domain (the values the
    runs took; an interval for numbers with more than ten), a metric per scalar."""
    from tensorboard.plugins.hparams import summary_v2

    hparams = []
    for name in columns:
        taken = sorted({typed[name] for typed in values.values() if name in typed}, key=repr)
        domain: Any
        if len(taken) > 10 and all(_is_number(value) for value in taken):
            domain = summary_v2.RealInterval(min(map(float, taken)), max(map(float, taken)))
        else:
            domain = summary_v2.Discrete(sorted(taken)) if taken else None
        hparams.append(summary_v2.HParam(name, domain))
    return summary_v2.hparams_config_pb(
        hparams=hparams,
        metrics=[summary_v2.Metric(tag, display_name=tag) for tag in metrics],
        time_created_secs=created,
    )


def _add_event_file(tar: tarfile.TarFile, directory: str, when: float, events: list[Any]) -> None:
    """An event file (TFRecords of Event protos, a version record first) in the archive."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    data = io.BytesIO()
    writer = RecordWriter(data)
    for event in [Event(wall_time=when, file_version="brain.Event:2"), *events]:
        writer.write(event.SerializeToString())
    member = tarfile.TarInfo(f"{directory}/events.out.tfevents.{int(when)}.convlab")
    member.size, member.mtime, member.mode = data.tell(), int(when), 0o644
    data.seek(0)
    tar.addfile(member, data)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=]+", "-", label).strip("-")[:60] or "run"
