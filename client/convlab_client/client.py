"""A small client for convlab's HTTP API (``../shared/API.md``), for scripts and ``convlab``.

>>> from convlab_client import Client
>>> with Client() as api:  # CONVLAB_URL (or CONVLAB_PORT) and CONVLAB_TOKEN, or the arguments
...     experiment = api.submit({"preset": "dropout", "dataset": {"name": "digits"}})
...     for epoch in api.follow(experiment["id"]):
...         print(epoch["epoch"], epoch["val_accuracy"])
"""

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self, overload

import httpx

if TYPE_CHECKING:
    import pandas

Json = dict[str, Any]
DEFAULT_URL = "http://127.0.0.1:8000"
Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "paused"]
"""An experiment's (or a study's) status, as the API names it."""
TERMINAL: frozenset[Status] = frozenset({"succeeded", "failed", "cancelled"})
"""Statuses an experiment (or a study) never leaves."""
MAX_PAGE = 500
"""The most experiments the API returns a page."""
MAX_STUDY_PAGE = 100
"""The most studies the API returns a page."""
CONNECTION_LIMITS = httpx.Limits(keepalive_expiry=2.0)
"""Idle connections are dropped after 2 s, before uvicorn's keep-alive (5 s) closes them: a
request sent on a connection just as the server closes it fails with "Server disconnected
without sending a response" (seen once in CI)."""
Weights = Literal["best", "last"]
"""Which of a finished experiment's models: its best epoch's or its newest checkpoint."""
ImageFormat = Literal["png", "svg"]


