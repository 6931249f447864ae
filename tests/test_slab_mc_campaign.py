"""The ``slab_mc`` recipe through ``campaign launch`` on a tiny CrS2-like slab with a random
Behler–Parrinello committee: a driver killed mid-run and relaunched leaves exactly the store an
uninterrupted run writes (checkpoints, RNG states, traces, snapshots); chains stop at their energy
plateau; the stored energies are the committee's own for the stored structures and the stored
layer counts and vdW shares those of tasks.mc.slab_analysis; slabs read from files; bad specs are
refused before the store is touched."""

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.io import read, write

from campaign.cli import main
from campaign.launch import build_stages
from campaign.recipes.slab_tables import (SLAB_CHECKPOINT_SITES, SLAB_CHECKPOINT_VACANCIES, SLAB_CHECKPOINTS,
                                          SLAB_SNAPSHOTS, SLAB_TRACE, SLAB_TRACE_LAYERS)
from campaign.spec import load_spec
from storage import CampaignStore
from tasks.mc.slab_analysis import metal_per_layer, vdw_fraction, vertical_displacements
from tasks.mc.slab_build import build_slab
from tasks.mc.slab_task import layer_vdw_fraction
from tasks.nnp.batch import AtomsBatch
from tasks.nnp.committee import Committee
from tasks.nnp.descriptors import DescriptorSettings
from tasks.nnp.model import BehlerParrinello, ModelSettings
from tasks.phase.lattice import Lattice
from tasks.potential import load_potential
from tests.conftest import kill_launch_once_done, launch_cli, page_data, sorted_rows

CLI = [sys.executable, "-m", "campaign.cli"]
SLAB = {"lattice": {"a_A": 3.29, "c_A": 5.573}, "repeats": [3, 2], "layers": 3, "vacancy_fraction": "1/3",
        "in_plane_strain": 0.03, "vacuum_A": 12.0}


@pytest.fixture(scope="module")
def committee_file(tmp_path_factory) -> Path:
    settings = ModelSettings(DescriptorSettings(elements=("Cr", "S"), radial_cutoff_A=4.0, angular_cutoff_A=3.0),
                             hidden=(8, 8))
    path = tmp_path_factory.mktemp("potential") / "committee.pt"
    Committee([BehlerParrinello(settings, seed=s) for s in (1, 2)]).save(path)
    return path


