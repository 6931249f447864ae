"""Formation energies, the lower convex hull and ranking statistics of a Cr–S phase diagram, against
references that share no code with tasks/phase: hand computations, a brute-force hull (every pair
of points bracketing a fraction), pymatgen's PhaseDiagram, and Spearman's rho written out as loops."""

import math
import subprocess
import sys

import numpy as np
import pytest

from tasks.phase.hull import HullReference, formation_energies, lower_hull, vacancy_fraction_x
from tasks.phase.statistics import ranking_agreement

CRS = HullReference("CrS", (2, 2), -30.0)  # a 4-atom NiAs cell
CRS2 = HullReference("CrS2", (1, 2), -17.4)
CR = HullReference("Cr", (1, 0), -9.5)
S = HullReference("S", (0, 1), -4.0)


# ---------------------------------------------------------------- brute-force reference hull

def brute_hull_energy(x, xs, es):
    """Lowest straight line between two points (the references' ends (0, 0) and (1, 0) included)
    that brackets x, or a point sitting at x: the lower convex hull at x, from its definition."""
    xs = list(xs) + [0.0, 1.0]
    es = list(es) + [0.0, 0.0]
    best = math.inf
    for i in range(len(xs)):
        if abs(xs[i] - x) < 1e-12:
            best = min(best, es[i])
        for j in range(len(xs)):
            if xs[i] < x < xs[j]:
                t = (x - xs[i]) / (xs[j] - xs[i])
                best = min(best, (1 - t) * es[i] + t * es[j])
    return best


def brute_corners(xs, es, tol=1e-9):
    """Points on the hull that lie strictly below every chord between two other points around
    them (a corner, not a point on a segment); at an end, the lowest point there (first of ties)."""
    corners = []
    for p, (x, e) in enumerate(zip(xs, es)):
        if e - brute_hull_energy(x, xs, es) > tol:
            continue
        if any(abs(xs[q] - x) < 1e-12 and abs(es[q] - e) < tol for q in range(p)):
            continue  # a duplicate of an earlier point
        others = [(xs[q], es[q]) for q in range(len(xs)) if q != p] + [(0.0, 0.0), (1.0, 0.0)]
        on_a_chord = False
        for xi, ei in others:
            for xj, ej in others:
                if xi < x < xj and abs((ei + (x - xi) / (xj - xi) * (ej - ei)) - e) < tol:
                    on_a_chord = True
        if not on_a_chord:
            corners.append(p)
    return sorted(corners, key=lambda p: xs[p])


def random_points(seed, n):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(0.0, 1.0, n)
    es = rng.normal(-0.05, 0.08, n)
    return xs, es


# ---------------------------------------------------------------- formation energies

def test_formation_energy_of_a_cr3s4_cell_by_hand():
    # Cr6S8 (14 atoms) = a·Cr2S2 + b·CrS2:  2a + b = 6 (Cr), 2a + 2b = 8 (S)  →  b = 2, a = 2.
    # E_ref = 2·(−30.0) + 2·(−17.4) = −94.8 eV;  E_f = (−105.0 − (−94.8)) / 14 = −10.2 / 14 eV/atom.
    # Atoms from CrS2: b·3 = 6 of 14 → fraction 3/7.
    # Cr4S4 (8 atoms) = 2·Cr2S2: E_f = (−61.0 + 60.0) / 8;  Cr2S4 = 2·CrS2: E_f = (−35.0 + 34.8) / 6.
    got = formation_energies([[6, 8], [4, 4], [2, 4]], [-105.0, -61.0, -35.0], CRS, CRS2)
    assert got.amount_A == pytest.approx([2.0, 2.0, 0.0], abs=1e-12)
    assert got.amount_B == pytest.approx([2.0, 0.0, 2.0], abs=1e-12)
    assert got.fraction == pytest.approx([3 / 7, 0.0, 1.0], abs=1e-12)
    assert got.formation_energy_eV_per_atom == pytest.approx([-10.2 / 14, -1.0 / 8, -0.2 / 6], abs=1e-12)


