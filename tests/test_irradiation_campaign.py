"""The ``irradiation`` recipe through ``campaign launch``: a killed driver loses and repeats no
impact, adaptive rounds stop at their cap, yields land in the store, a potential without a
short-range repulsion is refused before anything is written."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ase import Atoms

from campaign.errors import SpecError
from campaign.recipes.irradiation_tables import IRR_IMPACTS, IRR_YIELDS, per_impact_counts
from campaign.spec import load_spec
from storage import CampaignStore
from storage.errors import StoreError
from tasks.nnp.batch import AtomsBatch
from tasks.potential import load_potential
from tests.conftest import page_data

POTENTIAL = Path(__file__).parent / "data" / "mos2_dptab_small.pt"
CLI = [sys.executable, "-m", "campaign.cli"]


def irradiation_spec(directory: Path, potential: Path = POTENTIAL, **recipe) -> Path:
    spec = {"name": "irr", "store": str(directory / "store"), "scheduler": {"local": {"workers": 2}},
            "recipe": {"kind": "irradiation", "potential": {"files": [str(potential)]}, "target": {"repeat": 4},
                       "ions": ["S", "Mo"], "energies_eV": [40.0, 150.0], "impacts": 2, "impacts_per_task": 2,
                       "dynamics": {"end_time_ps": 0.04, "temperature_K": 0.0}, **recipe}}
    path = directory / "irr.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _launch(spec: Path) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "launch", str(spec), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _impacts_committed(store_dir: Path) -> int:
    try:
        with CampaignStore.open(store_dir) as store:
            return store.length(IRR_IMPACTS) if IRR_IMPACTS.name in store.tables else 0
    except StoreError:
        return 0


@pytest.mark.slow
def test_a_killed_driver_loses_and_repeats_no_impact(tmp_path):
    spec = irradiation_spec(tmp_path)
    store_dir = tmp_path / "store"
    proc = _launch(spec)
    deadline = time.monotonic() + 600
    while _impacts_committed(store_dir) < 2:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no impact committed in time"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    at_kill = _impacts_committed(store_dir)
    assert at_kill < 8, "the kill must land mid-ensemble"

    again = _launch(spec)
    out, err = again.communicate(timeout=900)
    assert again.returncode == 0, err[-3000:]
    with CampaignStore.open(store_dir) as store:
        impacts = store.read(IRR_IMPACTS)
        plan = {str(k) for k in store.read("plan", ["key"])["key"]}
        ledger = store.read("ledger", ["key", "status"])
        yields = store.read(IRR_YIELDS)
    keys = [str(k) for k in impacts["key"]]
    assert len(keys) == len(set(keys)) == 8 and set(keys) == plan, "every impact exactly once"
    done = Counter(str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == "done")
    assert set(done.values()) == {1}
    assert sorted(Counter(zip(impacts["ion"], impacts["energy_eV"])).values()) == [2] * 4
    assert sorted(impacts["impact"][impacts["ion"] == "S"].tolist()) == [0, 0, 1, 1]
    # yields: one row per (ion, energy, species, layer), the mean that of the per-impact counts
    totals = (yields["species"] == "all") & (yields["layer"] == "all")
    assert totals.sum() == 4 and set(yields["species"]) == {"all", "Mo", "S"}
    for ion, energy, mean in zip(yields["ion"][totals], yields["energy_eV"][totals], yields["mean"][totals]):
        mine = (impacts["ion"] == ion) & (impacts["energy_eV"] == energy)
        assert mean == pytest.approx(impacts["sputtered"][mine].mean())
        assert yields["low"][totals].min() >= 0

    # the campaign page's yields: each point's mean and count from the impacts table
    shown = page_data(store_dir)["irradiation-yields"]["yields"]
    points = [k for k, s in enumerate(shown["species"]) if s == "all"]
    assert len(points) == 4
    for k in points:
        mine = (impacts["ion"] == shown["ion"][k]) & (impacts["energy_eV"] == shown["energy_eV"][k])
        assert shown["impacts"][k] == mine.sum()
        assert shown["mean"][k] == pytest.approx(impacts["sputtered"][mine].mean())

    status = subprocess.run([*CLI, "status", str(store_dir)], capture_output=True, text=True, check=True).stdout
    assert "impacts" in status and "Y all" in status
    report = subprocess.run([*CLI, "report", str(store_dir)], capture_output=True, text=True)
    assert report.returncode == 0, report.stderr
    assert (store_dir / "report" / "yields.png").stat().st_size > 10_000
    assert (store_dir / "report" / "damage.png").stat().st_size > 10_000


@pytest.mark.slow
def test_adaptive_rounds_add_impacts_up_to_the_cap(tmp_path):
    """A cap (5) below the statistics' minimum of 10 impacts: no target can be met, so rounds are
    added until the cap and stop there (the stopping rule itself: tests/test_irradiation_statistics.py)."""
    spec = irradiation_spec(tmp_path, ions=["S"], energies_eV=[40.0], impacts=2, target_relative_ci=0.05,
                            max_impacts=5)
    run = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    with CampaignStore.open(tmp_path / "store") as store:
        impacts = store.read(IRR_IMPACTS)
        stages = set(store.read("ledger", ["stage"])["stage"].tolist())
        counts = per_impact_counts(store)
    assert sorted(impacts["impact"].tolist()) == list(range(5))
    assert {"irradiation-impacts", "irradiation-impacts-round2"} <= stages
    assert len(counts[("S", 40.0)][("all", "all")]) == 5


def test_a_potential_without_short_range_repulsion_is_refused(tmp_path):
    blended = load_potential(POTENTIAL)
    bare = tmp_path / "bare.pt"
    blended.inner.save(bare)  # the same network without its ZBL blend
    spec = irradiation_spec(tmp_path, potential=bare)
    run = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "no short-range repulsion" in run.stderr and "committee.repulsion" in run.stderr, run.stderr
    assert not (tmp_path / "store").exists(), "nothing written"


def test_an_irradiation_spec_with_bad_values_names_them(tmp_path):
    for recipe, words in (({"energies_eV": [10.0, -5.0]}, "energies"), ({"ions": ["Xx"]}, "unknown element"),
                          ({"impacts": 50, "max_impacts": 10}, "max_impacts"),
                          ({"target": {"repeat": 4, "vacuum_A": 10.0}}, "vacuum_A")):
        with pytest.raises(SpecError, match=words):
            load_spec(irradiation_spec(tmp_path, **recipe))


def test_the_potential_of_an_active_learning_store_is_found_by_iteration_and_member(tmp_path):
    """An AL store's model files, as the active-learning recipe writes them, and its al_models rows."""
    from campaign.recipes.active_learning import AL_MODELS
    from campaign.recipes.potential_source import PotentialSource, potential_files

    store = CampaignStore.open_for_writing(tmp_path / "al", "al", [AL_MODELS])
    rows = {c.name: [] for c in AL_MODELS.columns}
    files = {}
    for iteration in (0, 1):
        for member in (0, 1):
            model = load_potential(POTENTIAL)
            with torch.no_grad():  # a model of its own per (iteration, member)
                next(model.inner.parameters()).add_(0.01 * (2 * iteration + member))
            path = f"models/iter-{iteration:03d}/member-{member}.pt"
            (tmp_path / "al" / path).parent.mkdir(parents=True, exist_ok=True)
            model.save(tmp_path / "al" / path)
            files[iteration, member] = (tmp_path / "al" / path).read_bytes()
            for column in AL_MODELS.columns:
                rows[column.name].append({"key": f"k{iteration}{member}", "iteration": iteration, "member": member,
                                          "path": path}.get(column.name, column.fill_value))
    with store:
        store.append({AL_MODELS.name: {k: np.array(v, dtype=AL_MODELS.column(k).numpy_dtype)
                                       for k, v in rows.items()}})
    assert len(set(files.values())) == 4
    last = potential_files(PotentialSource(store=tmp_path / "al"))
    assert last.models == (files[1, 0],)
    assert potential_files(PotentialSource(store=tmp_path / "al", iteration=0, member=1)).models == (files[0, 1],)
    committee = potential_files(PotentialSource(store=tmp_path / "al", iteration=0, member="committee"))
    assert committee.models == (files[0, 0], files[0, 1]) and committee.load().__class__.__name__ == "Committee"
    with pytest.raises(Exception, match="iterations \\[0, 1\\], not 4"):
        potential_files(PotentialSource(store=tmp_path / "al", iteration=4))
    dimer = AtomsBatch.from_atoms([Atoms("MoS", positions=[[0, 0, 0], [0, 0, 2.4]], cell=[10] * 3)])
    assert torch.isfinite(last.load()(dimer)["energy"]).all()
