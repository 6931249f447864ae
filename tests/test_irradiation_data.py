"""Irradiation-ready initial data (the MoS2 study's Table I): every generator checked against a
brute-force reference (explicit loops over atoms and periodic images, masses from ase.data), and
the spec section read, planned and checked by the launcher's own functions."""

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import mx2
from ase.data import atomic_masses, atomic_numbers

from campaign.errors import SpecError
from campaign.launch import build_stages, warn_about_cells
from campaign.recipes.irradiation_data import IrradiationData, irradiation_structures
from campaign.spec import load_spec
from tasks.active.irradiation_data import (DEFECT_NAMES, interstitial, nanopore, point_defect, random_packing,
                                           scaled)
from tasks.cell_validity import cell_problems
from tasks.generate import nias_bulk
from tasks.labeling import TbliteLabeler
from tasks.structures import Structure

ELEMENTS = ("Mo", "S")
A_A, THICKNESS_A = 3.19, 3.19


def sheet(n: int = 4):
    return mx2("MoS2", a=A_A, thickness=THICKNESS_A, size=(n, n, 1), vacuum=7.5)


def image_shifts(atoms, reach: int = 2):
    """Every lattice translation up to ``reach`` cells along the periodic axes."""
    ranges = [range(-reach, reach + 1) if p else [0] for p in atoms.pbc]
    return [np.array(k) @ atoms.cell.array for k in itertools.product(*ranges)]


def brute_distance_A(atoms, p, q) -> float:
    """Shortest distance between points p and q over periodic images, by enumeration."""
    return min(float(np.sqrt(sum((q[c] + t[c] - p[c]) ** 2 for c in range(3)))) for t in image_shifts(atoms))


def brute_in_plane_A(atoms, p, q) -> float:
    return min(float(np.hypot(q[0] + t[0] - p[0], q[1] + t[1] - p[1])) for t in image_shifts(atoms))


def changed_sites(host, out):
    """(host atoms gone or changed, atoms of ``out`` that are new): matched by position and symbol."""
    def key(symbol, position):
        return symbol, tuple(np.round(position, 6))

    before = Counter(key(s, p) for s, p in zip(host.get_chemical_symbols(), host.positions))
    after = Counter(key(s, p) for s, p in zip(out.get_chemical_symbols(), out.positions))
    return list((before - after).elements()), list((after - before).elements())


# -- dimers, interstitials, packings, scaled sheets ---------------------------------------------------
def test_dimers_of_every_pair_from_1_2_to_5_0_A_in_0_1_A_steps():
    data = IrradiationData.model_validate({"dimers": {}})
    out = irradiation_structures(data, [Structure.from_atoms(sheet(3))], ELEMENTS, seed=0)
    by_pair = {}
    for s in out:
        assert s.tag == "irr-dimer" and s.n_atoms == 2 and not s.pbc.any()
        pair = tuple(sorted(s.to_atoms().get_chemical_symbols()))
        by_pair.setdefault(pair, []).append(float(np.linalg.norm(s.positions_A[1] - s.positions_A[0])))
    expected = [1.2 + 0.1 * k for k in range(39)]  # 1.2, 1.3, ..., 5.0
    assert sorted(by_pair) == [("Mo", "Mo"), ("Mo", "S"), ("S", "S")]
    for distances in by_pair.values():
        assert sorted(distances) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("host", [sheet(3), nias_bulk("CrS", 3.45, 5.75, (2, 2, 2))], ids=["sheet", "bulk"])
def test_an_interstitial_is_at_least_the_minimum_distance_from_every_atom_and_image(host):
    rng = np.random.default_rng(7)
    element = host.get_chemical_symbols()[0]
    nearest = []
    for _ in range(20):
        out = interstitial(host, element, 1.2, rng, margin_A=1.5)
        assert len(out) == len(host) + 1 and out.get_chemical_symbols()[-1] == element
        np.testing.assert_array_equal(out.positions[:-1], host.positions)
        d = min(brute_distance_A(host, out.positions[-1], q) for q in host.positions)
        assert d >= 1.2 - 1e-9
        nearest.append(d)
        if not host.pbc[2]:  # in or next to the sheet, not in the vacuum
            z = host.positions[:, 2]
            assert z.min() - 1.5 - 1e-9 <= out.positions[-1, 2] <= z.max() + 1.5 + 1e-9
    assert min(nearest) < 1.8  # short-range ones among them: the point of the exercise


