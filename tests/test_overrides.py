"""One way to apply overrides: dotted keys and a request's layers fold into one nested object in
any key order, applied over the preset (or a parent's spec) once; switching an optimizer starts
from its defaults but keeps every value the request gives for it, and a key the new optimizer
lacks is a 422 naming it. Pure functions first, then black-box HTTP against a running stack."""

import json
import re
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import optuna
import pytest
import typer
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from convlab_client.cli_spec import request_body
from core.config import Settings
from jobs.optuna_adapter import optuna_name
from models.errors import Loc, SpecError
from models.overrides import fold
from models.presets import PRESETS, resolve, resolve_over
from models.spec import OPTIMIZER_NAMES, SCHEDULE_TYPES, Adam, Momentum, fields_at
from models.studies import from_grid, from_variants, plan
from models.trials import trial_spec
from tests.services import Stack, running_stack, wait_for

ROOT = Path(__file__).parents[1]
RATE_FIRST_GRID = {"optimizer.learning_rate": [0.05, 0.002], "optimizer.name": ["sgd", "adam"]}
"""The issue's grid: the rate named before the optimizer; four distinct combinations."""
ALL_FOUR = {("sgd", 0.05), ("sgd", 0.002), ("adam", 0.05), ("adam", 0.002)}


def _error_locs(caught: pytest.ExceptionInfo[SpecError]) -> list[tuple[Any, ...]]:
    return [tuple(error["loc"]) for error in caught.value.errors]


def _at(spec: dict[str, Any], key: str) -> Any:
    value: Any = spec
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


# ---- folding ---------------------------------------------------------------------------------


def test_fold_of_dotted_keys_gives_one_object_in_either_order() -> None:
    rate_first = fold({"optimizer.learning_rate": 0.05, "optimizer.name": "sgd"})
    name_first = fold({"optimizer.name": "sgd", "optimizer.learning_rate": 0.05})
    assert rate_first == name_first == {"optimizer": {"learning_rate": 0.05, "name": "sgd"}}


def test_fold_of_layers_joins_objects_and_lets_the_later_layer_win() -> None:
    base = {"optimizer": {"name": "momentum", "learning_rate": 0.1}, "model": {"dropout": 0.5}}
    point = {"optimizer.learning_rate": 0.2, "model.l2": 0.01}
    assert fold(base, point, {"seed": 3}) == {
        "optimizer": {"name": "momentum", "learning_rate": 0.2},
        "model": {"dropout": 0.5, "l2": 0.01},
        "seed": 3,
    }
    assert fold({"a": {"x": 1}, "b": [1]}, {"a": 2, "b": [2, 3]}) == {"a": 2, "b": [2, 3]}


def test_fold_leaves_its_layers_unchanged() -> None:
    base = {"optimizer": {"name": "sgd"}}
    fold(base, {"optimizer.learning_rate": 0.3})
    assert base == {"optimizer": {"name": "sgd"}}


@pytest.mark.parametrize(
    "layer",
    [
        {"training.lr_schedule": None, "training.lr_schedule.type": "step"},
        {"training.lr_schedule.type": "step", "training.lr_schedule": None},
        {"optimizer": {"name": "sgd"}, "optimizer.name": "adam"},
    ],
)
def test_fold_of_a_layer_setting_a_field_twice_is_an_error_at_the_inner_key(
    layer: dict[str, Any],
) -> None:
    with pytest.raises(SpecError) as caught:
        fold(layer)
    (loc,) = _error_locs(caught)
    assert loc in {("training", "lr_schedule", "type"), ("optimizer", "name")}


# ---- applying once over the preset -------------------------------------------------------------


def test_resolve_of_a_rate_named_before_the_optimizer_keeps_the_rate() -> None:
    spec = resolve("base", {"optimizer.learning_rate": 0.05, "optimizer.name": "sgd"})
    assert spec.optimizer.model_dump() == {"name": "sgd", "learning_rate": 0.05}