def slab_spec(directory: Path, potential: Path, **changes) -> Path:
    """Three chains (groups of two and one) on a 72-atom slab (3 layers of 12 sites); 100-step segments
    up to 500 steps, but every chain reaches its plateau (the tolerance is huge) at step 300."""
    recipe = {"kind": "slab_mc", "seed": 3, "potential": {"files": [str(potential)]}, "slab": SLAB,
              "replicas": 3, "chains_per_task": 2, "temperature_K": 3000, "max_steps": 500,
              "moves": {"cell_only_steps": 5, "max_strain": 0.01},
              "relax": {"max_steps": 3, "growth_steps": 20, "fmax_eV_per_A": 0.0},
              "stop": {"window_steps": 300, "tolerance_meV_per_atom": 1e6},
              "steps_per_segment": 100, "record_every": 25, "snapshot_every": 100, **changes}
    spec = {"name": "slab", "store": str(directory / "store"),
            "scheduler": {"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}}, "recipe": recipe}
    path = directory / "slab.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _ragged(store: CampaignStore, table, frames: dict, start: str, count: str, column: str) -> list[np.ndarray]:
    values = store.read(table, [column])[column]
    return [values[int(s):int(s) + int(n)] for s, n in zip(frames[start], frames[count])]


@pytest.mark.slow
def test_a_killed_slab_mc_resumes_onto_the_uninterrupted_trajectory(tmp_path, capsys, committee_file):
    whole_dir, killed_dir = tmp_path / "whole", tmp_path / "killed"
    whole_dir.mkdir()
    killed_dir.mkdir()
    whole, killed = slab_spec(whole_dir, committee_file), slab_spec(killed_dir, committee_file)
    done = launch_cli(whole)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 reached the energy plateau" in done.stdout, done.stdout[-2000:]

    kill_launch_once_done(killed, killed_dir / "store", "slab-segment1", count=2)
    resumed = launch_cli(killed)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "already done before this launch" in resumed.stdout
    assert re.search(r"slab-segment\d: [12] done", resumed.stdout), resumed.stdout  # the relaunch did the rest

    stores = [CampaignStore.open(d / "store") for d in (whole_dir, killed_dir)]
    try:
        frames = [sorted_rows(s.read(SLAB_CHECKPOINTS.frames), "chain", "segment") for s in stores]
        assert len(frames[0]["chain"]) == 3 * 3, "three chains, three segments of 100 steps: the plateau at 300"
        assert frames[0]["step"].max() == 300
        for name in ("chain", "segment", "step", "energy_eV", "rng_state", "proposed", "accepted", "blocked", "jumps",
                     "cell_A", "n_atoms", "n_sites", "n_vacancies"):
            assert np.array_equal(frames[0][name], frames[1][name]), name
        for table, start, count, columns in (
                (SLAB_CHECKPOINTS.atoms, "atom_start", "n_atoms", ("positions_A", "atomic_energy_eV")),
                (SLAB_CHECKPOINT_SITES, "site_start", "n_sites", ("site_atom",)),
                (SLAB_CHECKPOINT_VACANCIES, "vacancy_start", "n_vacancies",
                 ("vacancy_site", "vacancy_start_site", "vertical_displacement"))):
            for column in columns:
                a, b = (_ragged(s, table, f, start, count, column) for s, f in zip(stores, frames))
                assert all(np.array_equal(x, y) for x, y in zip(a, b)), column
        traces = [sorted_rows(s.read(SLAB_TRACE), "chain", "step") for s in stores]
        assert traces[0]["step"].tolist()[:13] == list(range(0, 301, 25)), "step 0, then every 25 steps"
        for name in SLAB_TRACE.names:
            if name != "key":
                assert np.array_equal(traces[0][name], traces[1][name]), name
        layers = [sorted_rows(s.read(SLAB_TRACE_LAYERS), "chain", "step", "layer") for s in stores]
        for name in ("step", "layer", "metal_atoms", "thickness_A", "up_jumps", "down_jumps"):
            assert np.array_equal(layers[0][name], layers[1][name]), name
        shots = [sorted_rows(s.read(SLAB_SNAPSHOTS.frames), "chain", "step") for s in stores]
        assert shots[0]["step"].tolist() == [0, 100, 200, 300] * 3
        positions = [_ragged(s, SLAB_SNAPSHOTS.atoms, f, "atom_start", "n_atoms", "positions_A")
                     for s, f in zip(stores, shots)]
        assert all(np.array_equal(x, y) for x, y in zip(*positions))
        last = frames[1]["segment"] == 2
        checkpoint_positions = _ragged(stores[1], SLAB_CHECKPOINTS.atoms, frames[1], "atom_start", "n_atoms",
                                       "positions_A")
        site_atoms = _ragged(stores[1], SLAB_CHECKPOINT_SITES, frames[1], "site_start", "n_sites", "site_atom")
        vacancies = {c: _ragged(stores[1], SLAB_CHECKPOINT_VACANCIES, frames[1], "vacancy_start", "n_vacancies", c)
                     for c in ("vacancy_site", "vacancy_start_site", "vertical_displacement")}
    finally:
        for s in stores:
            s.close()

    # the moves were real, and a snapshot is the checkpoint of its step
    assert (frames[1]["accepted"][last] > 0).all()
    final_shots = [k for k in range(len(shots[1]["step"])) if shots[1]["step"][k] == 300]
    assert all(np.array_equal(positions[1][s], checkpoint_positions[c])
               for s, c in zip(final_shots, np.flatnonzero(last)))

    # the stored state against independent evaluations: the committee on the structure, the analysis
    # functions on the sites
    slab = build_stages(load_spec(killed))[0].kwargs["slab"]
    committee = load_potential(committee_file)
    final = {str(c): k for k, c in enumerate(frames[1]["chain"]) if last[k]}
    for chain, k in final.items():
        atoms = Atoms(numbers=slab.numbers, positions=checkpoint_positions[k], cell=frames[1]["cell_A"][k], pbc=True)
        energy = float(committee(AtomsBatch.from_atoms([atoms]), forces=False)["energy"][0])
        assert abs(energy - frames[1]["energy_eV"][k]) < 1e-6, (chain, energy, frames[1]["energy_eV"][k])
        row = np.flatnonzero((traces[1]["chain"] == chain) & (traces[1]["step"] == 300))[0]
        assert traces[1]["vdw_fraction"][row] == vdw_fraction(slab, site_atoms[k])
        layer_rows = (layers[1]["chain"] == chain) & (layers[1]["step"] == 300)
        assert layers[1]["metal_atoms"][layer_rows].tolist() == metal_per_layer(slab, site_atoms[k]).tolist()
        assert np.array_equal(vacancies["vertical_displacement"][k], vertical_displacements(
            slab, vacancies["vacancy_start_site"][k], vacancies["vacancy_site"][k]))
        assert np.array_equal(np.sort(vacancies["vacancy_site"][k]), np.flatnonzero(site_atoms[k] < 0))

    chains = page_data(killed_dir / "store")["slab-chains"]["chains"]  # the campaign page
    assert sorted(chains["chain"]) == sorted(final) and set(chains["last_step"]) == {300}

    # status, report and export in this process (each a subprocess would import everything again)
    assert main(["status", str(killed_dir / "store")]) == 0
    status = capsys.readouterr().out
    assert status.count("step     300/500") == 3 and status.count("plateau at step 300") == 3, status[-2000:]
    assert main(["report", str(killed_dir / "store"), "--out", str(tmp_path / "report")]) == 0
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["acceptance.png", "energy.png", "index.html",
                                                                       "jumps.png", "layers.png"]
    out = tmp_path / "snapshots.extxyz"
    assert main(["export", str(killed_dir / "store"), "--snapshots", str(out)]) == 0
    snapshots = read(out, index=":")
    assert [a.info["step"] for a in snapshots] == [0, 100, 200, 300] * 3
    assert all(np.array_equal(a.numbers, slab.numbers) for a in snapshots)
    assert all(np.allclose(a.positions, p, atol=1e-6) for a, p in zip(snapshots, positions[1]))


def test_vdw_fraction_from_layer_counts_is_the_site_count():
    slab = build_slab(Lattice(a_A=3.29, c_A=5.573), (3, 2), 5, 0.4, vacuum_A=12.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        site_atom = rng.permutation(slab.site_atom)
        assert layer_vdw_fraction(slab, metal_per_layer(slab, site_atom)) == vdw_fraction(slab, site_atom)


def test_a_slab_file_with_vacant_sites_as_x_is_the_built_slab(tmp_path, committee_file):
    built = build_slab(Lattice(a_A=3.29, c_A=5.573), (3, 2), 3, 1 / 3, in_plane_strain=0.03, vacuum_A=12.0, seed=4)
    vacant = built.sites[built.site_atom < 0]
    write(tmp_path / "slab.extxyz", built.atoms() + Atoms("X" * len(vacant), positions=vacant))
    spec = slab_spec(tmp_path, committee_file, slab={"file": "slab.extxyz", "start": "file"})
    stage = build_stages(load_spec(spec))[0]
    slab = stage.kwargs["slab"]
    assert not stage.kwargs["settings"].random_start and len(stage.items) == 2
    assert np.array_equal(slab.numbers, built.numbers) and np.array_equal(slab.anion_layer, built.anion_layer)
    assert np.allclose(slab.positions, built.positions, atol=1e-6) and np.allclose(slab.cell, built.cell)
    # the file lists the sites in another order (the metal atoms, then the X): the same sites, layers,
    # atoms, cages and hops
    distance = np.linalg.norm(slab.sites[:, None] - built.sites[None], axis=2)
    same = np.argmin(distance, axis=1)
    assert np.all(distance[np.arange(len(same)), same] < 1e-6) and len(set(same.tolist())) == built.n_sites
    assert np.array_equal(slab.site_layer, built.site_layer[same])
    assert np.array_equal(slab.site_atom, built.site_atom[same])
    assert np.array_equal(np.sort(slab.cage, axis=1), np.sort(built.cage[same], axis=1))

    def hops(s, names):
        return sorted((int(names[i]), int(o), int(names[t])) for i in range(s.n_sites)
                      for o, t in zip(s.hop_offset[s.hop_segment[i]:s.hop_segment[i + 1]],
                                      s.hop_site[s.hop_segment[i]:s.hop_segment[i + 1]]))

    assert hops(slab, same) == hops(built, np.arange(built.n_sites))


def _refused(tmp_path, capsys, spec: Path, message: str) -> None:
    assert main(["launch", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err[-2000:]
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("change, message", [
    ({"slab": {**SLAB, "vacancy_fraction": "1/5"}}, "x = 0.2 is not reachable with 36 metal sites"),
    ({"slab": {**SLAB, "vacancy_fraction": "3/2"}}, "vacancy fraction '3/2' must lie in [0, 1)"),
    ({"slab": {**SLAB, "layer": 4}}, "recipe.slab.layer: unknown key (did you mean 'layers'?)"),
    ({"slab": {**SLAB, "vacuum_A": 4.92}}, "the vacuum (4.9 Å) must exceed the potential's cutoff (4.0 Å)"),
    ({"slab": {**SLAB, "vacuum_A": 4.0}}, "vacuum_A (4.0) must exceed hop_distance_A (4.9)"),
    ({"slab": {"file": "missing.extxyz"}}, "recipe.slab.file: no such file"),
    ({"max_steps": 550}, "max_steps (550) must be a multiple of steps_per_segment (100)"),
    ({"record_every": 30}, "steps_per_segment (100) must be a multiple of record_every (30)"),
    ({"stop": {"window_steps": 310}}, "stop.window_steps (310) must be a multiple of record_every (25)"),
    ({"moves": {"in_plane_fraction": 1.5}}, "recipe.moves.in_plane_fraction: Input should be less than or equal"),
])
def test_bad_slab_specs_are_refused_before_the_store_exists(tmp_path, capsys, committee_file, change, message):
    _refused(tmp_path, capsys, slab_spec(tmp_path, committee_file, **change), message)


def test_unreadable_slab_files_are_refused(tmp_path, capsys, committee_file):
    (tmp_path / "bad.extxyz").write_text("this is not\na structure\n")
    _refused(tmp_path, capsys, slab_spec(tmp_path, committee_file, slab={"file": "bad.extxyz"}),
             f"recipe.slab.file: cannot read {tmp_path / 'bad.extxyz'}")
    write(tmp_path / "s.extxyz", Atoms("S2", positions=[[0, 0, 0], [0, 0, 2]], cell=[5, 5, 20], pbc=True))
    _refused(tmp_path, capsys, slab_spec(tmp_path, committee_file, slab={"file": "s.extxyz"}),
             "holds no Cr atom and no vacant site ('X')")


def test_a_potential_without_the_slab_elements_is_refused(tmp_path, capsys):
    settings = ModelSettings(DescriptorSettings(elements=("Mo", "S"), radial_cutoff_A=4.0, angular_cutoff_A=3.0),
                             hidden=(4,))
    path = tmp_path / "mos.pt"
    BehlerParrinello(settings, seed=0).save(path)
    _refused(tmp_path, capsys, slab_spec(tmp_path, path), "knows ['Mo', 'S'], not ['Cr'] of the slab")