def test_a_packing_has_the_density_and_the_minimum_distance():
    unit = Counter({"Mo": 1, "S": 2})
    out = random_packing(unit, 10, 4.8, 2.0, np.random.default_rng(3))
    assert Counter(out.get_chemical_symbols()) == Counter({"Mo": 10, "S": 20}) and out.pbc.all()
    mass_g = sum(atomic_masses[atomic_numbers[s]] for s in out.get_chemical_symbols()) * 1.66053906660e-24
    # 1 u in grams (CODATA 2018); the code goes through Avogadro's number: equal to a few 1e-9
    assert mass_g / (out.get_volume() * 1e-24) == pytest.approx(4.8, rel=1e-7)
    assert np.allclose(out.cell.lengths(), out.cell.lengths()[0]) and out.cell.lengths()[0] >= 8.0
    pairs = [brute_distance_A(out, out.positions[i], out.positions[j])
             for i in range(len(out)) for j in range(i + 1, len(out))]
    assert min(pairs) >= 2.0 - 1e-9


def test_a_packing_that_cannot_fit_says_what_to_change():
    with pytest.raises(ValueError, match="lower min_distance_A or the density"):
        random_packing(Counter({"Mo": 1, "S": 2}), 10, 4.8, 3.5, np.random.default_rng(0))


@pytest.mark.parametrize("scale", [0.8, 1.3])
def test_a_scaled_sheet_scales_every_distance_and_keeps_its_vacuum_axis(scale):
    host = sheet(4)
    out = scaled(host, scale)
    assert len(out) == len(host)
    np.testing.assert_allclose(out.cell.array[:2], scale * host.cell.array[:2])
    np.testing.assert_allclose(out.cell.array[2], host.cell.array[2])
    for i, j in [(0, 1), (0, 5), (3, 40), (10, 47)]:
        assert brute_distance_A(out, out.positions[i], out.positions[j]) == pytest.approx(
            scale * brute_distance_A(host, host.positions[i], host.positions[j]), rel=1e-9)


def test_a_scaled_sheet_too_narrow_for_the_labeler_is_repeated_first():
    host = sheet(3)  # 8.29 Å wide: at 0.5, 4.1 Å
    out = scaled(host, 0.5)
    assert len(out) == 4 * len(host)
    assert cell_problems([Structure.from_atoms(out)], TbliteLabeler()) == []


# -- MX2 defects and pores ------------------------------------------------------------------------
def test_every_defect_name_changes_the_sheet_as_its_name_says():
    host = sheet(4)
    z_metal = host.positions[0, 2]
    bond_A = brute_distance_A(host, host.positions[0], host.positions[1])
    rng = np.random.default_rng(11)
    for name in DEFECT_NAMES:
        out = point_defect(host, name, rng)
        gone, new = changed_sites(host, out)
        gone_symbols = sorted(s for s, _ in gone)
        new_symbols = sorted(s for s, _ in new)
        if name == "V_X":
            assert gone_symbols == ["S"] and new == []
        elif name == "V_M":
            assert gone_symbols == ["Mo"] and new == []
        elif name == "V_X2":  # a column: equal x, y, one above and one below the metal plane
            (_, p), (_, q) = gone
            assert gone_symbols == ["S", "S"] and new == []
            assert brute_in_plane_A(host, p, q) == pytest.approx(0, abs=1e-6)
            assert (p[2] - z_metal) * (q[2] - z_metal) < 0
        elif name == "V_M2":  # two nearest-neighbour metals
            (_, p), (_, q) = gone
            assert gone_symbols == ["Mo", "Mo"] and brute_distance_A(host, p, q) == pytest.approx(A_A)
        elif name == "V_MX":
            assert gone_symbols == ["Mo", "S"] and new == []
            (_, p), (_, q) = gone
            assert brute_distance_A(host, p, q) == pytest.approx(bond_A)
        elif name == "V_MX3":  # the metal and three bonded S of the top layer
            assert gone_symbols == ["Mo", "S", "S", "S"] and new == []
            metal = next(p for s, p in gone if s == "Mo")
            for s, p in gone:
                if s == "S":
                    assert p[2] > z_metal and brute_distance_A(host, metal, p) == pytest.approx(bond_A)
        elif name in ("M_X", "X_M"):  # one site, other element, same place
            (was, p), (now, q) = gone[0], new[0]
            assert len(gone) == len(new) == 1 and np.allclose(p, q)
            assert (was, now) == (("S", "Mo") if name == "M_X" else ("Mo", "S"))
        elif name == "M_X2":  # a column replaced by a metal at its centre, in the metal plane
            (_, p), (_, q) = gone
            (_, m), = new
            assert gone_symbols == ["S", "S"] and new_symbols == ["Mo"]
            assert brute_in_plane_A(host, p, m) == pytest.approx(0, abs=1e-6)
            assert m[2] == pytest.approx(z_metal)
        elif name == "X2_M":  # two S straddling the former metal site by half the S–S thickness
            (_, m), = gone
            assert gone_symbols == ["Mo"] and new_symbols == ["S", "S"]
            for _, p in new:
                assert brute_in_plane_A(host, m, p) == pytest.approx(0, abs=1e-6)
            assert sorted(p[2] - m[2] for _, p in new) == pytest.approx([-THICKNESS_A / 2, THICKNESS_A / 2])
        else:
            raise AssertionError(f"untested defect {name}")


