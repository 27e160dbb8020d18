"""Tags, notes and names, and listings filtered by them and by the spec, sorted by a timestamp
or a metric and paged exactly: over HTTP against a running API on SQLite and PostgreSQL, and
through the ``convlab`` command."""

import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, get_args

import httpx
import pytest

from core.config import Settings
from models.status import Status
from store.experiments import Sort
from tests.services import BIN, Stack, Trainer, stack_on

RUN = {"dataset": {"name": "digits"}, "training": {"epochs": 3}}
VAL_ACCURACIES = [None, 0.5, 0.7, 0.5, 0.9, 0.5, 0.7, None, 0.7]
"""One experiment each (None: no epoch yet), ties included; a metric's missing ones sort last."""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Settings]]:
    """No worker (experiments stay queued unless a Trainer writes their epochs); auth on."""
    home = tmp_path_factory.mktemp(f"iterating-{request.param}")
    settings = {"auth": "true", "max_reads_per_minute": "100000"}
    with stack_on(request.param, home, **settings) as running:
        url = running.env.get("CONVLAB_DATABASE_URL")
        yield running, Settings(home=home, database_url=url)


@pytest.fixture(scope="module")
def tokens(stack: tuple[Stack, Settings]) -> dict[str, str]:
    running, _ = stack
    return {user: running.token(user) for user in ("alice", "bob")} | {
        "root": running.token("root", "--admin")
    }


@pytest.fixture(scope="module")
def alice(stack: tuple[Stack, Settings], tokens: dict[str, str]) -> Iterator[httpx.Client]:
    with stack[0].client(tokens["alice"]) as client:
        yield client


@pytest.fixture(scope="module")
def seeded(stack: tuple[Stack, Settings], alice: httpx.Client) -> list[dict[str, Any]]:
    """Alice's experiments, oldest first: various specs, tags and notes; some with epochs."""
    trainer = Trainer(stack[1])
    specs = [
        {"preset": "sgd"},
        {"preset": "batch_norm", "optimizer": {"name": "sgd", "learning_rate": 0.05}},
        {"preset": "dropout", "dataset": {"name": "mnist", "train_size": 100}},
        {"preset": "base", "training": {"epochs": 2}},
    ]
    seeded = []
    for index, val_accuracy in enumerate(VAL_ACCURACIES):
        body = RUN | {"name": f"run {index}"} | specs[index % len(specs)]
        experiment_id = alice.post("/experiments", json=body).json()["id"]
        if val_accuracy is not None:
            trainer.start(experiment_id)
            trainer.epoch(experiment_id, 1, 2.0 - val_accuracy, 0.3, 1.0, val_accuracy, 1.0)
            trainer.finish(experiment_id, Status.succeeded)
        tags = ["even" if index % 2 == 0 else "odd", "seeded", *(["all"] if index % 3 else [])]
        labels = {"tags": tags, "notes": f"Note {index}%"}
        response = alice.patch(f"/experiments/{experiment_id}", json=labels)
        assert response.status_code == 200, response.text
        seeded.append(response.json())
    return seeded


def ids(items: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in items]


def listed(client: httpx.Client, **params: Any) -> list[str]:
    """The ids of every experiment the listing gives, following its cursors a page at a time."""
    found: list[str] = []
    cursor = None
    while True:
        page = client.get("/experiments", params=params | ({"cursor": cursor} if cursor else {}))
        assert page.status_code == 200, page.text
        found += ids(page.json()["items"])
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return found


def expected_order(items: list[dict[str, Any]], sort: str) -> list[str]:
    """``items`` in ``sort``'s order as the contract states it: by the key, ties by id, both
    one way; no metric last."""
    descending = sort.startswith("-")
    field = sort.removeprefix("-")
    if field == "created_at":
        return [item["id"] for item in (items[::-1] if descending else items)]
    section, metric = field.split(".")
    keyed = [((item[section] or {}).get(metric), item["id"]) for item in items]
    present = sorted((pair for pair in keyed if pair[0] is not None), reverse=descending)
    absent = sorted((pair for pair in keyed if pair[0] is None), reverse=descending)
    return [experiment_id for _, experiment_id in present + absent]


