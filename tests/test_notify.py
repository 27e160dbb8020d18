"""Notifications: a signed POST to a real local HTTP server when an experiment or study ends,
retried with backoff, recorded on the row; loopback and private hosts refused at submit unless
the server allows them."""

import hashlib
import hmac
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.notify import NO_SECRET
from core.config import Settings
from jobs.notify import deliver_due, refusal
from jobs.webhook import Unanswered, post
from models.status import Status
from store.notifications import due, take_attempt
from tests.receivers import receiver as hostile_receiver
from tests.services import Trainer, missing, running_stack, wait_for, wait_for_status

SECRET = "a test secret of the lab"
RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 1}}


@dataclass
class Receiver:
    """A local HTTP server that records each POST and answers 200, or 500 under /fail."""

    url: str
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def bodies(self, path: str = "/ok") -> list[dict[str, Any]]:
        return [json.loads(body) for at, _, body in self.posts if at == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    posts: list[tuple[str, dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            posts.append((self.path, dict(self.headers), body))
            self.send_response(500 if self.path == "/fail" else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", posts)
    server.shutdown()


@pytest.fixture
def notifying(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path,
        notify_secret=SECRET,
        notify_allowed_hosts="127.0.0.1, example.invalid",
        notify_timeout_s=0.5,  # a failed delivery is retried after 1 s, then 2 s
        notify_attempts=3,
    )


@pytest.fixture
def api(notifying: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(notifying)) as client:
        yield client


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "loopback or private address (127.0.0.1)"),
        ("http://localhost/hook", "loopback or private address"),
        ("http://10.1.2.3/hook", "loopback or private address (10.1.2.3)"),
        ("http://[::1]:8000/", "loopback or private address (::1)"),
        ("http://169.254.169.254/latest/meta-data", "(169.254.169.254)"),
        ("ftp://93.184.216.34/", "is not an http:// or https:// URL"),
        ("https:///path", "is not an http:// or https:// URL"),
    ],
)
def test_hosts_that_are_not_public_are_refused(url: str, why: str) -> None:
    problem = refusal(url, frozenset())
    assert problem is not None and why in problem
    if "address" in why:
        assert "CONVLAB_NOTIFY_ALLOWED_HOSTS" in problem


def test_a_public_address_or_an_allowed_host_passes() -> None:
    assert refusal("https://93.184.216.34/hook", frozenset()) is None
    assert refusal("http://127.0.0.1:9/hook", frozenset({"127.0.0.1"})) is None


def test_notify_is_a_422_without_a_secret_or_to_a_private_host(
    client: TestClient, api: TestClient
) -> None:
    for server, url, sentence in (
        (client, "https://93.184.216.34/hook", NO_SECRET),
        (api, "http://10.1.2.3/hook", "10.1.2.3 is a loopback or private address"),
    ):
        for path, body in (("/experiments", RUN), ("/studies", {**RUN, "presets": ["base"]})):
            response = server.post(path, json={**body, "notify": url})
            assert response.status_code == 422, response.text
            (error,) = response.json()["detail"]
            assert error["loc"] == ["body", "notify"]
            assert sentence in error["msg"]
        assert server.get("/experiments").json()["items"] == []
        assert server.get("/studies").json()["items"] == []


def test_an_ended_experiment_is_posted_once_signed_and_recorded(
    api: TestClient, notifying: Settings, receiver: Receiver
) -> None:
    trainer = Trainer(notifying)
    created = api.post("/experiments", json={**RUN, "notify": f"{receiver.url}/ok"}).json()
    assert created["notify"] == f"{receiver.url}/ok"
    assert created["notification"] == {"state": "pending", "attempts": 0, "error": None}
    experiment_id = created["id"]
    trainer.start(experiment_id)
    assert deliver_due(trainer.engine, notifying) == 0  # not before it ends
    trainer.epoch(experiment_id, 1, 1.0, 0.5, 1.1, 0.45, 0.1)
    trainer.finish(experiment_id, Status.succeeded)
    assert deliver_due(trainer.engine, notifying) == 1
    assert deliver_due(trainer.engine, notifying) == 0  # once

    ((path, headers, body),) = receiver.posts
    assert path == "/ok"
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Convlab-Signature"] == f"sha256={expected}"
    assert headers["X-Convlab-Delivery"] == f"experiment:{experiment_id}"
    sent = json.loads(body)
    assert (sent["kind"], sent["id"], sent["status"]) == ("experiment", experiment_id, "succeeded")
    assert sent["final"]["val_accuracy"] == 0.45
    shown = api.get(f"/experiments/{experiment_id}").json()
    assert shown["notification"] == {"state": "delivered", "attempts": 1, "error": None}


def test_a_failing_receiver_is_tried_with_backoff_then_given_up(
    api: TestClient, notifying: Settings, receiver: Receiver
) -> None:
    experiment_id = api.post("/experiments", json={**RUN, "notify": f"{receiver.url}/fail"})
    experiment_id = experiment_id.json()["id"]
    api.post(f"/experiments/{experiment_id}/cancel")  # a queued run ends at once
    engine = Trainer(notifying).engine
    started = time.monotonic()
    while len(receiver.posts) < 3 and time.monotonic() - started < 20:
        deliver_due(engine, notifying)
    waited = time.monotonic() - started
    for _ in range(3):
        time.sleep(0.25)
        assert deliver_due(engine, notifying) == 0  # given up after notify_attempts
    assert len(receiver.posts) == 3
    assert waited >= 3 * notifying.notify_retry_s  # the backoff doubles: 1 s, then 2 s
    notification = api.get(f"/experiments/{experiment_id}").json()["notification"]
    assert notification["state"] == "failed"
    assert notification["attempts"] == 3
    assert notification["error"] == "attempt 3: the receiver answered 500 Internal Server Error"
    assert receiver.bodies("/fail")[0]["status"] == "cancelled"


def test_a_study_is_posted_when_its_last_run_ends(
    api: TestClient, notifying: Settings, receiver: Receiver
) -> None:
    trainer = Trainer(notifying)
    body = {**RUN, "presets": ["base", "dropout"], "notify": f"{receiver.url}/ok"}
    study = api.post("/studies", json=body).json()
    assert study["notification"]["state"] == "pending"
    first, second = study["experiment_ids"]
    trainer.start(first)
    trainer.finish(first, Status.succeeded)
    assert deliver_due(trainer.engine, notifying) == 0  # the other still waits
    api.post(f"/experiments/{second}/cancel")
    assert deliver_due(trainer.engine, notifying) == 1
    (sent,) = receiver.bodies()
    assert (sent["kind"], sent["id"], sent["status"]) == ("study", study["id"], "cancelled")
    assert (sent["progress"]["succeeded"], sent["progress"]["cancelled"]) == (1, 1)
    assert api.get(f"/studies/{study['id']}").json()["notification"]["state"] == "delivered"


def test_two_senders_cannot_take_the_same_attempt(
    api: TestClient, notifying: Settings, receiver: Receiver
) -> None:
    experiment_id = api.post("/experiments", json={**RUN, "notify": f"{receiver.url}/ok"})
    api.post(f"/experiments/{experiment_id.json()['id']}/cancel")
    engine = Trainer(notifying).engine
    (row,), _ = due(engine)
    assert take_attempt(engine, row, retry_after_s=60) is True
    assert take_attempt(engine, row, retry_after_s=60) is False  # the same snapshot again
    assert due(engine) == ([], [])  # held off until the retry time


@pytest.mark.slow
def test_the_running_server_notifies_when_a_worker_finishes_a_run(
    tmp_path: Path, receiver: Receiver
) -> None:
    settings = {
        "notify_secret": SECRET,
        "notify_allowed_hosts": "127.0.0.1",
        "sweep_interval_s": "0.5",
    }
    with running_stack(tmp_path, **settings) as stack, stack.client() as client:
        body = {**RUN, "notify": f"{receiver.url}/ok"}
        experiment_id = client.post("/experiments", json=body).json()["id"]
        assert wait_for_status(client, experiment_id, {"succeeded"})["status"] == "succeeded"
        wait_for(lambda: receiver.posts, timeout=30, what="the notification")
        (sent,) = receiver.bodies()
        assert (sent["id"], sent["status"], sent["epochs_done"]) == (experiment_id, "succeeded", 1)


def test_an_attempt_goes_to_the_checked_address_under_the_urls_name(tmp_path: Path) -> None:
    name = "hook.convlab.test"
    if shutil.which("openssl") is None:
        missing("openssl is not installed (it makes the receiver's certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    names = ["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *names, *files],
        check=True,
        capture_output=True,
    )
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    told: list[str | None] = []
    served.sni_callback = lambda _, server_name, __: told.append(server_name)
    heard: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_once() -> None:
        connection, _ = listener.accept()
        with served.wrap_socket(connection, server_side=True) as tls:
            request = b""
            while not request.endswith(b"{}"):  # the whole request, its body last
                request += (chunk := tls.recv(65536))
                assert chunk, "the client hung up before its body"
            heard.append(request)
            tls.sendall(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    threading.Thread(target=answer_once, daemon=True).start()
    trusting = ssl.create_default_context(cafile=cert)
    with listener:
        status = post(
            f"https://{name}:{port}/tls",
            ["127.0.0.1"],  # what the name was checked as; the name itself is not looked up
            b"{}",
            {"Content-Type": "application/json"},
            deadline_s=5,
            ssl_context=trusting,  # verifies the certificate against the name
        )
    assert status == 204
    assert told == [name]
    assert f"\r\nHost: {name}:{port}\r\n".encode() in heard[0]


def test_an_answer_whose_head_goes_on_is_cut_off_after_8_kb() -> None:
    with hostile_receiver() as hooks:
        started = time.monotonic()
        with pytest.raises(Unanswered, match="the answer's head passed 8 KB"):
            post(f"{hooks.url}/longhead", ["127.0.0.1"], b"{}", {}, deadline_s=5)
    assert time.monotonic() - started < 2  # cut off at once, not at the deadline