@pytest.mark.parametrize("n, m", [(0, 1), (0, 6), (1, 3), (2, 6)])
def test_a_nanopore_removes_the_n_metals_and_m_chalcogens_nearest_its_seeded_centre(n, m):
    host = sheet(4)
    seed = n * 10 + m
    out = nanopore(host, n, m, np.random.default_rng(seed))
    assert Counter(out.get_chemical_symbols()) == Counter({"Mo": 16 - n, "S": 32 - m})
    gone, new = changed_sites(host, out)
    assert new == [] and len(gone) == n + m
    # the documented rule, by enumeration: the centre is the generator's first two uniforms as
    # fractional in-plane coordinates; no kept atom of a species is nearer to it than a removed one
    u, v = np.random.default_rng(seed).uniform(size=2)
    centre = u * host.cell.array[0] + v * host.cell.array[1]
    removed = {(s, tuple(np.round(p, 6))) for s, p in gone}
    for species in ("Mo", "S"):
        d_gone, d_kept = [], []
        for s, p in zip(host.get_chemical_symbols(), host.positions):
            if s == species:
                (d_gone if (s, tuple(np.round(p, 6))) in removed else d_kept).append(brute_in_plane_A(host, centre, p))
        if d_gone:
            assert max(d_gone) <= min(d_kept) + 1e-9


def test_defects_need_an_mx2_sheet():
    with pytest.raises(ValueError, match="MX2 monolayer"):
        point_defect(nias_bulk("CrS", 3.45, 5.75, (2, 2, 1)), "V_X", np.random.default_rng(0))


# -- the spec section -----------------------------------------------------------------------------
FULL = {"dimers": {"min_A": 1.2, "max_A": 1.5}, "interstitials": {"count": 2}, "packings": {"count": 2},
        "scaled": {"scales": [0.7, 1.2]}, "defects": {}, "nanopores": {"metals": [0, 1], "chalcogens": [0, 2]}}


def structures_of(section: dict, seed: int, host=None) -> list[Structure]:
    data = IrradiationData.model_validate(section)
    return irradiation_structures(data, [Structure.from_atoms(host or sheet(3))], ELEMENTS, seed)


def test_every_kind_is_tagged_and_seeds_reproduce_and_differ():
    first, again, other = (structures_of(FULL, seed) for seed in (1, 1, 2))
    tags = Counter(s.tag for s in first)
    assert tags["irr-dimer"] == 3 * 4 and tags["irr-interstitial"] == 2 * 2 and tags["irr-packing"] == 2
    assert tags["irr-scaled"] == 2 and tags["irr-vacancy-V_S2"] == 1 and tags["irr-antisite-S2_Mo"] == 1
    assert {t for t in tags if t.startswith("irr-nanopore")} == {"irr-nanopore-Mo0S2", "irr-nanopore-Mo1S0",
                                                                "irr-nanopore-Mo1S2"}
    assert [s.canonical() for s in first] == [s.canonical() for s in again]
    differ = [first[k].canonical() != other[k].canonical() for k in range(len(first))]
    # random positions differ always; a defect's site, one of 9 on a pristine 3×3 sheet, mostly
    assert all(d for d, s in zip(differ, first) if s.tag in ("irr-interstitial", "irr-packing"))
    sites = [d for d, s in zip(differ, first) if s.tag.startswith(("irr-vacancy", "irr-antisite", "irr-nanopore"))]
    assert sum(sites) > len(sites) / 2
    assert not any(d for d, s in zip(differ, first) if s.tag in ("irr-dimer", "irr-scaled"))  # nothing random