def error_of(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    return dict(error)


def test_patch_changes_only_the_given_fields(
    alice: httpx.Client, seeded: list[dict[str, Any]]
) -> None:
    experiment = alice.post("/experiments", json=RUN | {"name": "before"}).json()
    assert (experiment["tags"], experiment["notes"], experiment["parent_id"]) == ([], None, None)
    path = f"/experiments/{experiment['id']}"
    tagged = alice.patch(path, json={"tags": ["bn", "lr-sweep", "bn", "ünï code"]}).json()
    assert (tagged["name"], tagged["tags"]) == ("before", ["bn", "lr-sweep", "ünï code"])
    noted = alice.patch(path, json={"notes": "Line one.\nLine two."}).json()
    assert (noted["tags"], noted["notes"]) == (
        ["bn", "lr-sweep", "ünï code"],
        "Line one.\nLine two.",
    )
    renamed = alice.patch(path, json={"name": "after", "tags": []}).json()
    assert (renamed["name"], renamed["tags"], renamed["notes"]) == ("after", [], noted["notes"])
    assert alice.get(path).json() == renamed
    cleared = alice.patch(path, json={"name": None, "notes": None}).json()
    assert (cleared["name"], cleared["notes"]) == (None, None)


def test_patch_by_another_user_is_403_and_by_an_admin_allowed(
    stack: tuple[Stack, Settings], tokens: dict[str, str], seeded: list[dict[str, Any]]
) -> None:
    path = f"/experiments/{seeded[0]['id']}"
    with stack[0].client(tokens["bob"]) as bob:
        refused = bob.patch(path, json={"name": "mine now"})
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Only alice or an admin may change this experiment."
    with stack[0].client(tokens["root"]) as root:
        assert root.patch(path, json={"name": "run 0"}).json()["name"] == "run 0"
    with stack[0].client(tokens["alice"]) as client:
        assert client.patch("/experiments/nope", json={}).status_code == 404


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"tags": ["x" * 65]}, ["body", "tags", 0]),
        ({"tags": [""]}, ["body", "tags", 0]),
        ({"tags": ["a\tb"]}, ["body", "tags", 0]),
        ({"tags": ["zero\u200bwidth"]}, ["body", "tags", 0]),
        ({"tags": [f"t{index}" for index in range(33)]}, ["body", "tags"]),
        ({"tags": "bn"}, ["body", "tags"]),
        ({"tags": None}, ["body", "tags"]),
        ({"name": "x" * 201}, ["body", "name"]),
        ({"name": "a\nb"}, ["body", "name"]),
        ({"notes": "a\x00b"}, ["body", "notes"]),
        ({"notes": "x" * 10_001}, ["body", "notes"]),
        ({"status": "succeeded"}, ["body", "status"]),
    ],
)
def test_patch_refuses_bad_labels_naming_the_field(
    alice: httpx.Client, seeded: list[dict[str, Any]], body: dict[str, Any], loc: list[Any]
) -> None:
    path = f"/experiments/{seeded[1]['id']}"
    assert error_of(alice.patch(path, json=body))["loc"] == loc
    assert alice.get(path).json() == seeded[1]


def test_tags_at_their_limits_are_kept(alice: httpx.Client) -> None:
    experiment_id = alice.post("/experiments", json=RUN).json()["id"]
    tags = ["x" * 64, *(f"t{index}" for index in range(31))]
    response = alice.patch(f"/experiments/{experiment_id}", json={"tags": tags})
    assert response.json()["tags"] == tags


