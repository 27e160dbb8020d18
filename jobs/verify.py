"""Judging verification reruns: the worker that finishes one judges it at once, and the sweeper
judges any it missed (a worker gone between the end and the verdict)."""

import logging

from jobs.verdict import Verdict, judge
from store.db import Engine
from store.verdicts import record_verdict, unjudged, verification

log = logging.getLogger(__name__)


def settle(engine: Engine, experiment_id: str) -> Verdict | None:
    """Judge the experiment if it is a succeeded verification rerun not judged yet, and record
    the verdict on it and on the run it verifies; None for any other run."""
    found = verification(engine, experiment_id)
    if found is None:
        return None
    verdict = judge(found.ids, found.histories, found.environments)
    record_verdict(engine, found.ids, verdict.as_json())
    log.info("verification %s of %s: %s", found.ids[1], found.ids[0], verdict.summary)
    return verdict


def settle_all(engine: Engine) -> None:
    """Judge every succeeded verification rerun still without a verdict."""
    for rerun_id in unjudged(engine):
        try:
            settle(engine, rerun_id)
        except Exception:  # one that cannot be judged must not stall the others
            log.exception("could not judge verification %s", rerun_id)
