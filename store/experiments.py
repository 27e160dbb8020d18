"""Reading and changing experiment rows: the queries the API and the worker share."""

import base64
import binascii
import json
import math
import operator
import re
import uuid
from collections.abc import Collection, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import and_, distinct, func, or_
from sqlmodel import Session, col, select

from models.dataset_record import DatasetRecord, current_record
from models.epochs import EpochMetrics
from models.status import ACTIVE, Priority, Status
from store.db import Engine, session_scope
from store.tables import EpochRecord, Experiment, Study


class InvalidCursor(ValueError):
    """A paging cursor this server did not hand out."""


MAX_CURSOR_CHARS = 200
"""Longer than any cursor ``encode_cursor`` makes (about 100 characters)."""
_ROW_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")


class Conflict(Exception):
    """The experiment's status does not allow what was asked."""


def create_experiment(
    session: Session,
    *,
    name: str | None,
    spec: dict[str, Any],
    study_id: str | None = None,
    variant: str | None = None,
    owner: str | None = None,
    parent_id: str | None = None,
    priority: Priority = Priority.normal,
) -> Experiment:
    """Store a new queued experiment for a resolved spec (the caller commits, then dispatches),
    with the record of the dataset it is to train on as that dataset is now."""
    experiment = Experiment(
        id=uuid.uuid4().hex,
        name=name,
        preset=spec["preset"],
        spec=spec,
        study_id=study_id,
        variant=variant,
        owner=owner,
        parent_id=parent_id,
        priority=priority,
        epochs_total=spec["training"]["epochs"],
        dataset=_dataset_record(session, spec["dataset"]["name"]),
    )
    session.add(experiment)
    return experiment


def _dataset_record(session: Session, name: str) -> DatasetRecord | None:
    """``name``'s record as it is now, taken once per session: a study's many experiments
    share it (a folder's digest looks at every picture's size and time)."""
    records = session.info.setdefault("dataset_records", {})
    if name not in records:
        records[name] = current_record(name)
    return records[name]


Sort = Literal[
    "created_at",
    "-created_at",
    "final.loss",
    "-final.loss",
    "final.accuracy",
    "-final.accuracy",
    "final.val_loss",
    "-final.val_loss",
    "final.val_accuracy",
    "-final.val_accuracy",
    "best.loss",
    "-best.loss",
    "best.accuracy",
    "-best.accuracy",
    "best.val_loss",
    "-best.val_loss",
    "best.val_accuracy",
    "-best.val_accuracy",
]
"""A listing's order: a timestamp or a ``final``/``best`` metric, ascending or (``-``)
descending; experiments without the metric come last either way, ties go by id."""
NEWEST: Sort = "-created_at"
SpecValue = bool | float | str | None
"""A spec field's value a listing filters on: None matches a null or absent field."""


def list_experiments(
    session: Session,
    *,
    status: Status | None = None,
    preset: str | None = None,
    study_id: str | None = None,
    owner: str | None = None,
    tags: Collection[str] = (),
    text: str | None = None,
    spec: Sequence[tuple[str, SpecValue]] = (),
    sort: Sort = NEWEST,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[Experiment], str | None]:
    """A page of the experiments that pass every filter given (all of ``tags``; ``text`` in
    the name or notes, any case; each dotted ``spec`` path equal to its value) in ``sort``'s
    order, and the cursor of the next page (None at the end)."""
    query = select(Experiment)
    for column, value in [
        (Experiment.status, status),
        (Experiment.preset, preset),
        (Experiment.study_id, study_id),
        (Experiment.owner, owner),
    ]:
        if value is not None:
            query = query.where(col(column) == value)
    if tags:
        query = query.where(_has_tags(session, tags))
    if text:
        query = query.where(
            or_(
                col(Experiment.name).icontains(text, autoescape=True),
                col(Experiment.notes).icontains(text, autoescape=True),
            )
        )
    for path, wanted in spec:
        query = query.where(_spec_is(path, wanted))
    return sorted_page(session, query, Experiment, sort=sort, limit=limit, cursor=cursor)