def test_tags_added_at_once_by_many_are_all_kept(
    stack: tuple[Stack, Settings], tokens: dict[str, str]
) -> None:
    """Sixteen clients each add a tag to one experiment at the same moment (what sixteen
    ``convlab tag`` commands do): none is lost, as a read, then a write of the list, would."""
    running, _ = stack
    with running.client(tokens["alice"]) as client:
        experiment_id = client.post("/experiments", json=RUN).json()["id"]
        path = f"/experiments/{experiment_id}"
        assert client.patch(path, json={"tags": ["first"]}).json()["tags"] == ["first"]
    start = threading.Barrier(16)

    def add(tag: str) -> int:
        with running.client(tokens["alice"]) as client:
            start.wait()
            return client.patch(
                path, json={"add_tags": [tag], "remove_tags": ["first"]}
            ).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(add, [f"t{index}" for index in range(16)]))
    assert statuses == [200] * 16
    with running.client(tokens["alice"]) as client:
        assert sorted(client.get(path).json()["tags"]) == sorted(f"t{i}" for i in range(16))
        full = client.patch(path, json={"add_tags": [f"u{index}" for index in range(17)]})
        assert error_of(full)["loc"] == ["body", "add_tags"]
        assert "it would have 33 tags; an experiment holds 32" in error_of(full)["msg"]
        assert len(client.get(path).json()["tags"]) == 16


def test_list_filters_by_tags_all_of_them(
    alice: httpx.Client, seeded: list[dict[str, Any]]
) -> None:
    def having(*tags: str) -> list[str]:
        return [item["id"] for item in seeded[::-1] if set(tags) <= set(item["tags"])]

    assert listed(alice, tag="odd") == having("odd")
    assert listed(alice, tag=["even", "all"]) == having("even", "all") != []
    assert listed(alice, tag=["even", "odd"]) == []
    assert listed(alice, tag=["all", "all"]) == having("all")


def test_list_filters_by_dataset_text_and_spec_fields(
    alice: httpx.Client, seeded: list[dict[str, Any]]
) -> None:
    def where(check: Any) -> list[str]:
        return [item["id"] for item in seeded[::-1] if check(item["spec"])]

    mnist = where(lambda spec: spec["dataset"]["name"] == "mnist")
    assert listed(alice, dataset="mnist") == mnist != []
    sgd = where(lambda spec: spec["optimizer"]["name"] == "sgd")
    assert listed(alice, **{"spec.optimizer.name": "sgd"}) == sgd != []
    assert listed(alice, **{"spec.optimizer.name": "sgd", "dataset": "mnist"}) == []
    batch_norm = where(lambda spec: spec["model"]["batch_norm"])
    assert listed(alice, **{"spec.model.batch_norm": "true"}) == batch_norm != []
    assert len(listed(alice, **{"spec.model.batch_norm": "false"})) > len(seeded) - len(batch_norm)
    fast = where(lambda spec: spec["optimizer"]["learning_rate"] == 0.05)
    assert listed(alice, **{"spec.optimizer.learning_rate": "5e-2"}) == fast != []
    two = where(lambda spec: spec["training"]["epochs"] == 2)
    assert listed(alice, **{"spec.training.epochs": "2.0", "q": "RUN"}) == two != []
    assert listed(
        alice, **{"spec.training.early_stopping.monitor": "null", "tag": "seeded"}
    ) == ids(seeded[::-1])
    sized = where(lambda spec: spec["dataset"]["train_size"] is None)
    assert listed(alice, **{"spec.dataset.train_size": "null", "tag": "seeded"}) == sized != []
    assert listed(alice, q="note 3%") == [seeded[3]["id"]]
    assert listed(alice, q="_") == []  # LIKE's wildcards are plain characters


def test_list_sorts_and_pages_exactly_under_every_sort(
    alice: httpx.Client, seeded: list[dict[str, Any]]
) -> None:
    sorts: tuple[str, ...] = get_args(Sort)
    assert len(sorts) == 18
    for sort in sorts:
        expected = expected_order(seeded, sort)
        whole = alice.get("/experiments", params={"sort": sort, "tag": "seeded", "limit": 500})
        assert ids(whole.json()["items"]) == expected, sort
        assert listed(alice, sort=sort, tag="seeded", limit=2) == expected, sort
    for sort in ("-final.val_accuracy", "created_at", "best.loss"):  # among the others' runs
        paged = listed(alice, sort=sort, limit=2)
        assert [found for found in paged if found in ids(seeded)] == expected_order(seeded, sort)
        assert sorted(paged) == sorted(listed(alice, sort=sort, limit=500))


