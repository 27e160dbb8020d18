"""Reading a server-sent event stream in tests, as a browser's EventSource would."""

import json
from collections.abc import Iterable, Iterator
from typing import Any


def parse_events(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Events as ``{"event", "id", "data"}`` (data JSON-decoded); comments are skipped."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[field] = json.loads(value) if field == "data" else value
    if event:
        yield event