def test_formation_energy_against_the_elements_by_hand():
    # Cr2S3 (5 atoms), E = −33.0: E_f = (−33.0 − 2·(−9.5) − 3·(−4.0)) / 5 = −2.0 / 5;
    # fraction = the S share, 3/5. Elemental Cr is its own reference: E_f = 0 at fraction 0.
    got = formation_energies([[2, 3], [1, 0]], [-33.0, -9.5], CR, S)
    assert got.fraction == pytest.approx([0.6, 0.0], abs=1e-12)
    assert got.formation_energy_eV_per_atom == pytest.approx([-0.4, 0.0], abs=1e-12)


def test_vacancy_fraction_of_the_known_cr_sulfides():
    n_Cr = [1, 7, 3, 2, 5, 1]
    n_S = [1, 8, 4, 3, 8, 2]
    assert vacancy_fraction_x(n_Cr, n_S) == pytest.approx([0, 1 / 8, 1 / 4, 1 / 3, 3 / 8, 1 / 2], abs=1e-12)


# ---------------------------------------------------------------- the hull against brute force

def test_hand_built_cr_sulfide_hull_has_the_known_corners():
    # Hull fractions with CrS and CrS2 as references (atoms from CrS2 over all atoms):
    # Cr7S8 = 6 CrS + CrS2 → 3/15; Cr3S4 = 2 CrS + CrS2 → 3/7; Cr2S3 = CrS + CrS2 → 3/5;
    # Cr5S8 = 2 CrS + 3 CrS2 → 9/13. Cr3S4, Cr2S3 and Cr5S8 are made lowest.
    names = ["CrS", "Cr7S8", "Cr3S4", "Cr2S3", "Cr2S3-b", "Cr5S8", "CrS2", "Cr3S4-copy"]
    xs = [0.0, 3 / 15, 3 / 7, 3 / 5, 3 / 5, 9 / 13, 1.0, 3 / 7]
    es = [0.0, -0.03, -0.10, -0.12, -0.05, -0.105, 0.0, -0.10]
    hull = lower_hull(xs, es)
    assert [names[i] for i in hull.vertices] == ["CrS", "Cr3S4", "Cr2S3", "Cr5S8", "CrS2"]
    # Hand: the hull at 1/5 is on the chord CrS–Cr3S4: −0.10·(1/5)/(3/7) = −7/150.
    expected = [0.0, -0.03 + 7 / 150, 0.0, 0.0, 0.07, 0.0, 0.0, 0.0]
    assert hull.e_above_hull_eV_per_atom == pytest.approx(expected, abs=1e-12)
    assert hull.on_hull.tolist() == [True, False, True, True, False, True, True, True]
    assert hull.vertices.tolist() == brute_corners(xs, es)


@pytest.mark.parametrize("seed, n", [(0, 5), (1, 30), (2, 80)])
def test_random_hull_matches_brute_force(seed, n):
    xs, es = random_points(seed, n)
    hull = lower_hull(xs, es)
    expected = [e - brute_hull_energy(x, xs, es) for x, e in zip(xs, es)]
    assert hull.e_above_hull_eV_per_atom == pytest.approx(expected, abs=1e-12)
    assert np.all(hull.e_above_hull_eV_per_atom >= 0.0)
    assert hull.vertices.tolist() == brute_corners(xs, es)
    assert np.all(hull.e_above_hull_eV_per_atom[hull.vertices] == 0.0)


def test_new_points_above_and_below_the_hull_match_brute_force():
    xs, es = random_points(3, 20)
    hull = lower_hull(xs, es)
    new_x, new_e = random_points(4, 25)
    new_x[:3] = [0.0, 1.0, 0.5]
    expected = [e - brute_hull_energy(x, xs, es) for x, e in zip(new_x, new_e)]
    got = hull.e_above_hull_of(new_x, new_e)
    assert got == pytest.approx(expected, abs=1e-12)
    assert np.any(got < 0), "some new points lie below the hull and say so"