class ApiError(Exception):
    """The API answered with an error, or could not be reached; ``str()`` is a sentence."""

    def __init__(
        self, message: str, status_code: int | None = None, errors: Sequence[Json] = ()
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        """The HTTP status, or None when no answer came."""
        self.errors = list(errors)
        """A 422's entries (``type``, ``loc``, ``msg``, ``input``); empty for other errors."""


def describe(detail: Any) -> str:
    """The ``detail`` of an error body as text; a 422's entries as ``body.field: message``."""
    if isinstance(detail, list):
        return "; ".join(
            f"{'.'.join(str(part) for part in entry.get('loc', []))}: {entry.get('msg')}"
            for entry in detail
            if isinstance(entry, dict)
        )
    return str(detail)


def _error(response: httpx.Response) -> ApiError:
    try:
        raw = response.json()["detail"]
        detail = describe(raw)
    except (ValueError, KeyError, TypeError):
        raw, detail = None, response.text.strip()[:200] or response.reason_phrase
    if response.status_code == 422:
        detail = f"The server refused the request: {detail}"
    elif response.status_code == 401:
        detail = f"{detail} CONVLAB_TOKEN sets the token this client sends."
    errors = [entry for entry in raw if isinstance(entry, dict)] if isinstance(raw, list) else []
    return ApiError(detail, response.status_code, errors)


def server_url() -> str:
    """``CONVLAB_URL``; else this machine at ``CONVLAB_PORT``, the port the server's own
    setting names (one variable for both); else ``DEFAULT_URL``."""
    if url := os.environ.get("CONVLAB_URL"):
        return url
    if port := os.environ.get("CONVLAB_PORT"):
        return f"http://127.0.0.1:{port}"
    return DEFAULT_URL


class Client:
    """convlab's API over HTTP; every method raises :class:`ApiError` on a non-2xx answer."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 30
    ) -> None:
        self.url = (url or server_url()).rstrip("/")
        token = token or os.environ.get("CONVLAB_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, limits=CONNECTION_LIMITS
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            reason = str(exc) or type(exc).__name__
            raise ApiError(
                f"Could not reach the convlab API at {self.url} ({reason}); "
                "CONVLAB_URL (or CONVLAB_PORT, on this machine) sets its address."
            ) from None
        if not response.is_success:
            raise _error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    # Experiments

    def submit(self, body: Json) -> Json:
        """Submit an experiment (``preset`` plus spec overrides); the queued Experiment."""
        return self._json("POST", "/experiments", json=body)

    def experiment(self, experiment_id: str) -> Json:
        """One experiment: status, progress, error, final and best metrics, resolved spec."""
        return self._json("GET", f"/experiments/{experiment_id}")

    def experiments(
        self,
        *,
        status: Status | None = None,
        preset: str | None = None,
        study_id: str | None = None,
        tags: Sequence[str] = (),
        dataset: str | None = None,
        q: str | None = None,
        spec: Mapping[str, str] | None = None,
        sort: str | None = None,
        limit: int | None = 50,
        page_size: int = MAX_PAGE,
    ) -> list[Json]:
        """Experiments, newest first or in ``sort``'s order (``created_at``, ``final.<metric>``,
        ``best.<metric>``; ``-`` descending), following ``next_cursor`` pages up to ``limit``
        (None: all). Filters: every one of ``tags``, ``q`` in the name or notes, and ``spec``
        fields by dotted path, valued as a query writes them: ``{"model.batch_norm": "true"}``."""
        filters = {"status": status, "preset": preset, "study_id": study_id, "tag": list(tags)}
        filters |= {"dataset": dataset, "q": q, "sort": sort}
        params: dict[str, Any] = {key: value for key, value in filters.items() if value}
        params |= {f"spec.{path}": value for path, value in (spec or {}).items()}
        return self._pages("/experiments", params, limit, page_size)

    def _pages(
        self, path: str, params: dict[str, Any], limit: int | None, page_size: int
    ) -> list[Json]:
        """A listing's items, following ``next_cursor`` until ``limit`` (None: all)."""
        found: list[Json] = []
        while limit is None or len(found) < limit:
            params["limit"] = page_size if limit is None else min(page_size, limit - len(found))
            page = self._json("GET", path, params=params)
            found.extend(page["items"])
            if page["next_cursor"] is None:
                break
            params["cursor"] = page["next_cursor"]
        return found

    def update(self, experiment_id: str, changes: Json) -> Json:
        """Change an experiment's ``name``, ``tags`` (replaced; ``add_tags`` and ``remove_tags``
        change them in place), ``notes`` or ``pinned``; the Experiment."""
        return self._json("PATCH", f"/experiments/{experiment_id}", json=changes)

    def history(self, experiment_id: str, since: int = 0) -> list[Json]:
        """The finished epochs after ``since``: epoch, loss, accuracy, val_loss, val_accuracy,
        seconds."""
        path = f"/experiments/{experiment_id}/history"
        return self._json("GET", path, params={"since": since})["epochs"]

    def history_csv(self, experiment_id: str) -> str:
        """The history as the server's CSV, header row included."""
        path = f"/experiments/{experiment_id}/history"
        return self._send("GET", path, params={"format": "csv"}).text

    def history_frame(self, experiment_id: str) -> "pandas.DataFrame":
        """The history as a pandas DataFrame indexed by epoch (needs pandas)."""
        try:
            import pandas
        except ImportError:
            raise ImportError(
                "Client.history_frame needs pandas, which is not installed: "
                "pip install pandas, or use Client.history for a list of dicts."
            ) from None
        return pandas.DataFrame(self.history(experiment_id)).set_index("epoch")

    def delete(self, experiment_id: str, *, force: bool = False) -> None:
        """Delete an ended experiment with its history, checkpoints and evaluation; an
        experiment other runs continue only with ``force`` (else a 409 naming them)."""
        params = {"force": "true"} if force else None
        self._send("DELETE", f"/experiments/{experiment_id}", params=params)

    def cancel(self, experiment_id: str) -> Json:
        """Cancel: a queued experiment never runs, a running one stops at its next batch."""
        return self._json("POST", f"/experiments/{experiment_id}/cancel")

    def pause(self, experiment_id: str) -> Json:
        """Pause: a queued experiment at once, a running one checkpoints at its next batch and
        frees its worker."""
        return self._json("POST", f"/experiments/{experiment_id}/pause")

    def resume(self, experiment_id: str) -> Json:
        """Put a paused experiment back in the queue; it goes on from its checkpoint."""
        return self._json("POST", f"/experiments/{experiment_id}/resume")

    def continue_experiment(
        self, experiment_id: str, epochs: int, *, priority: str | None = None
    ) -> Json:
        """A new queued experiment that trains an ended one ``epochs`` more epochs from its last
        checkpoint (weights and optimizer state), numbering them after the parent's; its
        priority the parent's unless given (capped at what the caller may submit)."""
        path = f"/experiments/{experiment_id}/continue"
        body = {"epochs": epochs} | ({"priority": priority} if priority else {})
        return self._json("POST", path, json=body)

    def verify(self, experiment_id: str) -> Json:
        """A new queued experiment that reruns a succeeded one's spec to verify it: once the
        rerun succeeds, both carry the ``verdict`` (identical, within 1e-6, or diverged)."""
        return self._json("POST", f"/experiments/{experiment_id}/verify")

    def verdict(
        self, experiment_id: str, *, timeout: float = 30, poll_seconds: float = 1.0
    ) -> Json | None:
        """A verification rerun's ``verdict``, waited for up to ``timeout`` seconds after it
        has ended; None if none is recorded by then (a rerun that did not succeed gets none)."""
        deadline = time.monotonic() + timeout
        while True:
            verdict: Json | None = self.experiment(experiment_id)["verdict"]
            if verdict is not None or time.monotonic() >= deadline:
                return verdict
            time.sleep(poll_seconds)

    def follow(self, experiment_id: str, *, poll_seconds: float = 1.0) -> Iterator[Json]:
        """Yield each epoch as it finishes, until the experiment has ended (then
        :meth:`experiment` tells how)."""
        since = 0
        while True:
            page = self._json(
                "GET", f"/experiments/{experiment_id}/history", params={"since": since}
            )
            for epoch in page["epochs"]:
                since = epoch["epoch"]
                yield epoch
            if page["status"] in TERMINAL:  # read before the epochs: none can be missing
                return
            time.sleep(poll_seconds)

    def wait(self, experiment_id: str, *, poll_seconds: float = 1.0) -> Json:
        """Block until the experiment has ended; the final Experiment."""
        for _ in self.follow(experiment_id, poll_seconds=poll_seconds):
            pass
        return self.experiment(experiment_id)

    # Studies

    def submit_study(self, body: Json) -> Json:
        """Submit a study (base spec keys, ``seeds``, and one of ``template``, ``presets``,
        ``variants``, ``grid`` or ``search``); the Study with its experiment ids."""
        return self._json("POST", "/studies", json=body)

    def studies(self, *, limit: int | None = 20) -> list[Json]:
        """Studies, newest first, following ``next_cursor`` pages up to ``limit`` (None: all)."""
        return self._pages("/studies", {}, limit, MAX_STUDY_PAGE)

    def cancel_study(self, study_id: str) -> Json:
        """Cancel every experiment of the study that has not ended (a search starts no more
        trials); the Study."""
        return self._json("POST", f"/studies/{study_id}/cancel")

    def add_seeds(
        self, study_id: str, *, seeds: list[int] | None = None, add: int | None = None
    ) -> Json:
        """Queue the study's variants again at new ``seeds``, or at ``add`` more after its
        highest (give one); the Study, its seeds and experiment ids grown."""
        body = {"seeds": seeds} if seeds is not None else {"add": add}
        return self._json("POST", f"/studies/{study_id}/seeds", json=body)

    def study(self, study_id: str) -> Json:
        """A study's status, progress, experiment ids and comparison table."""
        return self._json("GET", f"/studies/{study_id}")

    def watch_study(self, study_id: str, *, poll_seconds: float = 1.0) -> Iterator[Json]:
        """Yield the study about once a second (``poll_seconds``), the last time when it has
        ended."""
        while True:
            study = self.study(study_id)
            yield study
            if study["status"] in TERMINAL:
                return
            time.sleep(poll_seconds)

    @overload
    def study_table(
        self, study_id: str, format: Literal["json"] = "json", *, baseline: str | None = None
    ) -> list[Json]: ...

    @overload
    def study_table(
        self, study_id: str, format: Literal["csv", "markdown"], *, baseline: str | None = None
    ) -> str: ...

    def study_table(
        self,
        study_id: str,
        format: Literal["json", "csv", "markdown"] = "json",
        *,
        baseline: str | None = None,
    ) -> list[Json] | str:
        """The comparison table: rows of mean and std over seeds and each row's difference to
        the ``baseline`` row (default: the first) (json), or the text."""
        params = {"format": format} | ({"baseline": baseline} if baseline else {})
        response = self._send("GET", f"/studies/{study_id}/table", params=params)
        return response.json()["table"] if format == "json" else response.text

    # Comparing and evaluating

    @overload
    def compare(
        self, ids: list[str], format: Literal["json"] = "json", *, baseline: str | None = None
    ) -> list[Json]: ...

    @overload
    def compare(
        self, ids: list[str], format: Literal["csv", "markdown"], *, baseline: str | None = None
    ) -> str: ...

    def compare(
        self,
        ids: list[str],
        format: Literal["json", "csv", "markdown"] = "json",
        *,
        baseline: str | None = None,
    ) -> list[Json] | str:
        """The comparison table of any experiments, a row each with its spec's difference to
        the ``baseline`` run's (default: the first) (json), or the text."""
        params = {"ids": ",".join(ids), "format": format} | (
            {"baseline": baseline} if baseline else {}
        )
        response = self._send("GET", "/compare", params=params)
        return response.json()["table"] if format == "json" else response.text

    def compare_plot(self, ids: list[str], fmt: ImageFormat = "png") -> bytes:
        """The experiments' test curves overlaid (one spec's seeds as a mean ± std band)."""
        return self._send("GET", f"/compare/plot.{fmt}", params={"ids": ",".join(ids)}).content

    def evaluation(self, experiment_id: str) -> Json:
        """An ended run's test set by class: classes, per_class_accuracy, confusion, weights."""
        return self._json("GET", f"/experiments/{experiment_id}/evaluation")

    def plot(self, experiment_id: str, fmt: ImageFormat = "png") -> bytes:
        """The chapter's two panels of an experiment: accuracy and loss per epoch."""
        return self._send("GET", f"/experiments/{experiment_id}/plot.{fmt}").content

    def tensorboard(self, id_: str, *, experiment: bool = False) -> bytes:
        """A study's runs (an experiment's, with ``experiment``) as a TensorBoard log folder in
        a ``.tar.gz``."""
        kind = "experiments" if experiment else "studies"
        return self._send("GET", f"/{kind}/{id_}/tensorboard").content

    # Trained models

    def model(self, experiment_id: str, weights: Weights | None = None) -> tuple[str, bytes]:
        """A finished experiment's ``.keras`` file: the name the server gives it, and its bytes
        (default weights: best with ``restore_best_weights``, else last)."""
        params = {"weights": weights} if weights else None
        response = self._send("GET", f"/experiments/{experiment_id}/model", params=params)
        disposition = response.headers.get("content-disposition", "")
        _, _, quoted = disposition.partition('filename="')
        return quoted.rstrip('"') or f"convlab-{experiment_id}.keras", response.content

    def predict(self, experiment_id: str, image: bytes, weights: Weights | None = None) -> Json:
        """Class probabilities for one PNG or JPEG picture, most probable first:
        ``{"epoch", "top", "probabilities": [{"label", "index", "probability"}, ...]}``."""
        params = {"weights": weights} if weights else None
        path = f"/experiments/{experiment_id}/predict"
        return self._json("POST", path, params=params, files={"file": ("image", image)})

    # Catalogue

    def presets(self) -> list[Json]:
        """The chapter's presets: name, description and full resolved spec."""
        return self._json("GET", "/presets")

    def datasets(self) -> list[Json]:
        """The datasets a spec may name, each with ``available`` (its files are on the server),
        classes, shape and sizes."""
        return self._json("GET", "/datasets")

    def upload_dataset(self, name: str, path: str | os.PathLike[str]) -> Json:
        """Upload an ``.npz`` (``numpy.savez`` of x_train, y_train, x_test, y_test and
        optionally class_names) as dataset ``name``; its catalogue entry."""
        with open(path, "rb") as file:
            files = {"file": (os.path.basename(path), file, "application/octet-stream")}
            return self._json("POST", "/datasets", data={"name": name}, files=files, timeout=None)

    def delete_dataset(self, name: str, *, force: bool = False) -> None:
        """Delete an uploaded dataset (its owner or an admin; not while experiments use it;
        ``force`` although ended experiments did, keeping their models usable)."""
        self._send("DELETE", f"/datasets/{name}", params={"force": "true"} if force else None)
