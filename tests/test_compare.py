"""Comparing any runs, end to end on real training: the table as csv and markdown, and their
test curves overlaid, one spec's seeds drawn as one mean ± std band; and the series styles
that keep many curves apart."""

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.epochs import EpochMetrics
from tests.pictures import PNG_SIGNATURE
from tests.services import Stack, running_stack, wait_for_status
from tests.test_cli import convlab
from views.plots import overlay_plot, series_styles
from views.report import COLUMNS, DIFFERENCE_HEADER

DIGITS = {"dataset": {"name": "digits"}, "training": {"epochs": 2, "batch_size": 64}}
TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("compare")) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as http:
        yield http


@pytest.fixture(scope="module")
def ids(client: httpx.Client, stack: Stack) -> list[str]:
    """Two seeds of one spec, then another spec: all ended."""
    bodies = [
        {**DIGITS, "name": "base", "seed": 0},
        {**DIGITS, "name": "base", "seed": 1},
        {**DIGITS, "name": "dropout", "preset": "dropout"},
    ]
    created = [client.post("/experiments", json=body).json()["id"] for body in bodies]
    for experiment_id in created:
        status = wait_for_status(client, experiment_id, TERMINAL)["status"]
        assert status == "succeeded", stack.log_tail()
    return created


@pytest.mark.slow
def test_compare_as_csv_has_a_row_per_id_with_each_column(
    client: httpx.Client, ids: list[str]
) -> None:
    response = client.get("/compare", params={"ids": ",".join(ids), "format": "csv"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(response.text))
    columns = ["id", "name", "status", *(key for key, _, _ in COLUMNS), *DIFFERENCE_HEADER]
    assert reader.fieldnames == columns
    rows = list(reader)
    assert [(row["id"], row["name"], row["status"]) for row in rows] == [
        (ids[0], "base", "succeeded"),
        (ids[1], "base", "succeeded"),
        (ids[2], "dropout", "succeeded"),
    ]
    for row in rows:
        final = client.get(f"/experiments/{row['id']}").json()["final"]
        assert float(row["test_accuracy"]) == final["val_accuracy"]
        assert float(row["epochs_run"]) == 2


@pytest.mark.slow
def test_compare_as_markdown_has_a_row_per_id(client: httpx.Client, ids: list[str]) -> None:
    response = client.get("/compare", params={"ids": ",".join(ids), "format": "markdown"})
    assert response.headers["content-type"].startswith("text/markdown")
    header, rule, *lines = response.text.splitlines()
    against = ["Test accuracy vs base (2 runs) (95% CI)", "p", "Seeds for 80% power"]
    titles = ["Id", "Name", "Status", *(title for _, title, _ in COLUMNS), *against]
    assert header == "| " + " | ".join(titles) + " |"
    assert rule.count("---") == len(titles)
    assert [line.split(" | ")[0] for line in lines] == [f"| {key}" for key in ids]


@pytest.mark.slow
def test_compare_plot_draws_one_band_for_the_seeds_of_one_spec(
    client: httpx.Client, ids: list[str]
) -> None:
    svg = client.get("/compare/plot.svg", params={"ids": ",".join(ids)})
    assert svg.headers["content-type"] == "image/svg+xml"
    assert ">base (2 runs)<" in svg.text
    assert ">dropout<" in svg.text
    assert svg.text.count('id="FillBetweenPolyCollection_') == 2  # one band in each panel
    png = client.get("/compare/plot.png", params={"ids": ",".join(ids)})
    assert png.content.startswith(PNG_SIGNATURE)


@pytest.mark.slow
def test_compare_plot_takes_at_most_50_known_ids(client: httpx.Client, ids: list[str]) -> None:
    many = ",".join(f"{index:032x}" for index in range(51))
    too_many = client.get("/compare/plot.svg", params={"ids": many})
    assert too_many.status_code == 422
    assert "at most 50 experiment ids" in too_many.json()["detail"][0]["msg"]
    assert client.get("/compare/plot.svg", params={"ids": f"{ids[0]},nope"}).status_code == 404


@pytest.mark.slow
def test_convlab_compare_prints_the_table_and_saves_the_plot(
    stack: Stack, ids: list[str], tmp_path: Path
) -> None:
    picture = tmp_path / "curves.svg"
    done = convlab(stack, "compare", *ids, "--format", "csv", "--plot", str(picture))
    assert done.returncode == 0, done.stderr
    assert [line.split(",")[0] for line in done.stdout.splitlines()[1:]] == ids
    assert ">base (2 runs)<" in picture.read_text()


def test_series_styles_keep_26_series_apart() -> None:
    styles = series_styles(26)
    assert len(set(styles)) == 26
    assert styles[:13] != [styles[0]] * 13
    assert styles[0][0] == styles[10][0] and styles[0][1] != styles[10][1]


def test_an_overlay_of_26_series_labels_each_outside_the_axes() -> None:
    run = [EpochMetrics(epoch, 1.0, 0.5, 1.0 / epoch, 0.5, 0.1) for epoch in (1, 2)]
    curves = [(f"variant {index}", [run]) for index in range(26)]
    svg = overlay_plot("many", curves, "svg").decode()
    assert all(f">variant {index}<" in svg for index in range(26))
    assert svg.count('<g id="legend_') == 1  # one legend, below both panels
    assert "FillBetweenPolyCollection" not in svg  # single runs: no band