def test_degenerate_inputs():
    empty = lower_hull([], [])
    assert empty.vertices.size == 0 and empty.hull_fraction.tolist() == [0.0, 1.0]
    assert empty.hull_formation_energy_eV_per_atom.tolist() == [0.0, 0.0]

    one = lower_hull([0.3], [-0.1])
    assert one.vertices.tolist() == [0] and one.e_above_hull_eV_per_atom.tolist() == [0.0]
    above = lower_hull([0.3], [0.2])
    assert above.vertices.size == 0 and above.e_above_hull_eV_per_atom == pytest.approx([0.2])

    # All on the references' line: every point is on the hull, only the ends are corners.
    flat = lower_hull([0.0, 0.25, 0.5, 1.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0])
    assert flat.vertices.tolist() == [0, 3]
    assert flat.on_hull.all() and np.all(flat.e_above_hull_eV_per_atom == 0.0)

    # Collinear below the line, with duplicates: the middle point lies on a segment.
    line = lower_hull([0.5, 0.25, 0.75, 0.25, 0.5], [-0.2, -0.1, -0.1, -0.1, -0.2])
    assert line.vertices.tolist() == [0]
    assert line.on_hull.all()
    assert line.e_above_hull_of([0.25, 0.6], [-0.1, 0.0]) == pytest.approx([0.0, 0.16])

    # A polymorph of a reference below it replaces the end point; the reference sits above it.
    end = lower_hull([0.0, 0.0, 0.5], [0.0, -0.05, -0.1])
    assert end.vertices.tolist() == [1, 2]
    assert end.e_above_hull_eV_per_atom == pytest.approx([0.05, 0.0, 0.0])


# ---------------------------------------------------------------- the hull against pymatgen

def _random_formation_energies(rng, n, at_an_end):
    """E_f per atom, positive where a structure has a reference's composition: pymatgen measures
    from the lowest entry at each end, ours from the named reference, and these agree only while
    the reference is that lowest entry."""
    e_f = rng.normal(-0.05, 0.1, n)
    return np.where(at_an_end, np.abs(e_f), e_f)


@pytest.mark.parametrize("polymorph_below_S", [False, True])
def test_hull_against_pymatgen_phase_diagram_with_elemental_references(polymorph_below_S):
    phase_diagram = pytest.importorskip("pymatgen.analysis.phase_diagram")
    from pymatgen.core import Composition
    rng = np.random.default_rng(5)
    counts = np.column_stack([rng.integers(0, 9, 40), rng.integers(1, 9, 40)])
    e_f = _random_formation_energies(rng, 40, counts[:, 0] == 0)
    if polymorph_below_S:
        counts[0], e_f[0] = (0, 4), -0.2  # a lower S polymorph: the hull's S end moves down to it
    n_atoms = counts.sum(axis=1)
    energy_eV = counts[:, 0] * CR.energy_eV + counts[:, 1] * S.energy_eV + e_f * n_atoms
    entries = [phase_diagram.PDEntry(Composition({"Cr": int(c[0]), "S": int(c[1])}), float(e))
               for c, e in zip(counts, energy_eV)]
    elements = [phase_diagram.PDEntry(Composition({"Cr": 1}), CR.energy_eV),
                phase_diagram.PDEntry(Composition({"S": 1}), S.energy_eV)]
    pd = phase_diagram.PhaseDiagram(entries + elements)

    f = formation_energies(counts, energy_eV, CR, S)
    hull = lower_hull(f.fraction, f.formation_energy_eV_per_atom)
    assert f.fraction == pytest.approx([e.composition.get_atomic_fraction("S") for e in entries], abs=1e-12)
    # The energy above the hull does not depend on where E_f is measured from; E_f itself does.
    assert hull.e_above_hull_eV_per_atom == pytest.approx([pd.get_e_above_hull(e) for e in entries], abs=1e-9)
    if not polymorph_below_S:
        assert f.formation_energy_eV_per_atom == pytest.approx([pd.get_form_energy_per_atom(e) for e in entries],
                                                               abs=1e-9)
    # pymatgen lists one entry per stable composition; ours is one index per corner.
    stable = {e.composition.reduced_formula for e in pd.stable_entries if any(e is x for x in entries)}
    assert {entries[i].composition.reduced_formula for i in hull.vertices} == stable