def _has_tags(session: Session, tags: Collection[str]) -> Any:
    """True for rows whose tags hold every one of ``tags`` (a JSON list, unnested by the
    database's own table function)."""
    unnest = "json_array_elements_text" if _dialect(session) == "postgresql" else "json_each"
    elements = getattr(func, unnest)(col(Experiment.tags)).table_valued("value")
    wanted = set(tags)
    found = select(func.count(distinct(elements.c.value))).where(elements.c.value.in_(wanted))
    return found.scalar_subquery() == len(wanted)


def _spec_is(path: str, value: SpecValue) -> Any:
    """True for rows whose spec field at the dotted ``path`` equals ``value``, compared as
    the value's type (numbers as numbers)."""
    field = col(Experiment.spec)[tuple(path.split("."))]
    if value is None:
        return field.as_string().is_(None)
    if isinstance(value, bool):
        return field.as_boolean() == value
    if isinstance(value, float | int):
        return field.as_float() == value
    return field.as_string() == value


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def newest_first(
    session: Session, query: Any, table: Any, *, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """A page of ``query`` over ``table`` newest first (see ``sorted_page``)."""
    return sorted_page(session, query, table, sort=NEWEST, limit=limit, cursor=cursor)


def sorted_page(
    session: Session, query: Any, table: Any, *, sort: Sort, limit: int, cursor: str | None
) -> tuple[list[Any], str | None]:
    """A page of ``query`` (rows of ``table``, filtered by its WHERE clause) in ``sort``'s
    order, and the cursor of the next page (None at the end).

    Keyset paging: the cursor holds the last row's sort key (as the database computed it, so
    it compares exactly) and id, and the next page starts strictly after that pair, so no row
    is skipped or repeated, ties included."""
    key, row_id, descending = _sort_key(table, sort), col(table.id), sort.startswith("-")
    statement = select(table, key)
    if query.whereclause is not None:
        statement = statement.where(query.whereclause)
    if cursor is not None:
        statement = statement.where(_after(key, row_id, descending, *decode_cursor(cursor, sort)))
    first, then = (key.desc(), row_id.desc()) if descending else (key.asc(), row_id.asc())
    if not _by_time(sort):
        first = first.nulls_last()
    rows = session.exec(statement.order_by(first, then).limit(limit + 1)).all()
    items = [item for item, _ in rows]
    if len(rows) <= limit:
        return items, None
    last, last_key = rows[limit - 1]
    return items[:limit], encode_cursor(last_key, last.id, sort)


def _by_time(sort: str) -> bool:
    return sort.removeprefix("-") == "created_at"


def _sort_key(table: Any, sort: str) -> Any:
    """The SQL expression ``sort`` orders by: a timestamp column or a metric of a JSON one."""
    if _by_time(sort):
        return col(table.created_at)
    section, metric = sort.removeprefix("-").split(".")
    return col(getattr(table, section))[metric].as_float()


def _after(key: Any, row_id: Any, descending: bool, last_key: Any, last_id: str) -> Any:
    """True for rows that come after (``last_key``, ``last_id``) in the order: by key, then
    id, both one way, rows without a key (a metric) last."""
    beyond = operator.lt if descending else operator.gt
    if last_key is None:
        return and_(key.is_(None), beyond(row_id, last_id))
    after = or_(beyond(key, last_key), and_(key == last_key, beyond(row_id, last_id)))
    return after if isinstance(last_key, datetime) else or_(after, key.is_(None))


METRIC_COLUMNS = tuple(getattr(EpochRecord, field.name) for field in fields(EpochMetrics))


def history(
    session: Session, experiment_id: str, *, since: int = 0, until: int | None = None
) -> list[EpochMetrics]:
    """The experiment's finished epochs after ``since`` (and up to ``until``), in order (read
    as columns, not ORM objects: half the time, and this is the API's busiest read)."""
    query = (
        select(*METRIC_COLUMNS)
        .where(EpochRecord.experiment_id == experiment_id, EpochRecord.epoch > since)
        .order_by(col(EpochRecord.epoch))
    )
    if until is not None:
        query = query.where(EpochRecord.epoch <= until)
    return [EpochMetrics(*row) for row in session.exec(query)]


def epochs_of(
    engine: Engine, experiment_id: str, *, until: int | None = None
) -> list[EpochMetrics]:
    """The experiment's finished epochs (up to ``until``), in order, in a short session."""
    with session_scope(engine) as session:
        return history(session, experiment_id, until=until)


def experiment_with_epochs(
    engine: Engine, experiment_id: str, *, since: int = 0, until: int | None = None
) -> tuple[Experiment, list[EpochMetrics]] | None:
    """The experiment, then its epochs after ``since`` (and up to ``until``), read in that order
    in one short session (a finished state comes with every epoch); None once it is deleted."""
    with session_scope(engine) as session:
        experiment = session.get(Experiment, experiment_id)
        if experiment is None:
            return None
        return experiment, history(session, experiment_id, since=since, until=until)


def ancestry(session: Session, experiment: Experiment) -> list[tuple[str, int | None]]:
    """The runs a continued experiment's curves join, oldest first, each with the last epoch
    it contributes (None: all of them, for ``experiment`` itself). A child resumes at its
    parent's checkpoint (its ``epoch_offset``), so the parent's epochs up to that one are the
    child's past; a rerun (offset 0) or a deleted parent ends the chain."""
    chain: list[tuple[str, int | None]] = [(experiment.id, None)]
    child = experiment
    while child.epoch_offset > 0 and child.parent_id is not None:
        parent = session.get(Experiment, child.parent_id)
        if parent is None:
            break
        chain.append((parent.id, child.epoch_offset))
        child = parent
    return chain[::-1]


def lineage(session: Session, experiment: Experiment) -> list[tuple[str, list[EpochMetrics]]]:
    """Each run of the experiment's ``ancestry`` with the epochs it contributes."""
    return [
        (run, history(session, run, until=until)) for run, until in ancestry(session, experiment)
    ]


def newest_epoch_at(session: Session, *, experiment_ids: list[str]) -> datetime | None:
    """When the newest epoch row of these experiments was recorded (None if they have none)."""
    return session.exec(
        select(func.max(EpochRecord.recorded_at)).where(
            col(EpochRecord.experiment_id).in_(experiment_ids)
        )
    ).one()


OWNER_LOCKS = 7210252
"""The first key of PostgreSQL's advisory locks on users' submissions (the second: a hash of
the user's name); two-key locks never collide with the one-key migration lock."""


def lock_and_count_active(session: Session, *, owner: str) -> int:
    """How many of ``owner``'s experiments are unfinished (queued, running, paused) or about
    to be (the first trials of their searches, not stored yet), counted under a lock on
    ``owner``'s submissions that the session holds until its transaction ends: the count stays
    true until the submit that read it has committed its rows. To be called first in a
    transaction.

    The lock: on PostgreSQL a transaction-scoped advisory lock (other users are not held up);
    on SQLite the database's write lock (``BEGIN IMMEDIATE``: SQLite has one writer at a time
    anyway), taken before the count reads anything.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.exec(select(func.pg_advisory_xact_lock(OWNER_LOCKS, func.hashtext(owner))))
    else:
        session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    active = session.exec(
        select(func.count()).where(Experiment.owner == owner, col(Experiment.status).in_(ACTIVE))
    ).one()
    return active + _first_trials_to_come(session, owner)


def _first_trials_to_come(session: Session, owner: str) -> int:
    """Trials of ``owner``'s searches counted toward the cap when submitted but not stored yet
    (each search starts ``min(parallel, n_trials)`` trials right after its own row commits)."""
    parallel = col(Study.definition)[("search", "parallel")].as_integer()
    n_trials = col(Study.definition)[("search", "n_trials")].as_integer()
    starting = session.exec(
        select(parallel, n_trials, Study.trials_started).where(
            Study.owner == owner,
            Study.kind == "search",
            col(Study.cancel_requested).is_(False),
            col(Study.trials_started) < parallel,
        )
    ).all()
    return sum(max(0, min(width, total) - started) for width, total, started in starting)


def continuations(session: Session, experiment_id: str) -> list[str]:
    """The experiments continued from this one (not its reruns), oldest first: their curves
    join its epochs (``ancestry``)."""
    return list(
        session.exec(
            select(Experiment.id)
            .where(Experiment.parent_id == experiment_id, Experiment.epoch_offset > 0)
            .order_by(col(Experiment.created_at))
        )
    )


def delete(session: Session, experiment: Experiment, *, force: bool = False) -> None:
    """Delete a finished experiment and its history; Conflict while it may still run, and,
    unless ``force``, while other runs continue it (their joined history would lose it)."""
    if experiment.status in ACTIVE:
        raise Conflict(
            f"Experiment {experiment.id} is {experiment.status}; cancel it before deleting."
        )
    if not force and (children := continuations(session, experiment.id)):
        named = ", ".join(children[:5]) + (", ..." if len(children) > 5 else "")
        raise Conflict(
            f"Experiment {experiment.id} is continued by {named}: deleting it takes its epochs "
            "out of their history with ?lineage=true; force=true deletes it all the same."
        )
    session.delete(experiment)
    session.commit()


class TooManyTags(ValueError):
    """Adding tags would give an experiment more than ``MAX_TAGS``."""


MAX_TAGS = 32
"""The most tags an experiment holds."""


def relabel(
    session: Session,
    experiment: Experiment,
    changes: dict[str, Any],
    add_tags: Sequence[str] = (),
    remove_tags: Sequence[str] = (),
) -> Experiment:
    """Set the experiment's ``name``, ``tags``, ``notes`` or ``pinned`` given in ``changes``
    (only those columns are written: a worker's concurrent updates of the row are kept), then
    add and remove tags. Adding or removing reads the tags under a lock on the row, so two
    people tagging at once both keep theirs; TooManyTags (nothing written) past ``MAX_TAGS``."""
    if add_tags or remove_tags:
        tags = changes["tags"] if "tags" in changes else _locked(session, experiment).tags
        merged = [tag for tag in dict.fromkeys([*tags, *add_tags]) if tag not in remove_tags]
        if len(merged) > MAX_TAGS:
            session.rollback()
            raise TooManyTags(f"it would have {len(merged)} tags; an experiment holds {MAX_TAGS}")
        changes = {**changes, "tags": merged}
    for key, value in changes.items():
        setattr(experiment, key, value)
    session.add(experiment)
    session.commit()
    session.refresh(experiment)
    return experiment


def _locked(session: Session, experiment: Experiment) -> Experiment:
    """The experiment re-read under a lock its session holds until it commits: the row's on
    PostgreSQL (``FOR UPDATE``), the database's write lock on SQLite (``BEGIN IMMEDIATE``,
    before any write of this transaction, as SQLite's driver begins only before one)."""
    if session.get_bind().dialect.name == "postgresql":
        query = select(Experiment).where(Experiment.id == experiment.id).with_for_update()
        return session.exec(query.execution_options(populate_existing=True)).one()
    session.connection().exec_driver_sql("BEGIN IMMEDIATE")
    session.refresh(experiment)
    return experiment


def encode_cursor(key: datetime | float | None, row_id: str, sort: Sort = NEWEST) -> str:
    """An opaque paging cursor after the row (key, id) of a listing in ``sort``'s order; a
    newest-first one names no sort (the form cursors had before listings could be sorted)."""
    value = key.isoformat() if isinstance(key, datetime) else key
    payload = [value, row_id] if sort == NEWEST else [sort, value, row_id]
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, sort: Sort = NEWEST) -> tuple[datetime | float | None, str]:
    """The (key, id) a cursor points after; InvalidCursor unless it is exactly a cursor that
    ``encode_cursor`` makes for ``sort`` (so no size, nesting or type of JSON, and no cursor
    of another order, gets further)."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("longer than any cursor this server makes")
        *named, value, row_id = json.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        if named != ([] if sort == NEWEST else [sort]):
            raise ValueError("a cursor of another order")
        key = datetime.fromisoformat(value) if _by_time(sort) else _metric(value)
        if not _ROW_ID.fullmatch(row_id) or encode_cursor(key, row_id, sort) != cursor:
            raise ValueError("not in the form encode_cursor makes")
        return key, row_id
    except (binascii.Error, ValueError, TypeError) as exc:
        which = "" if sort == NEWEST else f" for sort={sort}"
        raise InvalidCursor(
            f"The cursor is not one this server gave out{which}; start again without it."
        ) from exc


def _metric(value: Any) -> float | None:
    """A metric as a cursor holds it: a finite number, or None for a row without it."""
    if value is None or (type(value) in (int, float) and math.isfinite(value)):
        return value
    raise ValueError("not a metric")
