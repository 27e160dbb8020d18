"""A resolver the test controls, planted in a real process: with this folder on PYTHONPATH,
``CONVLAB_TEST_RESOLVE="NAME=A1,A2,..."`` makes the n-th look-up of NAME answer the n-th
address (the last one from then on): a name that is public when checked and private when
connected to (DNS rebinding). Every other name resolves as usual."""

import os
import socket
import threading
from typing import Any

PLANTED = os.environ.get("CONVLAB_TEST_RESOLVE")


def _plant(name: str, answers: list[str]) -> None:
    original = socket.getaddrinfo
    asked = 0
    lock = threading.Lock()

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal asked
        if host != name:
            return original(host, port, *args, **kwargs)
        with lock:
            address = answers[min(asked, len(answers) - 1)]
            asked += 1
        return original(address, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo


if PLANTED:
    planted_name, planted_answers = PLANTED.split("=", 1)
    _plant(planted_name, planted_answers.split(","))
