"""The ``phase_diagram`` recipe through ``campaign launch`` on a tiny Cr(1-x)S case, with tblite as
both the labeler and (wrapped as an ASE-calculator potential) the potential: then the potential's
relaxations must equal the labeler's, a check that shares the whole pipeline's bookkeeping but not
its calculator. Enumeration against icet in one process, ranking energies against tblite called
directly, a killed driver resumed without losing or repeating work."""

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.io import read
from icet.tools import enumerate_structures

from campaign.recipes.phase_tables import PHASE_AGREEMENT, PHASE_CE_ROUNDS, PHASE_CELLS, PHASE_HULL, PHASE_RANKED
from storage import CampaignStore
from tasks.phase.cells import without_vacancies
from tasks.phase.lattice import Lattice
from tests.conftest import TBLITE, kill_launch_once_done, page_data, tblite_potential_file

CLI = [sys.executable, "-m", "campaign.cli"]


@pytest.fixture(scope="module")
def tblite_potential(tmp_path_factory) -> Path:
    return tblite_potential_file(tmp_path_factory.mktemp("potential") / "tblite.pt", ("Cr", "S"))


def phase_spec(directory: Path, potential: Path, **changes) -> Path:
    recipe = {
        "kind": "phase_diagram", "seed": 3,
        "sampling": {"cutoffs_A": [4.0], "sqs_fractions": [0.0, 0.25, 0.5], "sqs_max_cells": 2,
                     "candidates_max_cells": 2, "per_round": 1, "max_rounds": 1, "cv_splits": 3,
                     "cv_target_eV_per_site": 1e-9},
        "labeler_relax": {"fmax_eV_per_A": 0.2, "max_steps": 12},
        "enumeration": {"max_sites": 12, "vacancy_fractions": [1 / 3, 0.5], "hnfs_per_task": 2},
        "potential": {"files": [str(potential)]},
        "ranking": {"cells_per_task": 2, "top_k": 3, "check_per_composition": 3,
                    "relax": {"fmax_eV_per_A": 0.2, "max_steps": 12}, "relax_per_task": 2},
    }
    for section, values in changes.items():
        recipe[section] = {**recipe.get(section, {}), **values} if isinstance(values, dict) else values
    spec = {"name": "phase", "store": str(directory / "store"),
            "scheduler": {"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}}, "recipe": recipe}
    path = directory / "phase.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def icet_cells(max_cells: int, fractions) -> list:
    """icet's enumeration in one process, one run per composition (icet restricts the fraction of
    all sites: half of them are metal sites)."""
    lattice = Lattice()
    return [a for x in fractions
            for a in enumerate_structures(lattice.primitive(), range(1, max_cells + 1), lattice.chemical_symbols(),
                                          concentration_restrictions={"X": (x / 2 - 1e-9, x / 2 + 1e-9)})]


def cr3s4_file(directory: Path) -> Path:
    """A Cr3S4 cell (x = 1/4): a NiAs 2×1×1 cell with one Cr taken out, as another recipe's minimum."""
    from ase.io import write

    from tasks.generate import nias_bulk

    atoms = nias_bulk("CrS", 3.45, 5.75, (2, 1, 1))
    del atoms[[i for i, s in enumerate(atoms.get_chemical_symbols()) if s == "Cr"][0]]
    path = directory / "cr3s4.extxyz"
    write(path, atoms)
    return path


def test_a_hull_structure_outside_the_references_is_refused_before_the_store_exists(tmp_path, tblite_potential):
    from ase.io import write

    from tasks.generate import nias_bulk

    write(tmp_path / "cr2s.extxyz", nias_bulk("CrS", 3.45, 5.75, (1, 1, 1))[[0, 1, 2]])  # Cr2S: x = −1
    spec = phase_spec(tmp_path, tblite_potential, hull={"structures": [{"file": "cr2s.extxyz"}]})
    done = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "recipe.hull.structures" in done.stderr and "outside the references' span" in done.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_small_phase_diagram_end_to_end_killed_twice(tmp_path, tblite_potential):
    spec = phase_spec(tmp_path, tblite_potential, hull={"structures": [{"file": str(cr3s4_file(tmp_path))}]})
    store_dir = tmp_path / "store"
    for stage in ("phase-enumerate", "phase-rank"):  # kill the driver inside each, then go on
        kill_launch_once_done(spec, store_dir, stage, timeout_s=900)
    final = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]

    with CampaignStore.open(store_dir) as store:
        ledger = store.read("ledger", ["key", "stage", "status"])
        done = Counter(str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == "done")
        assert set(done.values()) == {1}, "no finished item was done again"
        failed = {str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == "failed"}
        planned = {str(k) for k in store.read("plan", ["key"])["key"]}
        assert planned <= set(done) | failed, "every planned item ran (a labeler's SCF may fail: recorded)"
        stages = Counter(str(s) for s in store.read("plan", ["stage"])["stage"])
        assert stages["phase-ce-round1"] == 1, "each launch's refit makes the same choice"

        # the distributed enumeration is icet's, cell for cell
        cells = store.read(PHASE_CELLS)
        reference = icet_cells(3, [1 / 3, 0.5])
        assert len(cells["ncells"]) == len(reference)
        assert len(set(zip(cells["task"].tolist(), cells["index_in_task"].tolist()))) == len(reference)
        lattice = Lattice()
        sites = store.read("phase_cell_sites")["species"]
        ours = sorted(_canonical(lattice.cell_atoms(cells["hnf"][r], int(cells["ncells"][r]),
                                                    sites[cells["site_start"][r]:cells["site_start"][r]
                                                          + cells["n_sites"][r]]))
                      for r in range(len(reference)))
        assert ours == sorted(_canonical(a) for a in reference)

        # every cell ranked once; its energy is tblite's on the structure icet builds
        ranked = store.read(PHASE_RANKED)
        assert sorted(ranked["cell"].tolist()) == list(range(len(reference)))
        from ase.calculators.calculator import CalculationFailed
        from tblite.ase import TBLite

        # a cell whose SCF does not converge is ranked NaN (tblite's SCF near its iteration limit
        # may converge on one run and not on another, so such cells are skipped, not compared)
        finite = np.isfinite(ranked["energy_eV_per_atom"])
        assert finite.sum() >= 0.8 * len(finite), "only the odd cell may fail its SCF"
        compared = 0
        for row in np.flatnonzero(finite):
            r = int(ranked["cell"][row])
            atoms = without_vacancies(lattice.cell_atoms(cells["hnf"][r], int(cells["ncells"][r]),
                                                         sites[cells["site_start"][r]:cells["site_start"][r]
                                                               + cells["n_sites"][r]]))
            atoms.calc = TBLite(**TBLITE)
            try:
                expected = atoms.get_potential_energy() / len(atoms)
            except CalculationFailed:
                continue
            assert ranked["energy_eV_per_atom"][row] == pytest.approx(expected, abs=1e-6)
            compared += 1
            if compared == 3:
                break
        assert compared == 3
        assert np.isfinite(ranked["ce_eV_per_atom"]).all()

        # the potential is the labeler: its relaxations are the labeler's
        agreement = store.read(PHASE_AGREEMENT)
        potential = [r for m, r in zip(agreement["method"], agreement["rmse_eV_per_atom"]) if m == "potential"]
        # not to 1e-10: the labeler's calculator starts each SCF from the last step's density, the
        # wrapped one from scratch, so their forces differ at tblite's accuracy and the FIRE paths drift
        assert len(potential) == 2 and max(potential) < 2e-3, agreement
        ce = [r for m, r in zip(agreement["method"], agreement["rmse_eV_per_atom"]) if m == "ce"]
        assert min(ce) > 10 * max(potential), "the CE (3 structures, no relaxation) is no match for the labeler"
        rho = [r for m, r, n in zip(agreement["method"], agreement["spearman_rho"], agreement["n"])
               if m == "potential" and n >= 3]
        assert all(r == pytest.approx(1.0) for r in rho)

        rounds = store.read(PHASE_CE_ROUNDS)
        assert sorted(rounds["round"].tolist()) == [0, 1], "one row per round, whatever the relaunches"
        assert np.isfinite(rounds["cv_rmse_eV_per_site"]).all()
        assert all(isinstance(json.loads(str(c)), list) for c in rounds["chosen"])

        hull = store.read(PHASE_HULL)
        assert (hull["e_above_hull_eV_per_atom"] >= -1e-12).all() and hull["on_hull"].any()
        extra = [(str(f), x) for f, x, s in zip(hull["formula"], hull["vacancy_fraction"], hull["source"])
                 if s == "phase-hull-extra"]
        assert extra == [("Cr3S4", 0.25)], "the spec's own structure joins the hull"
        x_on = sorted(set(np.round(hull["vacancy_fraction"][hull["on_hull"]], 6).tolist()))
        assert x_on[0] == 0.0 and x_on[-1] == 0.5, "both references' compositions lie on the hull"

        # the campaign page: the stored hull, and the ranked cells counted per composition here
        shown = page_data(store_dir)
        points = shown["phase-hull"]["points"]
        assert len(points["x"]) == len(hull["formula"]) and points["on_hull"].count("yes") == hull["on_hull"].sum()
        compositions = shown["phase-compositions"]["compositions"]
        for x, n in zip(compositions["x"], compositions["ranked"]):
            assert n == sum(1 for v in ranked["vacancy_fraction"] if abs(v - x) < 1e-9)

    status = subprocess.run([*CLI, "status", str(store_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert status.returncode == 0, status.stderr
    report = subprocess.run([*CLI, "report", str(store_dir), "--out", str(tmp_path / "report")], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"hull.png", "parity.png", "ce_rounds.png"}
    for name in ("hull.cif", "hull.extxyz"):
        export = subprocess.run([*CLI, "export", str(store_dir), "--hull", str(tmp_path / name)], capture_output=True,
                                text=True, timeout=120)
        assert export.returncode == 0, export.stderr
        written = read(tmp_path / name, index=":")
        assert len(written) == int(hull["on_hull"].sum())
        on_hull = sorted(str(f) for f in hull["formula"][hull["on_hull"]])
        assert sorted(a.get_chemical_formula() for a in written) == on_hull


def _canonical(atoms) -> tuple:
    """A cell as a sorted tuple of (symbol, rounded fractional position) plus its cell: identical
    structures in the same setting compare equal."""
    frac = np.round(atoms.get_scaled_positions(wrap=True), 6) % 1.0
    return (tuple(np.round(atoms.cell.array, 6).ravel().tolist()),
            tuple(sorted(zip(atoms.get_chemical_symbols(), map(tuple, frac.tolist())))))
