"""Rows by id: what the API reads to answer 404 or to name an experiment or study.

An id may also be a unique prefix of one (``MIN_PREFIX`` hex characters or more, as the
dashboard shows them): the exact id is looked up first, by the primary key; a prefix is then a
range scan of that same index."""

import re

from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from models.status import Status
from store.experiments import Conflict
from store.tables import Experiment, Study

MIN_PREFIX = 6
"""The fewest hex characters that name an experiment or study by prefix."""
MAX_NAMED = 5
"""Candidates an ambiguous prefix's 409 names."""
_PREFIX = re.compile(f"[0-9a-f]{{{MIN_PREFIX},31}}")

_STATUS_AND_OWNER = select(Experiment.status, Experiment.owner).where(
    Experiment.id == bindparam("experiment_id")
)
"""Built once: SQLAlchemy then finds its compiled form without working out a cache key."""


class AmbiguousId(Conflict):
    """A prefix that starts the ids of more than one experiment or study (a 409)."""

    def __init__(self, what: str, prefix: str, candidates: list[str]) -> None:
        named = ", ".join(candidates[:MAX_NAMED]) + (", ..." if len(candidates) > MAX_NAMED else "")
        super().__init__(
            f"{what} id {prefix} is ambiguous: it starts {named}; give more of the id."
        )
        self.candidates = candidates


def experiment_by_id(
    session: Session, *, experiment_id: str, owner: str | None = None
) -> Experiment | None:
    """The experiment with this id, or with this unique prefix (among ``owner``'s, if given);
    None if there is none, AmbiguousId if the prefix starts several."""
    experiment = session.get(Experiment, experiment_id)
    if experiment is not None:
        return experiment
    full = _full_id(session, Experiment, experiment_id, owner, "Experiment")
    return None if full is None else session.get(Experiment, full)


def status_and_owner(session: Session, *, experiment_id: str) -> tuple[Status, str | None] | None:
    """The experiment's status and owner, one row's two columns read without the ORM, or None
    (by its exact id)."""
    row = session.connection().execute(_STATUS_AND_OWNER, {"experiment_id": experiment_id}).first()
    return None if row is None else (Status(row.status), row.owner)


def study_by_id(session: Session, *, study_id: str, owner: str | None = None) -> Study | None:
    """The study with this id or unique prefix, as ``experiment_by_id``."""
    study = session.get(Study, study_id)
    if study is not None:
        return study
    full = _full_id(session, Study, study_id, owner, "Study")
    return None if full is None else session.get(Study, full)


def _full_id(
    session: Session,
    table: type[Experiment] | type[Study],
    prefix: str,
    owner: str | None,
    what: str,
) -> str | None:
    """The one id of ``table`` that starts with ``prefix`` (of ``owner``'s rows, if given):
    a range of the primary key's index, ``[prefix, prefix + "g")`` (ids are lowercase hex)."""
    if not _PREFIX.fullmatch(prefix):
        return None
    query = select(table.id).where(col(table.id) >= prefix, col(table.id) < prefix + "g")
    if owner is not None:
        query = query.where(table.owner == owner)
    found = list(session.exec(query.order_by(col(table.id)).limit(MAX_NAMED + 1)))
    if len(found) > 1:
        raise AmbiguousId(what, prefix, found)
    return found[0] if found else None