def test_resolve_of_another_optimizer_starts_from_its_defaults() -> None:
    spec = resolve("adam", {"optimizer.name": "momentum", "optimizer.momentum": 0.5})
    assert spec.optimizer == Momentum(momentum=0.5)  # Adam's epsilon 1e-8 is not carried over


def test_resolve_of_a_key_the_new_optimizer_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(SpecError) as caught:
        resolve("momentum", {"optimizer.momentum": 0.5, "optimizer.name": "adam"})
    assert _error_locs(caught) == [("optimizer", "momentum")]


def test_resolve_of_another_schedule_type_keeps_the_requests_values_for_it() -> None:
    spec = resolve(
        "improved", {"training.lr_schedule.every": 3, "training.lr_schedule.type": "step"}
    )
    assert spec.training.lr_schedule is not None
    assert spec.training.lr_schedule.model_dump() == {"type": "step", "every": 3, "factor": 0.5}
    with pytest.raises(SpecError) as caught:
        resolve("improved", {"training": {"lr_schedule": {"warmup_epochs": 1, "type": "plateau"}}})
    assert _error_locs(caught) == [("training", "lr_schedule", "warmup_epochs")]


def test_resolve_over_a_parents_spec_switches_its_optimizer_keeping_the_given_rate() -> None:
    parent = resolve("adam", {"dataset": {"name": "digits"}}).model_dump(mode="json")
    spec = resolve_over(parent, {"optimizer": {"learning_rate": 0.05, "name": "sgd"}})
    assert spec.optimizer.model_dump() == {"name": "sgd", "learning_rate": 0.05}
    assert (spec.preset, spec.dataset.name) == ("adam", "digits")


# ---- studies and searches ----------------------------------------------------------------------


def test_a_grid_naming_the_rate_before_the_optimizer_plans_four_distinct_specs() -> None:
    runs = plan(from_grid(RATE_FIRST_GRID, "base", {}), [0])
    trained = {(run.spec.optimizer.name, run.spec.optimizer.learning_rate) for run in runs}
    assert trained == ALL_FOUR


def test_a_grid_key_the_chosen_optimizer_lacks_is_an_error_at_that_grid_key() -> None:
    grid = {"optimizer.momentum": [0.5], "optimizer.name": ["momentum", "adam"]}
    with pytest.raises(SpecError) as caught:
        plan(from_grid(grid, "base", {}), [0])
    (error,) = caught.value.errors
    assert tuple(error["loc"]) == ("grid", "optimizer.momentum")
    assert error["msg"].startswith('optimizer.momentum=0.5, optimizer.name="adam": ')


def test_a_variant_naming_another_optimizer_keeps_the_studys_base_rate() -> None:
    items = [{"name": "sgd", "optimizer": {"name": "sgd"}}, {"name": "adam"}]
    runs = plan(from_variants(items, "base", {"optimizer": {"learning_rate": 0.02}}), [0])
    assert [run.spec.optimizer.model_dump() for run in runs] == [
        {"name": "sgd", "learning_rate": 0.02},
        Adam(learning_rate=0.02).model_dump(),
    ]


def test_a_trial_point_in_the_readmes_key_order_trains_at_its_rate() -> None:
    point = {"optimizer.learning_rate": 0.00863, "model.dropout": 0.2, "optimizer.name": "sgd"}
    spec = trial_spec("base", {"dataset": {"name": "digits"}}, point, 3)
    assert (spec.optimizer.name, spec.optimizer.learning_rate) == ("sgd", 0.00863)
    assert (spec.model.dropout, spec.seed) == (0.2, 3)


def test_a_trial_point_with_a_key_its_optimizer_lacks_is_an_error_at_the_space_key() -> None:
    point = {"optimizer.momentum": 0.5, "optimizer.name": "adam"}
    with pytest.raises(SpecError) as caught:
        trial_spec("momentum", {}, point, 0)
    assert _error_locs(caught) == [("search", "space", "optimizer.momentum")]


# ---- the CLI's --set (a distribution of its own, folding the same way) -------------------------


