"""The labeler's Brillouin-zone sampling rule (tasks.cell_validity), and every example passing it."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import mx2

from campaign.launch import build_stages
from campaign.recipe import recipe_for
from campaign.spec import load_spec
from tasks.cell_validity import cell_problems, periodic_widths_A
from tasks.generate import nias_bulk
from tasks.labeling import AseLabeler, GpawLabeler, TbliteLabeler
from tasks.structures import Structure

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
# A phase diagram compares cells of many shapes of one material, which a Γ-only labeler cannot
# label consistently (README "Supercells"); its laptop example runs the chain with tblite anyway,
# and launch says so (the last test below). The study's set-up uses a labeler with k-points.
MANY_SUPERCELLS = {"phase_crs.yaml"}


def sheet(n: int, strain: float = 0.0) -> Structure:
    atoms = mx2("MoS2", a=3.19 * (1 + strain), size=(n, n, 1), vacuum=8.0)
    return Structure.from_atoms(atoms, tag=f"MoS2 {n}x{n}")


def crs(supercell) -> Structure:
    return Structure.from_atoms(nias_bulk("CrS", 3.45, 5.75, supercell), tag=f"CrS {supercell}")


@pytest.mark.parametrize("example", [p for p in EXAMPLES if p.name not in MANY_SUPERCELLS],
                         ids=[p.name for p in EXAMPLES if p.name not in MANY_SUPERCELLS])
def test_every_example_labels_only_cells_its_labeler_gets_right(example):
    spec = load_spec(example)
    recipe = recipe_for(spec.recipe.kind)
    if not recipe.labels:  # a potential does the work (and planning needs its store, another example's run)
        assert recipe.cells_to_label(spec, []) == []
        return
    if spec.recipe.kind == "validate":  # its potentials come from another example's run: any file plans the same
        from campaign.recipes.validate import NamedPotential

        files = [Path(__file__).parent / "data" / "mos2_dptab_small.pt"]
        potentials = [NamedPotential(name=p.name, files=files) for p in spec.recipe.potentials]
        spec = spec.model_copy(update={"recipe": spec.recipe.model_copy(update={"potentials": potentials})})
    cells = recipe.cells_to_label(spec, build_stages(spec))
    assert any(np.any(c.pbc) for c in cells)
    assert cell_problems(cells, spec.labeler) == []


def test_widths_are_the_inverse_lengths_of_the_reciprocal_vectors():
    atoms = nias_bulk("CrS", 3.45, 5.75, (2, 2, 1))
    atoms.set_cell(atoms.cell.array + [[0.0, 0.3, 0.2], [0.4, 0.0, -0.1], [0.2, 0.5, 0.0]])
    reciprocal = np.linalg.inv(atoms.cell.array).T  # rows b_i with a_i · b_j = δ_ij
    expected = 1.0 / np.linalg.norm(reciprocal, axis=1)
    assert np.allclose(periodic_widths_A(Structure.from_atoms(atoms)), expected)
    widths = periodic_widths_A(sheet(3))
    assert np.isnan(widths[2]) and widths[0] == pytest.approx(3 * 3.19 * np.sqrt(3) / 2)


def test_mos2_sheets_narrower_than_3x3_are_refused_for_tblite():
    tblite = TbliteLabeler()
    assert cell_problems([sheet(3), sheet(3, -0.1), sheet(4), sheet(5)], tblite) == []
    problems = cell_problems([sheet(3), sheet(2), sheet(2, 0.03)], tblite)
    assert len(problems) == 1 and "2 cells like MoS2 2x2" in problems[0] and "3×3 or larger" in problems[0]
    # k-points multiply the width a calculation sees; a calculator's own settings are not guessed at
    # GPAW was not measured: one supercell per material below 8 Å, k-points multiplying the width
    assert cell_problems([sheet(2), sheet(2, 0.05)], GpawLabeler(kpts=(1, 1, 1))) == []
    assert cell_problems([sheet(2), sheet(3)], GpawLabeler(kpts=(1, 1, 1))) != []
    assert cell_problems([sheet(2), sheet(3)], GpawLabeler(kpts=(3, 3, 1))) == []
    # an ASE calculator's own k-points are not guessed at
    assert cell_problems([sheet(2), sheet(3)], AseLabeler(calculator_class="ase.calculators.emt.EMT")) == []


def test_narrow_cells_of_an_unmeasured_material_must_be_one_supercell():
    tblite = TbliteLabeler()
    strained = crs((2, 2, 1)).to_atoms()
    strained.set_cell(strained.cell.array * 0.92, scale_atoms=True)
    one = [crs((2, 2, 1)), Structure.from_atoms(strained), crs((2, 2, 1))]
    assert cell_problems(one, tblite) == []
    mixed = cell_problems(one + [crs((2, 2, 2))], tblite)
    assert len(mixed) == 1 and "two supercells of one material" in mixed[0] and "Cr8S8" in mixed[0]
    # wide enough everywhere: supercells may differ (4x4x2 and 3x3x2 NiAs cells, all ≥ 8 Å)
    assert cell_problems([crs((4, 4, 2)), crs((3, 3, 2))], tblite) == []
    # molecules and isolated atoms have no Brillouin zone
    dimer = Structure(np.array([16, 16]), np.array([[0, 0, 0], [0, 0, 2.0]]), np.eye(3) * 20, np.zeros(3, bool))
    assert cell_problems([dimer, crs((2, 2, 1))], tblite) == []


def test_a_launch_of_2x2_mos2_with_tblite_warns(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"""name: narrow
store: {tmp_path / 'store'}
labeler: {{kind: tblite}}
recipe:
  kind: label
  structures:
    - {{prototype: mx2, formula: MoS2, a_A: 3.19, supercell: [2, 2, 1], count: 2, rattle_A: 0.05, seed: 1}}
""")
    out = subprocess.run([sys.executable, "-m", "campaign.cli", "launch", "--dry-run", str(spec)],
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith("warning: 2 cells like mx2-MoS2 (Mo4S8")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("name", sorted(MANY_SUPERCELLS))
def test_the_phase_diagram_example_is_warned_about_its_gamma_only_labeler(name):
    from campaign.recipes.potential_source import PotentialSource

    spec = load_spec(Path(__file__).parents[1] / "examples" / name)
    # its committee comes from running al_crs.yaml first; any potential file plans the same cells
    test_potential = PotentialSource(files=[Path(__file__).parent / "data" / "mos2_dptab_small.pt"])
    spec = spec.model_copy(update={"recipe": spec.recipe.model_copy(update={"potential": test_potential})})
    cells = recipe_for(spec.recipe.kind).cells_to_label(spec, build_stages(spec))
    problems = cell_problems(cells, spec.labeler)
    assert problems and "two supercells of one material" in problems[0], problems
