"""A recipe defined here, outside campaign/, runs through the same launch, status and resume as
the built-in ones: the registry is the only thing that knows it."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field

from campaign.cli import main
from campaign.keys import task_key
from campaign.launch import launch
from campaign.recipe import Recipe, register
from campaign.spec import CampaignSpec, RecipeSpec, load_spec
from campaign.stage import Stage, WorkItem
from storage import CampaignStore
from storage.ledger import DONE
from storage.tables import columnar
from tasks.outcome import run_each
from tests.conftest import committed

ROOT = Path(__file__).resolve().parents[1]

SQUARES = columnar("squares", "squares", "square", (("key", "str"), ("n", "i8"), ("square", "i8")))


def square(n: int, delay_s: float) -> int:
    time.sleep(delay_s)
    return n * n


def square_batch(keys, numbers, delay_s):
    return run_each(square, keys, numbers, delay_s)


def square_rows(store, items, outcomes):
    return {SQUARES.name: {"key": np.array([i.key for i in items], dtype=object),
                           "n": np.array([i.payload for i in items]),
                           "square": np.array([o.value for o in outcomes])}}


class SquaresSpec(RecipeSpec):
    kind: Literal["squares"] = "squares"
    count: int = Field(..., ge=1)
    delay_s: float = 0.0
    batch_size: int = 2


@register
class SquaresRecipe(Recipe):
    kind = "squares"
    spec = SquaresSpec
    tables = (SQUARES,)

    def plan(self, spec: CampaignSpec) -> list[Stage]:
        recipe = spec.recipe
        items = [WorkItem(task_key("square", 1, {"n": n}), n) for n in range(recipe.count)]
        return [Stage("squares", items, square_batch, {"delay_s": recipe.delay_s}, square_rows, recipe.batch_size)]

    def status(self, store) -> dict:
        return {"sum_of_squares": int(store.read(SQUARES, ["square"])["square"].sum())}

    def format_status(self, status: dict) -> list[str]:
        return [f"sum of squares so far: {status['sum_of_squares']}"]


def _spec(directory: Path, count: int, delay_s: float = 0.0) -> Path:
    path = directory / "squares.yaml"
    path.write_text(yaml.safe_dump({"name": "squares", "store": str(directory / "store"),
                                    "scheduler": {"local": {"workers": 2}},
                                    "recipe": {"kind": "squares", "count": count, "delay_s": delay_s}}))
    return path


def test_a_recipe_registered_outside_the_campaign_package_launches_resumes_and_reports(tmp_path, client, capsys):
    spec = load_spec(_spec(tmp_path, 6))
    assert isinstance(spec.recipe, SquaresSpec)
    report = launch(spec, client=client, progress=False, say=lambda _: None)
    assert [(s.stage, s.done, s.failed) for s in report.stages] == [("squares", 6, 0)]
    bigger = load_spec(_spec(tmp_path, 9))
    report = launch(bigger, client=client, progress=False, say=lambda _: None)
    assert (report.stages[0].skipped, report.stages[0].done) == (6, 3), "a relaunch runs only the new items"
    with CampaignStore.open(tmp_path / "store") as store:
        rows = store.read(SQUARES)
    assert sorted(rows["square"].tolist()) == [n * n for n in range(9)]
    capsys.readouterr()
    assert main(["status", str(tmp_path / "store"), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["recipe"] == "squares" and status["sum_of_squares"] == sum(n * n for n in range(9))
    assert status["stages"]["squares"] == {"done": 9, "failed": 0, "pending": 0}
    assert main(["status", str(tmp_path / "store")]) == 0
    assert "sum of squares so far: 204" in capsys.readouterr().out


def test_unknown_recipe_kind_names_the_known_ones(tmp_path):
    from campaign.errors import SpecError

    path = _spec(tmp_path, 2)
    path.write_text(path.read_text().replace("kind: squares", "kind: cubes"))
    try:
        load_spec(path)
    except SpecError as exc:
        assert "recipe: Value error, unknown recipe kind 'cubes'" in str(exc)
        assert "active_learning" in str(exc) and "label" in str(exc) and "squares" in str(exc)
    else:
        raise AssertionError("an unknown kind must be refused")


def _launch_process(spec_path: Path) -> subprocess.Popen:
    # the recipe is registered by importing this module, as a plug-in's module would be
    code = ("import sys, tests.test_recipe_interface; from campaign.cli import main; "
            f"sys.exit(main(['launch', {str(spec_path)!r}, '--no-progress']))")
    return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_killed_launch_of_a_plugged_in_recipe_resumes_with_every_item_once(tmp_path):
    n = 40
    spec_path = _spec(tmp_path, n, delay_s=0.2)
    proc = _launch_process(spec_path)
    deadline = time.monotonic() + 120
    while committed(tmp_path / "store").get("squares", 0) < 6:
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "no squares committed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = committed(tmp_path / "store")["squares"]
    assert at_kill < n
    again = _launch_process(spec_path)
    assert again.wait(timeout=180) == 0, again.stderr.read()
    with CampaignStore.open(tmp_path / "store") as store:
        squares = store.read(SQUARES)
        ledger = store.read("ledger", ["key", "status"])
    assert sorted(squares["n"].tolist()) == list(range(n)), "every item exactly once, none lost"
    done = Counter(str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == DONE)
    assert len(done) == n and set(done.values()) == {1}, "no finished item was run again"

