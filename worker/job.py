"""A run as this worker process holds it: which experiment, which process holds it, and how its
writes wait out a database outage (shared by the training loop and its helpers)."""

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from core.config import Settings
from store.db import Engine
from store.outages import through_outages

T = TypeVar("T")


class Job:
    """What the callbacks share: which experiment, which process holds it, how to write."""

    def __init__(
        self,
        engine: Engine,
        experiment_id: str,
        owner: str,
        settings: Settings,
        dataset: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.experiment_id = experiment_id
        self.owner = owner
        self.settings = settings
        self.dataset = dataset
        """The record of the dataset it was submitted with (None: from before records)."""
        self.lease_lost = threading.Event()

    def durably(
        self, what: str, call: Callable[[], T], give_up: threading.Event | None = None
    ) -> T:
        """``call()``, waiting out a database outage of up to ``db_outage_s`` (or until
        ``give_up`` is set)."""
        return through_outages(
            call,
            seconds=self.settings.db_outage_s,
            what=f"{what} ({self.experiment_id})",
            give_up=give_up,
        )