def test_a_section_added_later_leaves_the_others_structures_and_keys():
    alone = structures_of({"defects": {}, "interstitials": {"count": 2}}, seed=4)
    more = structures_of({**FULL, "defects": {}, "interstitials": {"count": 2}}, seed=4)
    kept = [s.canonical() for s in more if s.tag.startswith(("irr-vacancy", "irr-antisite", "irr-interstitial"))]
    assert kept == [s.canonical() for s in alone]


def test_default_sections_make_cells_a_gamma_point_labeler_gets_right():
    out = structures_of({"scaled": {}, "packings": {"count": 2}, "interstitials": {"count": 1}}, seed=0)
    assert cell_problems(out, TbliteLabeler()) == []


def al_spec(directory: Path, irradiation: dict) -> Path:
    mos2 = {"prototype": "mx2", "formula": "MoS2", "a_A": 3.19, "supercell": [3, 3, 1]}
    spec = {"name": "irr", "store": str(directory / "store"),
            "recipe": {"kind": "active_learning",
                       "initial": {"structures": [dict(mos2, count=2, rattle_A=0.05, seed=1)],
                                   "irradiation": irradiation},
                       "explore": {"structures": [mos2]}}}
    path = directory / "irr.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def test_the_spec_plans_the_data_and_the_launcher_finds_no_bad_cell(tmp_path):
    host = {"prototype": "mx2", "formula": "MoS2", "a_A": 3.19, "supercell": [4, 4, 1]}
    spec = load_spec(al_spec(tmp_path, {**FULL, "host": host}))
    stages = build_stages(spec)
    tags = Counter(item.payload.tag for item in stages[0].items)
    assert tags["irr-vacancy-V_MoS3"] == 1 and tags["irr-packing"] == 2
    assert [item.payload.n_atoms for item in stages[0].items if item.payload.tag == "irr-vacancy-V_Mo"] == [47]
    warnings = []
    warn_about_cells(spec, stages, warnings.append)
    assert warnings == []


@pytest.mark.parametrize("irradiation, message", [
    ({"defects": {"names": ["V_X2", "V_Se"]}}, "unknown defect name(s) ['V_Se']; known: V_X, V_M, V_X2"),
    ({"defects": {"copies": -1}}, "greater than or equal to 0"),
    ({"packings": {"density_g_per_cm3": 0}}, "density_g_per_cm3: Input should be greater than 0"),
    ({"packings": {"min_distance_A": 0}}, "min_distance_A: Input should be greater than 0"),
    ({"interstitials": {"min_distance_A": -1}}, "min_distance_A: Input should be greater than 0"),
    ({"interstitials": {"elements": ["Xx"]}}, "not chemical symbols: ['Xx']"),
    ({"scaled": {"scales": [0.2]}}, "scales.0: Input should be greater than or equal to 0.5"),
    ({"dimers": {"min_A": 3, "max_A": 2}}, "must not be below min_A"),
    ({"nanopores": {"metals": [-1]}}, "metals.0: Input should be greater than or equal to 0"),
    ({"vacancies": {}}, "unknown key"),
])
def test_bad_irradiation_sections_are_refused_when_the_spec_is_read(tmp_path, irradiation, message):
    with pytest.raises(SpecError) as info:
        load_spec(al_spec(tmp_path, irradiation))
    assert message in str(info.value) and "initial.irradiation" in str(info.value), str(info.value)


def test_an_interstitial_of_an_element_outside_the_campaign_is_refused_when_planned(tmp_path):
    spec = load_spec(al_spec(tmp_path, {"interstitials": {"elements": ["W"]}}))
    with pytest.raises(SpecError, match=r"\['W'\] are not elements of initial.structures"):
        build_stages(spec)