def test_cli_sets_make_the_same_body_in_any_order() -> None:
    sets = ["optimizer.learning_rate=0.05", "optimizer.name=sgd", "model.dropout=0.3"]
    bodies = [request_body(order, {}) for order in (sets, sets[::-1])]
    assert (
        bodies[0]
        == bodies[1]
        == {
            "optimizer": {"learning_rate": 0.05, "name": "sgd"},
            "model": {"dropout": 0.3},
        }
    )


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["training=3", "training.epochs=2"], "training was set to a value, not keys"),
        (["training.epochs=2", "training=3"], "training was set to a value, not keys"),
        (["model.dropout=0.1", "model.dropout=0.2"], "model.dropout is set twice"),
    ],
)
def test_cli_sets_of_one_field_twice_are_a_usage_error_in_any_order(
    sets: list[str], message: str
) -> None:
    with pytest.raises(typer.BadParameter, match=message):
        request_body(sets, {})


# ---- the property: no given value is ever dropped ----------------------------------------------

OPTIMIZER_FIELDS = {
    key: st.floats(0.0, 0.99) for key in ("momentum", "rho", "beta_1", "beta_2")
} | {
    "learning_rate": st.floats(1e-5, 1.0),
    "epsilon": st.floats(1e-9, 1e-3),
    "weight_decay": st.floats(0.0, 0.1),
    "nesterov": st.booleans(),
    "name": st.sampled_from(OPTIMIZER_NAMES),
}
SCHEDULE_FIELDS = {
    "type": st.sampled_from(SCHEDULE_TYPES),
    "every": st.integers(1, 5),
    "factor": st.floats(0.1, 0.9),
    "warmup_epochs": st.integers(0, 2),
    "patience": st.integers(0, 3),
    "monitor": st.sampled_from(["val_loss", "val_accuracy", "loss", "accuracy"]),
}
OTHER_FIELDS = {"model.dropout": st.floats(0.0, 0.9), "training.epochs": st.integers(3, 20)}
OPTIMIZERS = {name: set(fields_at(("optimizer", name))) for name in OPTIMIZER_NAMES}
SCHEDULES = {kind: set(fields_at(("training", "lr_schedule", kind))) for kind in SCHEDULE_TYPES}
"""Each optimizer's (schedule type's) fields."""


@st.composite
def kind_keys(
    draw: st.DrawFn, section: str, kinds: dict[str, set[str]], fields: dict[str, Any], now: Any
) -> dict[str, Any]:
    """Keys of a union object (the optimizer, the schedule): maybe another kind, some of the
    final kind's fields and maybe one it lacks."""
    tag = "name" if "name" in fields else "type"
    drawn: dict[str, Any] = {}
    if draw(st.booleans()):
        now = drawn[tag] = draw(fields[tag])
    own = sorted(kinds[now] - {tag}) if now is not None else []
    keys = draw(st.lists(st.sampled_from(own), unique=True)) if own else []
    if draw(st.integers(0, 3)) == 0:  # now and then, a key of another kind
        keys.append(draw(st.sampled_from(sorted(set(fields) - {tag}))))
    drawn |= {key: draw(fields[key]) for key in keys}
    return {f"{section}.{key}": value for key, value in drawn.items()}


@st.composite
def overrides(draw: st.DrawFn) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A preset, the drawn keys in random order split into layers, and all of them."""
    preset = draw(st.sampled_from(sorted(PRESETS)))
    spec = PRESETS[preset].spec
    schedule = spec.training.lr_schedule
    chosen = draw(kind_keys("optimizer", OPTIMIZERS, OPTIMIZER_FIELDS, spec.optimizer.name))
    chosen |= draw(
        kind_keys("training.lr_schedule", SCHEDULES, SCHEDULE_FIELDS, schedule and schedule.type)
    )
    chosen |= {key: draw(value) for key, value in OTHER_FIELDS.items() if draw(st.booleans())}
    order = draw(st.permutations(list(chosen)))
    cuts = sorted(draw(st.lists(st.integers(0, len(order)), max_size=2)))
    bounds = [0, *cuts, len(order)]
    layers = [{key: chosen[key] for key in order[a:b]} for a, b in pairwise(bounds)]
    return preset, layers, {key: chosen[key] for key in order}


def _outcome(preset: str, layers: list[dict[str, Any]]) -> dict[str, Any] | list[Loc]:
    """The resolved spec, or the sorted locations of the errors."""
    try:
        return resolve(preset, *layers).model_dump(mode="json")
    except SpecError as exc:
        return sorted(tuple(error["loc"]) for error in exc.errors)


def _stray(section: Loc, kinds: dict[str, set[str]], kind: Any, chosen: dict[str, Any]) -> set[Loc]:
    """Where the given keys that the object's final kind lacks are."""
    if kind is None:
        return set()
    paths = [tuple(key.split(".")) for key in chosen]
    return {path for path in paths if path[:-1] == section and path[-1] not in kinds[kind]}