def test_hull_against_pymatgen_compound_phase_diagram_between_crs_and_crs2():
    phase_diagram = pytest.importorskip("pymatgen.analysis.phase_diagram")
    from pymatgen.core import Composition
    # Cr(1−x)S with 0 ≤ x ≤ 1/2: n_S S sites, n_S/2 ≤ n_Cr ≤ n_S.
    rng = np.random.default_rng(6)
    n_S = rng.integers(2, 17, 30)
    n_Cr = np.array([rng.integers(math.ceil(s / 2), s + 1) for s in n_S])
    counts = np.column_stack([n_Cr, n_S])
    units = np.column_stack([2 * n_Cr - n_S, n_S - n_Cr])  # formula units of CrS and CrS2
    e_f = _random_formation_energies(rng, 30, (units[:, 0] == 0) | (units[:, 1] == 0))
    energy_eV = units[:, 0] * CRS.energy_eV / 2 + units[:, 1] * CRS2.energy_eV + e_f * counts.sum(axis=1)
    entries = [phase_diagram.PDEntry(Composition({"Cr": int(c[0]), "S": int(c[1])}), float(e))
               for c, e in zip(counts, energy_eV)]
    terminals = [phase_diagram.PDEntry(Composition("Cr2S2"), CRS.energy_eV),
                 phase_diagram.PDEntry(Composition("CrS2"), CRS2.energy_eV)]
    cpd = phase_diagram.CompoundPhaseDiagram(entries + terminals, [Composition("CrS"), Composition("CrS2")],
                                             normalize_terminal_compositions=True)
    by_original = {id(e.original_entry): e for e in cpd.all_entries}
    transformed = [by_original[id(e)] for e in entries]

    f = formation_energies(counts, energy_eV, CRS, CRS2)
    hull = lower_hull(f.fraction, f.formation_energy_eV_per_atom)
    assert f.formation_energy_eV_per_atom == pytest.approx([cpd.get_form_energy_per_atom(e) for e in transformed],
                                                           abs=1e-9)
    assert hull.e_above_hull_eV_per_atom == pytest.approx([cpd.get_e_above_hull(e) for e in transformed], abs=1e-9)
    # The hull coordinate is the share of pymatgen's CrS2 pseudo-element (one per atom of CrS2).
    assert f.fraction == pytest.approx([e.composition.get_atomic_fraction(cpd.elements[1]) for e in transformed],
                                       abs=1e-12)
    stable = {id(e.original_entry) for e in cpd.stable_entries}
    assert set(hull.vertices.tolist()) == {i for i, e in enumerate(entries) if id(e) in stable}


# ---------------------------------------------------------------- ranking statistics

def average_ranks(values):
    """1-based ranks, ties sharing the mean of the ranks they span."""
    return [1 + sum(w < v for w in values) + (sum(w == v for w in values) - 1) / 2 for v in values]


def loop_spearman(a, b):
    ra, rb = average_ranks(a), average_ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb)


def loop_rmse(a, b):
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)) / len(a))


@pytest.mark.parametrize("seed", [0, 1])
def test_ranking_agreement_against_loops_with_ties(seed):
    rng = np.random.default_rng(seed)
    reference = np.round(rng.normal(0, 0.1, 25), 1)  # rounding makes ties on both sides
    predicted = np.round(reference + rng.normal(0, 0.08, 25), 1)
    rho, rmse = ranking_agreement(predicted, reference)
    assert rho == pytest.approx(loop_spearman(list(predicted), list(reference)), abs=1e-12)
    assert rmse == pytest.approx(loop_rmse(predicted, reference), abs=1e-12)


