"""The ``anneal`` recipe through ``campaign launch`` on a tiny Cr(1-x)S cell with a random
Behler–Parrinello committee: a driver killed mid-run and relaunched leaves exactly the store an
uninterrupted run writes (checkpoints, RNG states, traces, minima); every stored minimum's energy
equals the committee's own evaluation of that structure; bad specs are refused before the store is
touched."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import read

from campaign.recipes.anneal_tables import ANNEAL_CHECKPOINTS, ANNEAL_LAYERS, ANNEAL_MINIMA, ANNEAL_TRACE
from storage import CampaignStore
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.potential import load_potential
from tests.conftest import kill_launch_once_done, launch_cli, page_data, sorted_rows

CLI = [sys.executable, "-m", "campaign.cli"]


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory) -> Path:
    settings = ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=5.0, angular_cutoff_A=4.0),
                             hidden=(8, 8))
    path = tmp_path_factory.mktemp("potential") / "committee.pt"
    Committee([BehlerParrinello(settings, seed=s) for s in (1, 2)]).save(path)
    return path


def anneal_spec(directory: Path, potential: Path, **changes) -> Path:
    recipe = {"kind": "anneal", "seed": 5, "potential": {"files": [str(potential)]},
              "supercell": [[2, 0, 0], [0, 2, 0], [0, 0, 1]], "vacancy_fractions": ["1/4", "1/2"],
              "schedule": {"start_temperatures_K": [3000, 2000], "steps_per_cycle": 40},
              "moves": {"swap_groups": [[0, 3], [20, 1]], "max_strain": 0.01},
              "chains_per_task": 1, "steps_per_segment": 20, "record_every": 5, **changes}
    spec = {"name": "anneal", "store": str(directory / "store"),
            "scheduler": {"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}}, "recipe": recipe}
    path = directory / "anneal.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
def test_a_killed_anneal_resumes_onto_the_uninterrupted_trajectory(tmp_path, committee_file):
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir()
    killed_dir.mkdir()
    whole, killed = anneal_spec(whole_dir, committee_file), anneal_spec(killed_dir, committee_file)
    done = launch_cli(whole)
    assert done.returncode == 0, done.stderr[-3000:]

    kill_launch_once_done(killed, killed_dir / "store", "anneal-segment2")
    resumed = launch_cli(killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done before this launch" in resumed.stdout

    stores = [CampaignStore.open(d / "store") for d in (whole_dir, killed_dir)]
    try:
        frames = [sorted_rows(s.read(ANNEAL_CHECKPOINTS.frames), "chain", "segment") for s in stores]
        assert len(frames[0]["chain"]) == 2 * 4, "two chains, four segments of 20 steps"
        for name in ("chain", "segment", "step", "energy_eV", "rng_state", "proposed", "accepted", "best_energy_eV",
                     "cell_A"):
            assert np.array_equal(frames[0][name], frames[1][name]), name
        sites = [s.read(ANNEAL_CHECKPOINTS.atoms, ["numbers"])["numbers"] for s in stores]
        for k in range(len(frames[0]["chain"])):
            rows = [slice(int(f["atom_start"][k]), int(f["atom_start"][k] + f["n_atoms"][k])) for f in frames]
            assert np.array_equal(sites[0][rows[0]], sites[1][rows[1]])
        traces = [sorted_rows(s.read(ANNEAL_TRACE), "chain", "step") for s in stores]
        for name in ("step", "temperature_K", "energy_eV", "volume_A3", "accepted"):
            assert np.array_equal(traces[0][name], traces[1][name]), name
        minima = [sorted_rows(s.read(ANNEAL_MINIMA.frames), "chain", "cycle") for s in stores]
        assert len(minima[0]["chain"]) == 2 * 2, "a minimum per chain and cycle"
        assert np.array_equal(minima[0]["energy_eV"], minima[1]["energy_eV"])
        layers = stores[0].read(ANNEAL_LAYERS)
    finally:
        for s in stores:
            s.close()

    # the moves were real: some swaps and some cell moves were accepted
    last = frames[0]["segment"] == 3
    assert (frames[0]["accepted"][last] > 0).all()

    # the stored minima against the committee itself, on the exported structures
    out = tmp_path / "minima.extxyz"
    exported = subprocess.run([*CLI, "export", str(killed_dir / "store"), "--minima", str(out)], capture_output=True,
                              text=True, timeout=300)
    assert exported.returncode == 0, exported.stderr
    committee = load_potential(committee_file)
    for atoms in read(out, index=":"):
        energy = float(committee(AtomsBatch.from_atoms([atoms]), forces=False)["energy"][0])
        assert abs(energy - atoms.info["energy_eV"]) < 1e-6, (atoms.info["chain"], energy, atoms.info["energy_eV"])
        x = atoms.info["vacancy_fraction"]
        assert atoms.get_chemical_symbols().count("Cr") == round((1 - x) * 8)
        # its layer occupation, counted here from the structure's heights
        pick = [str(c) == atoms.info["chain"] for c in layers["chain"]] & (layers["cycle"] == atoms.info["cycle"])
        assert layers["metal_atoms"][pick].sum() == atoms.get_chemical_symbols().count("Cr")
        assert layers["sites"][pick].tolist() == [4, 4], "a 2×2×1 NiAs cell has two metal layers of four sites"

    chains = page_data(killed_dir / "store")["anneal-chains"]["chains"]  # the campaign page
    assert sorted(chains["chain"]) == sorted(set(layers["chain"].tolist())) and set(chains["last_step"]) == {80}

    status = subprocess.run([*CLI, "status", str(killed_dir / "store")], capture_output=True, text=True, timeout=300)
    assert status.returncode == 0 and "step       80/80" in status.stdout, status.stdout[-2000:]
    report = subprocess.run([*CLI, "report", str(killed_dir / "store"), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["acceptance.png", "energy.png", "index.html",
                                                                       "layers.png"]


@pytest.mark.parametrize("change, message", [
    ({"vacancy_fractions": ["1/3"]}, "x = 0.333333 is not reachable with 8 metal sites"),
    ({"supercell": [[1, 0, 0], [0, 1, 0], [0, 0, 0]]}, "positive determinant"),
    ({"moves": {"swap_groups": [[5, 2]]}}, "swap_groups must start at step 0"),
])
def test_bad_anneal_specs_are_refused_before_the_store_exists(tmp_path, committee_file, change, message):
    spec = anneal_spec(tmp_path, committee_file, **change)
    result = launch_cli(spec)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "store").exists()


def test_a_potential_without_the_lattice_elements_is_refused(tmp_path):
    settings = ModelSettings(DescriptorSettings(elements=("Mo", "S"), radial_cutoff_A=5.0, angular_cutoff_A=4.0),
                             hidden=(4,))
    path = tmp_path / "mos.pt"
    BehlerParrinello(settings, seed=0).save(path)
    result = launch_cli(anneal_spec(tmp_path, path))
    assert result.returncode == 2 and "knows ['Mo', 'S'], not ['Cr']" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "store").exists()