@examples(max_examples=400, deadline=None)
@given(overrides(), st.data())
def test_every_given_value_is_in_the_resolved_spec_or_an_error_names_it(
    drawn: tuple[str, list[dict[str, Any]], dict[str, Any]], data: st.DataObject
) -> None:
    preset, layers, chosen = drawn
    shuffled = data.draw(st.permutations(list(chosen)))
    outcome = _outcome(preset, layers)
    assert _outcome(preset, [{key: chosen[key] for key in shuffled}]) == outcome  # any order
    base = PRESETS[preset].spec
    schedule = chosen.get("training.lr_schedule.type", base.training.lr_schedule)
    stray = _stray(
        ("optimizer",), OPTIMIZERS, chosen.get("optimizer.name", base.optimizer.name), chosen
    ) | _stray(
        ("training", "lr_schedule"),
        SCHEDULES,
        getattr(schedule, "type", schedule),
        chosen,
    )
    if isinstance(outcome, dict):
        for key, value in chosen.items():
            assert _at(outcome, key) == value, key
        assert not stray
        return
    paths = [tuple(key.split(".")) for key in chosen]
    for loc in outcome:  # each error is about a given key (or the object holding it)
        assert any(loc[: len(path)] == path or path[: len(loc)] == loc for path in paths), loc
    assert stray <= set(outcome)  # each key its optimizer or schedule lacks is named
    if not stray:
        assert all(loc[0] != "optimizer" for loc in outcome), outcome


# ---- over HTTP, against a running stack (one API, one worker, SQLite) ---------------------------

TERMINAL = {"succeeded", "failed", "cancelled"}
SMALL = {"dataset": {"name": "digits", "train_size": 400}, "training": {"epochs": 1}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("overrides")) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client() as client:
        yield client


