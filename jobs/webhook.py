"""One POST to a notification's receiver, made so that no receiver can hold or fill the server:
it goes to the addresses that were checked (the URL's name is not looked up again; it still
goes in the Host header and as the TLS server name, against which the certificate is
verified), ends by one deadline whatever the receiver sends and however slowly, reads at most
``ANSWER_BYTES`` of the answer (its status line and headers; the body is never read), never
follows a redirect, and says what went wrong in its own words, never the receiver's."""

import ssl
import time
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import httpcore

ANSWER_BYTES = 8 * 1024
"""Bytes of an answer read at most: the status line and headers must fit in them."""


class Unanswered(Exception):
    """No HTTP answer came; the message says why, in words a port scan learns nothing from."""


def post(
    url: str,
    addresses: Sequence[str],
    body: bytes,
    headers: dict[str, str],
    *,
    deadline_s: float,
    ssl_context: ssl.SSLContext | None = None,
) -> int:
    """POST ``body`` to ``url`` through the first of ``addresses`` that connects (the Host
    header as the URL writes it); the answer's status code, or Unanswered."""
    backend = _Pinned(addresses, time.monotonic() + deadline_s)
    timeouts = dict.fromkeys(("connect", "read", "write", "pool"), deadline_s)
    try:
        with (
            httpcore.ConnectionPool(ssl_context=ssl_context, network_backend=backend) as pool,
            pool.stream(
                "POST",
                url,
                headers=[("Host", urlsplit(url).netloc.rpartition("@")[2]), *headers.items()],
                content=body,
                extensions={"timeout": timeouts},
            ) as answer,
        ):
            return answer.status
    except httpcore.TimeoutException:
        raise Unanswered(f"no answer within {deadline_s:g} s") from None
    except httpcore.ConnectError:
        raise Unanswered("could not connect (TCP or TLS)") from None
    except _TooLong:
        raise Unanswered(f"the answer's head passed {ANSWER_BYTES // 1024} KB") from None
    except (httpcore.ProtocolError, httpcore.NetworkError):
        raise Unanswered("the answer was not HTTP") from None


class _TooLong(httpcore.ReadError):
    """The answer went on past ``ANSWER_BYTES``."""


def _left(deadline: float, timeout: float | None, late: type[Exception]) -> float:
    """Seconds an operation may take: its own timeout, cut to what is left before the
    deadline (``late`` raised once it has passed)."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise late("the attempt's deadline passed")
    return left if timeout is None else min(timeout, left)


class _Pinned(httpcore.NetworkBackend):
    """Connects to the checked addresses in turn, whatever host the request names."""

    def __init__(self, addresses: Sequence[str], deadline: float) -> None:
        self.addresses = addresses
        self.deadline = deadline
        self.sockets = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        failed = httpcore.ConnectError("no address to connect to")
        for address in self.addresses:
            try:
                stream = self.sockets.connect_tcp(
                    address,
                    port,
                    timeout=_left(self.deadline, timeout, httpcore.ConnectTimeout),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failed = exc
                continue
            return _Bounded(stream, self.deadline, ANSWER_BYTES)
        raise failed


class _Bounded(httpcore.NetworkStream):
    """A connection whose every operation ends by the deadline, and that reads at most
    ``unread`` bytes."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: float, unread: int) -> None:
        self.stream = stream
        self.deadline = deadline
        self.unread = unread

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.unread <= 0:
            raise _TooLong()
        left = _left(self.deadline, timeout, httpcore.ReadTimeout)
        data = self.stream.read(min(max_bytes, self.unread), left)
        self.unread -= len(data)
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.stream.write(buffer, _left(self.deadline, timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = _left(self.deadline, timeout, httpcore.ConnectTimeout)
        secured = self.stream.start_tls(ssl_context, server_hostname, left)
        return _Bounded(secured, self.deadline, self.unread)

    def get_extra_info(self, info: str) -> object:
        return self.stream.get_extra_info(info)
