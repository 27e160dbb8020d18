"""Notification receivers for the tests: a real TCP server on loopback that reads each request
and answers by its path, well or badly, and records what it got."""

import contextlib
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

FLOOD_BYTES = 96 * 2**20
"""What /flood sends at most (a client that reads the whole answer would hold it all)."""


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    """time.monotonic() when it arrived."""


@dataclass
class Receiver:
    """Where the server listens (``url``), what it got, and a switch that ends endless answers.

    Paths: /ok answers 200; /fail 500 with a phrase of its own; /redirect a 307 to /caught;
    /drip a status line then one header byte every 0.1 s, never ending its head; /silent
    nothing; /flood a 200 then an endless body, fast; /longhead a 200 whose head never ends,
    fast; /banner a non-HTTP line."""

    url: str
    posts: list[Post] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def at(self, path: str) -> list[Post]:
        return [post for post in self.posts if post.path == path]


@contextmanager
def receiver(host: str = "127.0.0.1") -> Iterator[Receiver]:
    """A receiver on a free port of ``host`` for the duration of the block."""
    got = Receiver("")

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request_line = self.rfile.readline().decode("latin-1")
            headers = {}
            while (line := self.rfile.readline().decode("latin-1").strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = self.rfile.read(int(headers.get("content-length", 0)))
            path = request_line.split()[1]
            got.posts.append(Post(path, headers, body, time.monotonic()))
            answer = getattr(self, "answer_" + path.strip("/").split("?")[0], self.answer_ok)
            with contextlib.suppress(OSError):  # the client hung up: endless answers end
                answer()

        def answer_ok(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

        def answer_fail(self) -> None:
            self.wfile.write(
                b"HTTP/1.1 500 db=10.0.0.7 user=lab\r\nContent-Length: 0\r\n"
                b"Connection: close\r\n\r\n"
            )

        def answer_redirect(self) -> None:
            self.wfile.write(
                f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {got.url}/caught\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
            )

        def answer_drip(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            while not got.stop.wait(0.1):
                self.wfile.write(b"a")
                self.wfile.flush()

        def answer_silent(self) -> None:
            got.stop.wait(60)

        def answer_flood(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
            chunk = b"x" * 2**16
            for _ in range(FLOOD_BYTES // len(chunk)):
                if got.stop.is_set():
                    return
                self.wfile.write(chunk)

        def answer_longhead(self) -> None:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            while not got.stop.is_set():
                self.wfile.write(b"X-Pad: " + b"a" * 1000 + b"\r\n")

        def answer_banner(self) -> None:
            self.wfile.write(b"SSH-2.0-OpenSSH_9.2p1 internal-build-host\r\n")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    server = Server((host, 0), Handler)
    shown = f"[{host}]" if ":" in host else host
    got.url = f"http://{shown}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield got
    finally:
        got.stop.set()
        server.shutdown()
        server.server_close()