def test_ranking_agreement_leaves_out_nan_and_too_few_points():
    predicted = [0.1, np.nan, 0.3, 0.2, 0.5]
    reference = [0.0, 0.2, np.inf, 0.25, 0.4]
    rho, rmse = ranking_agreement(predicted, reference)  # pairs 0, 3, 4 are finite
    assert rho == pytest.approx(loop_spearman([0.1, 0.2, 0.5], [0.0, 0.25, 0.4]))
    assert rmse == pytest.approx(loop_rmse([0.1, 0.2, 0.5], [0.0, 0.25, 0.4]))

    rho, rmse = ranking_agreement([0.1, 0.2], [0.3, 0.1])
    assert math.isnan(rho) and rmse == pytest.approx(loop_rmse([0.1, 0.2], [0.3, 0.1]))
    rho, rmse = ranking_agreement([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    assert math.isnan(rho) and rmse == pytest.approx(loop_rmse([1.0] * 3, [0.1, 0.2, 0.3]))
    rho, rmse = ranking_agreement([np.nan], [1.0])
    assert math.isnan(rho) and math.isnan(rmse)


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("ref_a, ref_b, match", [
    (CRS, HullReference("Cr2S2", (2, 2), -30.0), "same composition"),
    (CRS, CRS, "same composition"),
    (CRS, HullReference("CrS-3", (3, 3), -45.0), "same composition"),
    (CRS, HullReference("none", (0, 0), 0.0), "not all 0"),
    (CRS, HullReference("bad", (1, 2), float("nan")), "finite"),
])
def test_references_that_cannot_span_the_hull_are_refused(ref_a, ref_b, match):
    with pytest.raises(ValueError, match=match):
        formation_energies([[1, 1]], [-10.0], ref_a, ref_b)


def test_compositions_outside_the_references_are_refused():
    with pytest.raises(ValueError, match=r"outside the span of CrS and CrS2.*negative"):
        formation_energies([[1, 1], [2, 1]], [-10.0, -20.0], CRS, CRS2)  # Cr2S is Cr-richer than CrS
    with pytest.raises(ValueError, match="outside the span"):
        formation_energies([[1, 3]], [-10.0], CRS, CRS2)  # CrS3 is S-richer than CrS2


@pytest.mark.parametrize("call, match", [
    (lambda: formation_energies([[1, 1, 1]], [-1.0], CR, S), "n_structures × 2"),
    (lambda: formation_energies([[1, 1]], [-1.0, -2.0], CR, S), "one energy per structure"),
    (lambda: formation_energies([[0, 0]], [-1.0], CR, S), "needs an atom"),
    (lambda: formation_energies([[1, 1]], [np.nan], CR, S), "finite"),
    (lambda: lower_hull([0.5, 1.2], [0.0, 0.0]), r"\[0, 1\]"),
    (lambda: lower_hull([0.5], [0.0, 0.1]), "one finite formation energy"),
    (lambda: lower_hull([0.5], [np.nan]), "one finite formation energy"),
    (lambda: lower_hull([0.5], [0.0]).e_above_hull_of([0.5], [0.0, 1.0]), "one finite formation energy"),
    (lambda: vacancy_fraction_x([1], [0]), "n_S > 0"),
    (lambda: ranking_agreement([1.0, 2.0], [1.0]), "differ in length"),
])
def test_bad_input_is_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_phase_tasks_never_import_dask_or_the_campaign():
    code = "import sys, tasks.phase.hull, tasks.phase.statistics; print(' '.join(sys.modules))"
    loaded = {m.split(".")[0] for m in subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                                      check=True).stdout.split()}
    assert not loaded & {"dask", "distributed", "campaign", "schedulers", "torch"}
