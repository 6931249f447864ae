"""The ``validate`` recipe through ``campaign launch`` on monolayer MoS2 with tblite as the labeler
and, wrapped as an ASE-calculator potential, as the potential: the labeler's column against tblite
driven directly (ASE's relaxation for a0, stresses for C11, phonopy for Γ), the potential's errors
against it near zero, and a killed driver resumed without repeating a calculation."""

import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase import Atoms
from ase.build import mx2

from campaign.recipes.validate_tables import VALIDATION_COMPARISON, VALIDATION_STRUCTURES, comparison
from storage import CampaignStore
from tests.conftest import TBLITE, kill_launch_once_done, page_data, tblite_potential_file

CLI = [sys.executable, "-m", "campaign.cli"]
STRAINS = [-0.005, 0.005]
FMAX = 0.01


@pytest.fixture(scope="module")
def tblite_potential(tmp_path_factory) -> Path:
    return tblite_potential_file(tmp_path_factory.mktemp("potential") / "tblite.pt", ("Mo", "S"))


def validate_spec(directory: Path, potential: Path, **changes) -> Path:
    recipe = {"kind": "validate", "structure": {"prototype": "mx2", "formula": "MoS2", "a_A": 3.19,
                                                "thickness_A": 3.19, "vacuum_A": 7.5},
              "sheet": True, "repeat": [3, 3, 1], "potentials": [{"name": "wrapped", "files": [str(potential)]}],
              "labeler_name": "tblite", "steps": ["structure", "elastic", "phonons"], "fmax_eV_per_A": FMAX,
              "elastic_strains": STRAINS, "relax_ions": False, "phonon_points": 5, **changes}
    spec = {"name": "validate-test", "store": str(directory / "store"), "labeler": {"kind": "tblite"},
            "scheduler": {"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}}, "recipe": recipe}
    path = directory / "validate.yaml"
    path.write_text(yaml.safe_dump(spec, allow_unicode=True))
    return path


def tblite() -> object:
    from tblite.ase import TBLite

    return TBLite(**TBLITE)


def test_bad_validation_specs_are_refused_before_the_store_exists(tmp_path, tblite_potential):
    from ase.io import write

    write(tmp_path / "two.extxyz", [mx2("MoS2"), mx2("MoS2")])
    cases = [({"structure": {"file": "two.extxyz"}}, "gives 2 structures"),
             ({"defects": [{"name": "V_W", "kind": "vacancy", "species": "W"}]}, "which has none"),
             ({"labeler_name": "wrapped"}, "must differ"),
             ({"steps": ["elastic"]}, "must include 'structure'"),
             ({"defects": [{"name": "V_Mo10", "kind": "vacancy", "species": "Mo", "count": 10}]},
              "the defect cell has 9"),
             ({"defect_repeat": [1, 1, 2]}, "a sheet repeats in its plane only"),
             ({"chemical_potential_references": [{"element": "S", "structure": {"file": "two.extxyz"}}]},
              "must be one structure of S alone")]
    for changes, message in cases:
        spec = validate_spec(tmp_path, tblite_potential, **changes)
        done = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr, done.stderr
        assert not (tmp_path / "store").exists()


@pytest.mark.slow
def test_mos2_validation_against_tblite_driven_directly_killed_once(tmp_path, tblite_potential):
    from ase.filters import FrechetCellFilter
    from ase.optimize import BFGS
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    spec = validate_spec(tmp_path, tblite_potential)
    store_dir = tmp_path / "store"
    kill_launch_once_done(spec, store_dir, "validate-structure", timeout_s=900)
    final = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True, timeout=1200)
    assert final.returncode == 0, final.stderr[-3000:]

    with CampaignStore.open(store_dir) as store:
        ledger = store.read("ledger", ["key", "stage", "status"])
        done = Counter(str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == "done")
        assert set(done.values()) == {1}, "no calculation was done twice"
        planned = {str(k) for k in store.read("plan", ["key"])["key"]}
        assert planned == set(done)
        stages = Counter(str(s) for s in store.read("plan", ["stage"])["stage"])
        rows = comparison(store, "tblite")
        stored = store.read(VALIDATION_COMPARISON)
        block = store.read_structures(VALIDATION_STRUCTURES)
        k = [str(s) for s in block.frames["source"]].index("tblite")
        cell = Atoms(numbers=block.atom_values("numbers", k), positions=block.atom_values("positions_A", k),
                     cell=block.frames["cell_A"][k], pbc=True)
    value = {(r["source"], r["property"]): r for r in rows}

    # a0: ASE's own relaxation of the same start (another optimiser, tighter), per unit cell
    start = mx2("MoS2", a=3.19, thickness=3.19, vacuum=7.5).repeat((3, 3, 1))
    start.pbc = True
    start.calc = tblite()
    BFGS(FrechetCellFilter(start, mask=[True, True, False, False, False, True]), logfile=None).run(fmax=0.002)
    assert value[("tblite", "a")]["value"] == pytest.approx(start.cell.lengths()[0] / 3, abs=3e-3)

    # C11: stresses of the labeler's relaxed cell strained along x, slope times the cell height
    stresses = []
    for e in STRAINS:
        strained = cell.copy()
        strained.set_cell(cell.cell.array @ np.diag([1 + e, 1.0, 1.0]), scale_atoms=True)
        strained.calc = tblite()
        stresses.append(strained.get_stress()[0])
    height = cell.get_volume() / np.linalg.norm(np.cross(cell.cell[0], cell.cell[1]))
    c11 = (stresses[1] - stresses[0]) / (STRAINS[1] - STRAINS[0]) * height * 16.02176634
    assert value[("tblite", "C11")]["value"] == pytest.approx(c11, rel=1e-6)
    assert 50 < c11 < 250, "N/m: a sheet as stiff as MoS2"

    # Γ: phonopy on the unit cell (the first three atoms, a third of the cell)
    unit = PhonopyAtoms(symbols=cell.get_chemical_symbols()[:3], cell=cell.cell.array / [[3], [3], [1]],
                        scaled_positions=(cell.get_scaled_positions()[:3] * [3, 3, 1]) % 1.0)
    phonon = Phonopy(unit, supercell_matrix=np.diag([3, 3, 1]))
    phonon.generate_displacements(distance=0.01)

    def forces(c) -> np.ndarray:
        atoms = Atoms(c.symbols, cell=c.cell, scaled_positions=c.scaled_positions, pbc=True)
        atoms.calc = tblite()
        return atoms.get_forces()

    phonon.forces = [forces(c) for c in phonon.supercells_with_displacements]
    phonon.produce_force_constants()
    phonon.run_qpoints([[0, 0, 0]])
    gamma = phonon.qpoints.frequencies[0]
    ours = [value[("tblite", f"ω_Γ{m + 1}")]["value"] for m in range(9)]
    assert stages == {"validate-structure": 2, "validate-properties": 3 + len(phonon.forces),
                      "validate-phonons": 1}, "the labeler's displaced cells are tasks of their own"
    assert ours == pytest.approx(gamma, abs=1e-6)
    assert np.sort(np.abs(ours))[:3] == pytest.approx([0, 0, 0], abs=0.1), "three acoustic modes at Γ (THz)"

    # the finished launch stored the same comparison, errors included
    last = stored["launch"] == stored["launch"].max()
    kept = {(str(a), str(b)): (v, e) for a, b, v, e, keep in zip(stored["source"], stored["property"], stored["value"],
                                                                  stored["error"], last) if keep}
    assert len(kept) == len(rows) and all(kept[(r["source"], r["property"])][0] == r["value"] for r in rows)
    assert kept[("wrapped", "C11")][1] == pytest.approx(value[("wrapped", "C11")]["error"])

    # the campaign page: every property of both sources, as the comparison has them
    shown = page_data(store_dir)["validate-comparison"]["properties"]
    assert len(shown["property"]) == len(rows) and set(shown["source"]) == {"tblite", "wrapped"}
    c11 = shown["value"][list(zip(shown["source"], shown["property"])).index(("wrapped", "C11"))]
    assert c11.startswith(f"{value[('wrapped', 'C11')]['value']:.4g} (")

    # the report: the table, the phonon bands, and one self-contained page of both
    report = subprocess.run([*CLI, "report", str(store_dir), "--out", str(tmp_path / "report")], capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"table.md", "table.html", "phonons.png", "index.html"}
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and page.count("<table") == 1 and "C11" in page

    # the wrapped potential is the labeler: its errors vanish
    for prop in ("a", "C11", "C12", "ω_Γ9"):
        assert abs(value[("wrapped", prop)]["relative_error"]) < 1e-3, value[("wrapped", prop)]


def test_a_step_is_keyed_by_its_own_settings_only(tmp_path):
    """Changing the elastic strains redoes the elastic step alone: the other steps keep their keys."""
    from campaign.recipes.validate import first_stage, job_key
    from campaign.spec import load_spec

    potential = Path(__file__).parent / "data" / "mos2_dptab_small.pt"
    spec = load_spec(validate_spec(tmp_path, potential))
    changed = load_spec(validate_spec(tmp_path, potential, elastic_strains=[-0.01, 0.01]))
    before, after = first_stage(spec), first_stage(changed)
    assert [i.key for i in before.items] == [i.key for i in after.items], "the relaxations stay done"
    job = before.items[0].payload
    for step, same in (("elastic", False), ("eos", True), ("phonons", True), ("dimers", True)):
        assert (job_key(spec.recipe, job.source, step, job.structure)
                == job_key(changed.recipe, job.source, step, job.structure)) is same, step