def _posted(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def _refused_at(client: httpx.Client, path: str, body: dict[str, Any]) -> list[list[Any]]:
    response = client.post(path, json=body)
    assert response.status_code == 422, response.text
    return [error["loc"] for error in response.json()["detail"]]


@pytest.mark.slow
def test_a_grid_naming_the_rate_before_the_optimizer_stores_four_distinct_specs(
    client: httpx.Client,
) -> None:
    study = _posted(client, "/studies", {**SMALL, "grid": RATE_FIRST_GRID})
    specs = [client.get(f"/experiments/{i}").json()["spec"] for i in study["experiment_ids"]]
    assert client.post(f"/studies/{study['id']}/cancel").is_success  # specs suffice
    stored = {(spec["optimizer"]["name"], spec["optimizer"]["learning_rate"]) for spec in specs}
    assert stored == ALL_FOUR


@pytest.mark.slow
def test_a_key_the_chosen_optimizer_lacks_is_a_422_naming_it_wherever_it_is_given(
    client: httpx.Client,
) -> None:
    momentum = {**SMALL, "preset": "momentum"}
    experiment = {**momentum, "optimizer": {"momentum": 0.5, "name": "adam"}}
    assert _refused_at(client, "/experiments", experiment) == [["body", "optimizer", "momentum"]]
    grid = {**momentum, "grid": {"optimizer.momentum": [0.5], "optimizer.name": ["adam"]}}
    assert _refused_at(client, "/studies", grid) == [["body", "grid", "optimizer.momentum"]]
    choices = [{"type": "categorical", "choices": [value]} for value in (0.5, "adam")]
    space = dict(zip(["optimizer.momentum", "optimizer.name"], choices, strict=True))
    search = {**momentum, "search": {"space": space, "n_trials": 1, "sampler": "grid"}}
    assert _refused_at(client, "/studies", search) == [
        ["body", "search", "space", "optimizer.momentum"]
    ]
    assert client.get("/studies").json()["items"][0]["kind"] == "grid"  # none stored since


@pytest.mark.slow
def test_a_rerun_switching_the_optimizer_keeps_the_rate_it_gives(client: httpx.Client) -> None:
    parent = _posted(client, "/experiments", {**SMALL, "preset": "adam"})
    assert client.post(f"/experiments/{parent['id']}/cancel").is_success
    change = {"from": parent["id"], "optimizer": {"learning_rate": 0.03, "name": "momentum"}}
    rerun = _posted(client, "/experiments", change)
    assert client.post(f"/experiments/{rerun['id']}/cancel").is_success
    assert rerun["spec"]["optimizer"] == Momentum(learning_rate=0.03).model_dump(mode="json")
    stray = {"from": parent["id"], "optimizer": {"beta_1": 0.8, "name": "sgd"}}
    assert _refused_at(client, "/experiments", stray) == [["body", "optimizer", "beta_1"]]


def _readme_search() -> dict[str, Any]:
    """The study the README's "Searching with Optuna" section submits, keys in its order."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Searching with Optuna") :]
    start = section.index("```json\n") + len("```json\n")
    block = section[start : section.index("\n```", start)]
    body: dict[str, Any] = json.loads(block)
    return body


def _labelled(name: str) -> tuple[int, dict[str, str]]:
    """A trial's number and its parameters as its name shows them ("trial 2: key=value, ...")."""
    match = re.fullmatch(r"trial (\d+): (.*)", name)
    assert match, name
    pairs = (pair.split("=", 1) for pair in match.group(2).split(", "))
    return int(match.group(1)), {key: value for key, value in pairs}


@pytest.mark.slow
def test_the_readmes_search_in_its_key_order_trains_each_trial_at_its_sampled_rate(
    client: httpx.Client, stack: Stack
) -> None:
    body = _readme_search()
    keys = list(body["search"]["space"])
    assert keys.index("optimizer.learning_rate") < keys.index("optimizer.name")  # the bug's order
    body["dataset"] |= {"train_size": 400}
    body["training"] |= {"epochs": 2}
    body["search"] |= {"n_trials": 3}
    study = _posted(client, "/studies", body)

    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = client.get(f"/studies/{study['id']}").json()
        return found if found["status"] in TERMINAL else None

    done = wait_for(ended, timeout=300, what="the README's search to end")
    assert done["status"] == "succeeded", stack.log_tail()
    url = Settings(home=Path(stack.env["CONVLAB_HOME"])).resolved_database_url
    recorded = optuna.load_study(study_name=optuna_name(study["id"]), storage=url).trials
    optuna_params = {trial.number: trial.params for trial in recorded}  # optuna-dashboard's view
    assert len(done["experiment_ids"]) == len(optuna_params) == 3
    for experiment_id in done["experiment_ids"]:
        experiment = client.get(f"/experiments/{experiment_id}").json()
        number, shown = _labelled(experiment["name"])
        params, spec = optuna_params[number], experiment["spec"]
        assert list(shown) == list(params) == keys
        rate = spec["optimizer"]["learning_rate"]
        assert rate == params["optimizer.learning_rate"]
        assert rate == pytest.approx(float(shown["optimizer.learning_rate"]), rel=5e-3)
        assert spec["optimizer"]["name"] == params["optimizer.name"] == shown["optimizer.name"]
        assert spec["model"]["dropout"] == params["model.dropout"]
        history = client.get(f"/experiments/{experiment_id}/history").json()["epochs"]
        assert history[0]["learning_rate"] == pytest.approx(rate, rel=1e-6)