def test_list_refuses_bad_sorts_spec_paths_and_cursors_naming_the_parameter(
    alice: httpx.Client, seeded: list[dict[str, Any]]
) -> None:
    sort = error_of(alice.get("/experiments", params={"sort": "name"}))
    assert sort["loc"] == ["query", "sort"]
    assert "'-created_at'" in sort["msg"] and "'best.val_accuracy'" in sort["msg"]
    unknown = error_of(alice.get("/experiments", params={"spec.model.nope": "1"}))
    assert unknown["loc"] == ["query", "spec.model.nope"]
    assert "spec.model.nope is no spec field; use one of spec.preset," in unknown["msg"]
    assert "spec.optimizer.learning_rate" in unknown["msg"]
    not_a_leaf = error_of(
        alice.get("/experiments", params={"spec.training.early_stopping": "null"})
    )
    assert not_a_leaf["loc"] == ["query", "spec.training.early_stopping"]
    for path, value, expected in [
        ("spec.model.batch_norm", "yes", "true, false or null"),
        ("spec.model.dropout", "lots", "a number or null"),
        ("spec.model.dropout", "nan", "a number or null"),
    ]:
        error = error_of(alice.get("/experiments", params={path: value}))
        assert error["loc"] == ["query", path]
        assert error["msg"] == f"{path} takes {expected}"
    first = alice.get("/experiments", params={"sort": "-final.loss", "limit": 1}).json()
    newest = alice.get("/experiments", params={"limit": 1}).json()
    for sort, cursor in [
        ("final.loss", first["next_cursor"]),
        ("-created_at", first["next_cursor"]),
        ("-final.loss", newest["next_cursor"]),
    ]:
        error = error_of(alice.get("/experiments", params={"sort": sort, "cursor": cursor}))
        assert error["loc"] == ["query", "cursor"]


def test_cli_tags_notes_renames_and_lists(
    stack: tuple[Stack, Settings], tokens: dict[str, str], seeded: list[dict[str, Any]]
) -> None:
    running, _ = stack

    def convlab(*args: str, token: str = tokens["alice"]) -> subprocess.CompletedProcess[str]:
        env = running.env | {"CONVLAB_URL": running.url, "CONVLAB_TOKEN": token}
        command = [str(BIN / "convlab"), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    experiment_id = seeded[-1]["id"]
    added = convlab("tag", experiment_id, "cli", "bn")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"{experiment_id} tags: even, seeded, all, cli, bn"
    removed = convlab("tag", experiment_id, "even", "all", "nope", "--remove")
    assert removed.stdout.strip() == f"{experiment_id} tags: seeded, cli, bn"
    assert convlab("note", experiment_id, "Try a lower rate.").returncode == 0
    assert convlab("rename", experiment_id, "cli run").returncode == 0
    shown = convlab("show", experiment_id).stdout
    assert "cli run" in shown and "Try a lower rate." in shown and "seeded, cli, bn" in shown
    listed_ids = convlab("ls", "--tag", "cli", "--tag", "bn", "-q", "LOWER", "--sort", "created_at")
    assert listed_ids.returncode == 0, listed_ids.stderr
    assert experiment_id in listed_ids.stdout and seeded[0]["id"] not in listed_ids.stdout
    assert experiment_id in convlab("ls", "--dataset", "digits", "--limit", "100").stdout
    assert experiment_id not in convlab("ls", "--dataset", "mnist").stdout
    refused = convlab("tag", experiment_id, "x" * 65)
    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "body.add_tags.0: String should have at most 64 characters" in refused.stderr
    other = convlab("rename", experiment_id, "bob's", token=tokens["bob"])
    assert other.stderr.strip() == "Only alice or an admin may change this experiment."
    bad_sort = convlab("ls", "--sort", "name")
    assert (
        bad_sort.returncode == 1 and "query.sort: Input should be 'created_at'" in bad_sort.stderr
    )
