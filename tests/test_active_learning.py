"""The active-learning recipe end to end on a real LocalCluster with real tblite labels."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from campaign.recipes.active_learning import write_figures
from campaign.launch import launch
from campaign.spec import load_spec
from storage import CampaignStore
from storage.errors import StoreError
from storage.frames import iter_frames
from storage.ledger import latest_status

MOS2_2X2 = {"prototype": "mx2", "formula": "MoS2", "a_A": 3.19, "supercell": [2, 2, 1]}


def al_spec(directory: Path, *, iterations: int = 2, quorum: float = 1.0, labeler: dict | None = None,
            candidates: int = 3) -> Path:
    """Tiny but complete: 12-atom MoS2 cells, a committee of 2, a wide trust window so that every
    iteration has candidates to label."""
    spec = {
        "name": "al", "store": str(directory / "store"),
        "scheduler": {"local": {"workers": 2}},
        "recipe": {
            "kind": "active_learning", "seed": 3,
            "initial": {"structures": [dict(MOS2_2X2, count=8, max_strain=0.03, rattle_A=0.05, seed=3)],
                        "defects": [{"kind": "vacancy", "species": "S"}], "isolated_atoms": True},
            "committee": {"members": 2, "hidden": [8], "radial_cutoff_A": 4.5, "angular_cutoff_A": 3.5,
                          "max_epochs": 12, "patience_epochs": 12, "frames_per_step": 4},
            "explore": {"structures": [MOS2_2X2], "temperatures_K": [600], "strains": [0.0, 0.03], "steps": 20,
                        "frame_every": 5, "relax": False},
            "trust_lo": 0.0, "trust_hi": 1000.0, "max_candidates": candidates, "min_separation": 5,
            "label_quorum": quorum, "max_iterations": iterations, "batch_size": 1,
        },
    }
    if labeler:
        spec["labeler"] = labeler
    path = directory / "al.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def frame_keys(store_dir: Path) -> list[str]:
    with CampaignStore.open(store_dir) as store:
        return [f.key for f in iter_frames(store)]


def test_two_iterations_store_every_stage_and_add_labeled_candidates(tmp_path, client):
    spec = load_spec(al_spec(tmp_path))
    launch(spec, client=client, progress=False, say=lambda _: None)
    with CampaignStore.open(spec.store) as store:
        iterations = store.read("al_iterations")
        models = store.read("al_models")
        explored = store.read("al_explored", ["iteration", "deviation_eV_per_A"])
        sources = [f.source for f in iter_frames(store)]
        status = latest_status(store)
    assert iterations["iteration"].tolist() == [0, 1]
    assert iterations["n_selected"].tolist() == [3, 3]
    # the candidates of iteration 0 were labeled and trained on in iteration 1
    assert sources.count("al-iter0") == 3 and sources.count("al-iter1") == 3
    assert iterations["n_training_frames"][1] == iterations["n_training_frames"][0] + 3
    assert sorted(models["iteration"].tolist()) == [0, 0, 1, 1]
    for path, sha in zip(models["path"], models["sha256"]):
        assert hashlib.sha256((Path(spec.store) / str(path)).read_bytes()).hexdigest() == sha
    assert set(explored["iteration"].tolist()) == {0, 1} and np.all(explored["deviation_eV_per_A"] > 0)
    assert iterations["deviation_histogram"].sum(axis=1).tolist() == iterations["n_explored"].tolist()
    assert all(s == "done" for s, _ in status.values())
    (tmp_path / "report").mkdir()
    with CampaignStore.open(spec.store) as store:
        figures = write_figures(store, tmp_path / "report")
    assert sorted(p.name for p in figures) == ["convergence.png", "deviation_histograms.png", "parity_energy.png",
                                               "parity_forces.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in figures)


@pytest.mark.slow
def test_slow_labels_join_the_next_dataset_and_training_starts_at_quorum(tmp_path, client):
    labeler = {"kind": "ase", "calculator_class": "tests.slow_labeler:SometimesSlowTBLite",
               "parameters": {"delay_s": 12.0, "every": 2}}
    spec = load_spec(al_spec(tmp_path, iterations=3, quorum=0.5, labeler=labeler, candidates=4))
    start = time.monotonic()
    launch(spec, client=client, progress=False, say=lambda _: None)
    with CampaignStore.open(spec.store) as store:
        it = store.read("al_iterations")
        iter0_frames = [f for f in iter_frames(store) if f.source == "al-iter0"]
    n_initial = int(it["n_training_frames"][0])
    # training of iteration 1 started before every label of iteration 0 was in ...
    assert it["n_labeled_before_next"][0] < it["n_selected"][0]
    assert it["n_training_frames"][1] < n_initial + it["n_selected"][0]
    # ... and the late ones joined a later dataset: nothing was lost
    assert len(iter0_frames) == it["n_selected"][0]
    assert it["n_training_frames"][2] >= n_initial + it["n_selected"][0]
    assert time.monotonic() - start > 12.0  # the slow labels really were slow


def _launch_process(spec_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "campaign.cli", "launch", str(spec_path), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_until(store_dir: Path, condition, proc: subprocess.Popen, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with CampaignStore.open(store_dir) as store:
                if condition(store):
                    return
        except StoreError:  # not created yet, or being created
            pass
        assert proc.poll() is None, "the campaign finished before the stage to interrupt"
        time.sleep(0.2)
    raise AssertionError("stage not reached")


@pytest.mark.slow
def test_kill_at_three_stages_and_relaunch_gives_the_uninterrupted_dataset(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    ref_spec = al_spec(reference)
    subprocess.run([sys.executable, "-m", "campaign.cli", "launch", str(ref_spec), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    expected = sorted(frame_keys(reference / "store"))

    run = tmp_path / "run"
    run.mkdir()
    spec_path = al_spec(run)
    store_dir = run / "store"
    stages = [
        # during training of iteration 0: the initial labels are in, no model yet
        lambda s: s.length("frames") >= 11 and s.length("al_models") == 0,
        # during exploration of iteration 1
        lambda s: s.length("al_models") == 4 and s.length("al_iterations") == 1,
        # during labeling of iteration 1's candidates
        lambda s: any(f.source == "al-iter1" for f in iter_frames(s)),
    ]
    for condition in stages:
        proc = _launch_process(spec_path)
        _wait_until(store_dir, condition, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-m", "campaign.cli", "launch", str(spec_path), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    keys = frame_keys(store_dir)
    assert len(keys) == len(set(keys)), "a structure was labeled twice"
    assert sorted(keys) == expected
    with CampaignStore.open(store_dir) as store:
        assert store.read("al_iterations")["iteration"].tolist() == [0, 1]
        models = store.read("al_models")
    assert len(models["key"]) == len(set(models["key"].tolist())) == 4  # no model trained twice
    with CampaignStore.open(reference / "store") as store:
        assert sorted(store.read("al_models")["sha256"].tolist()) == sorted(models["sha256"].tolist())


def test_gpu_work_is_tagged_when_the_cluster_has_gpus(tmp_path):
    from campaign.recipes.active_learning import explore_stage, train_stage

    path = al_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["scheduler"] = {"kind": "slurm", "slurm": {"queue": "gpu", "cores": 4, "processes": 2, "memory": "8GB",
                                                    "gpus_per_job": 2}}
    path.write_text(yaml.safe_dump(raw))
    spec = load_spec(path)
    gpu = spec.scheduler.has_gpus
    assert gpu and not spec.with_scheduler("local").scheduler.has_gpus
    train = train_stage(spec, 0, [], ("Mo", "S"), None, gpu=gpu)
    explore = explore_stage(spec, 0, [b"model"] * 2, [], gpu=gpu)
    assert dict(train.resources) == {"GPU": 1} and dict(explore.resources) == {"GPU": 1}
    assert train_stage(spec, 0, [], ("Mo", "S"), None, gpu=False).resources is None


@pytest.mark.parametrize("gpus", [0, 1])
def test_a_cluster_passed_in_is_asked_whether_its_workers_have_gpus(gpus):
    from distributed import Client, LocalCluster

    from schedulers.cluster import RunningCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      resources={"GPU": gpus} if gpus else None) as cluster, Client(cluster) as client:
        assert RunningCluster.external(client).has_gpus == bool(gpus)


@pytest.mark.parametrize("name", ["al_mos2.yaml", "al_crs.yaml"])
def test_examples_are_valid_specs_with_their_initial_data(name):
    from campaign.recipes.active_learning import initial_structures
    from campaign.recipes.structures import load_structures

    spec = load_spec(Path(__file__).parent.parent / "examples" / name)
    structures = initial_structures(spec.recipe, load_structures(list(spec.recipe.initial.structures)),
                                    load_structures(list(spec.recipe.explore.structures)))
    assert len(structures) >= 16 and spec.recipe.committee.members == (4 if "mos2" in name else 2)


def test_trust_window_must_be_ordered(tmp_path):
    from campaign.errors import SpecError

    path = al_spec(tmp_path)
    path.write_text(path.read_text().replace("trust_lo: 0.0", "trust_lo: 2000.0"))
    with pytest.raises(SpecError, match="trust_lo"):
        load_spec(path)


def test_fingerprints_of_a_batch_equal_those_of_each_structure():
    """Per-element descriptor means, batched in chunks, equal one structure at a time; an
    element a structure lacks gets zeros."""
    from tasks.active.select import structure_fingerprints
    from tasks.nnp.descriptors import DescriptorSettings
    from tasks.nnp.model import BehlerParrinello, ModelSettings
    from tests.conftest import rattled_sheets_and_one_without_mo

    model = BehlerParrinello(ModelSettings(DescriptorSettings(elements=("Mo", "S")), hidden=(8,)))
    structures = rattled_sheets_and_one_without_mo(5)  # the last one has no Mo left
    batched = structure_fingerprints(model, structures, chunk=4)
    one_by_one = np.concatenate([structure_fingerprints(model, [s]) for s in structures])
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-12, atol=1e-12)
    per_element = batched[-1].reshape(2, -1)  # element order of the model: S, Mo
    mo = model.settings.descriptor.elements.index("Mo")
    assert np.all(per_element[mo] == 0) and np.any(per_element[1 - mo] != 0)
    assert len(set(map(tuple, np.round(batched[:5], 8)))) == 5  # rattled copies differ


@pytest.mark.slow
def test_dimer_table_repulsion_is_scanned_stored_and_trained_in(tmp_path, client):
    """committee.repulsion kind dimer_table: the labeler's dimer curves are a keyed stage whose
    table is stored, and the members are trained, saved and explored as DP-Tab blends of it."""
    from tasks.nnp.repulsion import Blended
    from tasks.potential import load_potential

    path = al_spec(tmp_path, iterations=1)
    raw = yaml.safe_load(path.read_text())
    raw["recipe"]["committee"]["repulsion"] = {"kind": "dimer_table", "r_inner_A": 1.0, "r_outer_A": 1.2}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    spec = load_spec(path)
    launch(spec, client=client, progress=False, say=lambda _: None)
    with CampaignStore.open(spec.store) as store:
        curves = store.read("al_repulsion")
        models = store.read("al_models", ["path"])
        explored = store.length("al_explored")
        status = latest_status(store)
    pairs = sorted(zip(curves["element_a"].tolist(), curves["element_b"].tolist()))
    assert pairs == sorted([("S", "S"), ("S", "Mo"), ("Mo", "Mo")])  # every pair, elements by atomic number
    assert all(s == "done" for s, _ in status.values()) and explored > 0
    for p in models["path"]:
        model = load_potential(Path(spec.store) / str(p))
        assert isinstance(model, Blended) and model.r_inner_A == 1.0 and model.r_outer_A == 1.2
        table = model.repulsion.table
        for a, b, energy in zip(curves["element_a"], curves["element_b"], curves["energy_eV"]):
            row = table.pair_index(table.elements.index(str(a)), table.elements.index(str(b)))
            np.testing.assert_allclose(table.energy_eV[row], json.loads(str(energy)))


@pytest.mark.slow
def test_a_failed_dimer_scan_stops_the_loop_with_one_line_and_exit_1(tmp_path):
    """tblite's SCF does not converge for Mo–S at 0.5 Å: the scan of that pair fails, the loop
    cannot train without its table, and the launch says so in one line (the ledger has the error)."""
    path = al_spec(tmp_path, iterations=1)
    raw = yaml.safe_load(path.read_text())
    raw["recipe"]["committee"]["repulsion"] = {"kind": "dimer_table",
                                               "distances_A": [0.5, 0.8, 1.1, 1.4, 1.7]}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "campaign.cli", "launch", str(path), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "dimer scans of [('S', 'Mo')] failed" in run.stderr, run.stderr
    with CampaignStore.open(tmp_path / "store") as store:
        assert store.length("al_repulsion") == 2 and store.length("al_models") == 0


def test_settings_the_spec_leaves_unset_keep_the_first_launch_values():
    from campaign.recipes.active_learning import CommitteeSpec

    committee = CommitteeSpec(hidden=[8], max_epochs=5)
    recorded = {"hidden": [16, 16], "max_epochs": 50, "learning_rate": 0.001, "energy_weight": 1.0, "members": 2}
    settings = committee.train_settings(recorded)
    assert settings.hidden == (8,) and settings.max_epochs == 5  # what the spec says wins
    assert settings.learning_rate == 0.001 and settings.energy_weight == 1.0  # defaults of that release
    assert settings.radial_cutoff_A == committee.radial_cutoff_A  # not recorded: today's default
    assert committee.train_settings() == committee.train_settings({})
