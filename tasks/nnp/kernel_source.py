"""Source text of the CPU symmetry-function kernels, specialised to one descriptor shape.

A general loop over (η, λ, ζ, model) with these counts read at run time keeps every
accumulator in memory and evaluates (1 + λ cos)^ζ by a data-dependent loop; that cost ~75 ns per
triplet. Written out for fixed counts, the accumulators are scalar locals, ζ = 24 becomes four
multiplications, and the compiler can schedule everything: several times faster. So the kernels
are generated as Python text for one ``KernelShape`` and compiled by numba (cpu_kernels.py).

The radial and cutoff functions (7 exponentials per pair) are computed in separate passes over
contiguous slots without branches or table lookups, which LLVM turns into SIMD code: four pairs at
a time. Two things allow it: numba's error_model='numpy' (its default checks every division), and
unsigned loop bounds (a signed index may be negative, and numba's wrap-around then breaks the
vector addressing).

Layouts (all arrays are per batch, pairs sorted by centre atom, ``segment`` their boundaries):
  features (N, F): radial blocks (neighbour element × m), then angular (pair type × η × λ × ζ),
    row ``row_of_atom[i]`` (atoms grouped by element, so each network reads one block); a block's
    first column is radial_base[element] or angular_base[pair type] (feature_layout.py: blocks of
    elements absent from the batch are left out), and grad (dE/dG) has the same columns;
  per pair: unit (P, 3), r (P,);
  radial slots: the pairs of centre c inside their radial cutoff are slots segment[c]:rad_end[c]
    (the list has a skin, whose pairs the radial terms skip); slot q holds pair rad_list[q], its
    rad_r, rad_rc (cutoff), rad_element (the neighbour's) and rdg (n_m, P) dG2/dr;
  angular slots: the angular pairs of centre c are slots ang_bounds[c, 0]:ang_bounds[c, E], grouped
    by neighbour element (ang_bounds (N, E + 1)); slot k holds pair ang_list[k], its ang_unit (3, P),
    ang_r, ang_inv_r, ang_rc, and aq / adq (n_η, P): Q_e = exp(−η_e r²) f_c(r) and dQ_e/dr;
  grad (M, N, F) dE/dG of M models; pair_grad (P, 3, M) dE/dv.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

# Each kernel's parameters, in the order of its generated ``def`` line. Callers pass arguments by
# these names (cpu_kernels.run_kernel puts them in this order), so a list written by hand can
# never drift from the signature.
KERNEL_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "features": ("positions", "cells", "pj", "shift", "atom_system", "species", "segment", "row_of_atom",
                 "radial_rc", "angular_rc", "pair_type", "radial_base", "angular_base", "unit", "r", "rad_list",
                 "rad_r", "rad_rc", "rad_element", "rad_end", "rdg", "ang_scratch", "ang_list", "ang_bounds",
                 "ang_unit", "ang_r", "ang_rc", "ang_inv_r", "aq", "adq", "out"),
    "gradient": ("pj", "species", "segment", "row_of_atom", "unit", "rad_list", "rad_element", "rad_end", "rdg",
                 "ang_list", "ang_bounds", "ang_unit", "ang_inv_r", "aq", "adq", "pair_type", "radial_base",
                 "angular_base", "grad", "pair_grad"),
}
KERNEL_ARGUMENTS["energy_features"] = KERNEL_ARGUMENTS["features"]  # the same, the gradient's arrays unwritten


@dataclass(frozen=True)
class KernelShape:
    """The numbers the generated code is specialised to, copied from descriptors.SymmetryParameters
    (cpu_inference.kernel_shape). The cutoff tables stay arguments: other cutoffs reuse compiled code."""

    n_elements: int
    radial_eta_scale: tuple[float, ...]  # η_m = scale_m / r_c² with r_c the pair's radial cutoff
    angular_etas: tuple[float, ...]  # η_e in 1/Å²
    angular_exponent_max: float  # largest η_e r² inside the angular cutoff
    lambdas: tuple[float, ...]
    zetas: tuple[int, ...]
    n_models: int = 0  # the gradient kernel is written out for this many models; features need none
    double: bool = True  # float64 model: exp to double precision; float32 needs fewer terms

    @property
    def n_lz(self) -> int:
        return len(self.lambdas) * len(self.zetas)

    @property
    def angular_width(self) -> int:
        return len(self.angular_etas) * self.n_lz

    @property
    def lz_scales(self) -> list[float]:
        """2^{1−ζ} of each (λ, ζ), applied to the sums rather than to every triplet."""
        return [2.0 ** (1 - z) for _ in self.lambdas for z in self.zetas]


def _powers(shape: KernelShape, slopes: bool) -> list[str]:
    """P{k} = (1 + λ cos)^ζ (and S{k} = (1 + λ cos)^{ζ−1}), k = λ-index · n_ζ + ζ-index, from
    binary powers of the clamped base shared by all ζ. The constants 2^{1−ζ} and ζλ are left to
    the caller."""
    needed = set(shape.zetas) | ({z - 1 for z in shape.zetas} if slopes else set())
    top = max(needed).bit_length()
    lines = []
    for li, lam in enumerate(shape.lambdas):
        lines.append(f"x{li}_1 = max(1.0 + {float(lam)!r} * cos, 0.0)")
        for bit in range(1, top):
            lines.append(f"x{li}_{1 << bit} = x{li}_{1 << (bit - 1)} * x{li}_{1 << (bit - 1)}")

        def power(n: int) -> str:
            factors = [f"x{li}_{1 << bit}" for bit in range(top) if n >> bit & 1]
            return " * ".join(factors) if factors else "1.0"

        for zi, z in enumerate(shape.zetas):
            k = li * len(shape.zetas) + zi
            lines.append(f"P{k} = {power(z)}")
            if slopes:
                lines.append(f"S{k} = {power(z - 1)}")
    return lines


# error_model='numpy': no ZeroDivisionError check per division, which would stop vectorisation.
# No nnan/ninf in fastmath: a blown-up MD step must still give NaN, not whatever the compiler assumed.
_OPTIONS = "error_model='numpy', fastmath={'contract', 'reassoc', 'nsz', 'arcp'}"


def _exp_squarings(bound: float) -> int:
    """Halvings that bring arguments up to ``bound`` into |z| <= 0.4 for the Taylor series."""
    return max(0, math.ceil(math.log2(max(bound, 1e-300) / 0.4)))


def _helpers(shape: KernelShape) -> str:
    """exp(−y) for 0 <= y <= bound as (Taylor series of exp(−y/2^s))^(2^s): no table, no branch,
    so loops that call it vectorise. Relative error ~1e-15 (degree 13) or ~4e-8 (degree 8, float32)."""
    degree = 13 if shape.double else 8
    functions = []
    # one function per exponent range: a small η needs fewer squarings than the largest
    angular_r2_max = shape.angular_exponent_max / max(shape.angular_etas)
    ranges = [(f"_exp_radial{m}", scale) for m, scale in enumerate(shape.radial_eta_scale)]
    ranges += [(f"_exp_angular{e}", eta * angular_r2_max) for e, eta in enumerate(shape.angular_etas)]
    for name, bound in ranges + [("_exp_cutoff", 2.0)]:
        s = _exp_squarings(bound)
        lines = ["", "", f'@njit(inline="always", {_OPTIONS})', f"def {name}(y):",
                 f'    """exp(−y) for 0 <= y <= {bound!r}."""', f"    z = y * {-1.0 / 2 ** s!r}",
                 f"    p = {1 / math.factorial(degree)!r}"]
        lines += [f"    p = p * z + {1 / math.factorial(n)!r}" for n in range(degree - 1, -1, -1)]
        lines += ["    p = p * p"] * s + ["    return p"]
        functions.append("\n".join(lines))
    return "\n".join(functions) + "\n"


def _def_line(name: str, arguments: tuple[str, ...]) -> list[str]:
    return textwrap.wrap(", ".join(arguments) + "):", width=118, initial_indent=f"def {name}(",
                         subsequent_indent=" " * 8, break_long_words=False, break_on_hyphens=False)


def _indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line for line in lines]


# x = min(r/r_c, 1): beyond the cutoff t = tanh(0) = 0, so f_c and its slope vanish without a branch
_CUTOFF = ["x = min(rr / rc, 1.0)", "e = _exp_cutoff(2.0 - 2.0 * x)", "t = (1.0 - e) / (1.0 + e)", "t2 = t * t",
           "fc = t2 * t", "dfc = -3.0 * t2 * (1.0 - t2) / rc"]


def _radial_pass(shape: KernelShape, slopes: bool) -> list[str]:
    """G2 terms of radial slots lo:hi summed per neighbour element (sum{t}_{m}; a masked sum, so the
    loop stays branch-free), and (``slopes``) their r-slopes into rdg."""
    n_m = len(shape.radial_eta_scale)
    lines = [f"sum{t}_{m} = 0.0" for t in range(shape.n_elements) for m in range(n_m)]
    lines += ["for q in range(lo, hi):", "    rr = rad_r[q]", "    rc = rad_rc[q]", "    tj = rad_element[q]",
              *_indent(_CUTOFF, 1), "    xx = x * x", "    slope = 2.0 * rr / (rc * rc)"]
    lines += [f"    w{t} = fc if tj == {t} else 0.0" for t in range(shape.n_elements)]
    for m, scale in enumerate(shape.radial_eta_scale):
        lines += [f"    g = _exp_radial{m}({scale!r} * xx)"]
        lines += [f"    rdg[{m}, q] = g * (dfc - {scale!r} * slope * fc)"] if slopes else []
        lines += [f"    sum{t}_{m} += g * w{t}" for t in range(shape.n_elements)]
    return lines


def _angular_pass(shape: KernelShape, slopes: bool) -> list[str]:
    """Q_e and (``slopes``) dQ_e/dr of angular slots lo:hi."""
    lines = ["for k in range(lo, hi):", "    rr = ang_r[k]", "    rc = ang_rc[k]", *_indent(_CUTOFF, 1),
             "    rr2 = rr * rr", *(["    ang_inv_r[k] = 1.0 / rr"] if slopes else [])]
    for e, eta in enumerate(shape.angular_etas):
        lines += [f"    g = _exp_angular{e}({eta!r} * rr2)", f"    aq[{e}, k] = g * fc"]
        lines += [f"    adq[{e}, k] = g * (dfc - {2.0 * eta!r} * rr * fc)"] if slopes else []
    return lines


def _features(shape: KernelShape, name: str, slopes: bool = True) -> list[str]:
    """The features; with ``slopes``, also every per-pair factor the gradient kernel reads (without:
    energies only, and none of those arrays is written)."""
    e_count, n_m, n_eta, n_lz = shape.n_elements, len(shape.radial_eta_scale), len(shape.angular_etas), shape.n_lz
    width = shape.angular_width
    triplet = ["cos = uax * ang_unit[0, bi] + uay * ang_unit[1, bi] + uaz * ang_unit[2, bi]"]
    triplet += _powers(shape, slopes=False)
    for e in range(n_eta):
        triplet.append(f"w = aq[{e}, bi]")
        triplet += [f"acc{e * n_lz + k} += w * P{k}" for k in range(n_lz)]
    lines = [
        *_def_line(name, KERNEL_ARGUMENTS["features"]),
        "    for c in prange(len(segment) - 1):",
        "        s0 = segment[c]",
        "        s1 = segment[c + 1]",
        "        n_rad = s0",
        "        n_ang = s0",
        "        row = row_of_atom[c]",
        "        tc = species[c]",
        "        # 1. pair vectors; pairs inside the radial cutoff copied to slots and angular ones noted,",
        "        # without a branch (n_rad, n_ang <= p). c's pairs are all in c's system: one cell read",
        "        s = atom_system[c]",
        *[f"        cell{a}{x} = cells[s, {a}, {x}]" for a in range(3) for x in range(3)],
        *[f"        centre{x} = positions[c, {x}]" for x in range(3)],
        "        for p in range(np.uint64(s0), np.uint64(s1)):",
        "            j = np.uint64(pj[p])",
    ]
    for x in range(3):
        lines.append(f"            v{x} = (positions[j, {x}] - centre{x} + shift[p, 0] * cell0{x} + shift[p, 1] * cell1{x}"
                     f" + shift[p, 2] * cell2{x})")
    lines += [
        "            rr = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)",
        "            r[p] = rr",
        "            inv = 1.0 / rr if rr > 0.0 else 0.0",
        "            unit[p, 0] = v0 * inv",
        "            unit[p, 1] = v1 * inv",
        "            unit[p, 2] = v2 * inv",
        "            tj = species[j]",
        "            rc = radial_rc[tc, tj]",
        *(["            rad_list[n_rad] = p"] if slopes else []),
        "            rad_r[n_rad] = rr",
        "            rad_rc[n_rad] = rc",
        "            rad_element[n_rad] = tj",
        "            n_rad += rr < rc",
        "            ang_scratch[n_ang] = p",
        "            n_ang += rr < angular_rc[tc, tj]",
        "        rad_end[c] = n_rad",
        "        # 2. radial terms of c's radial slots (SIMD)",
        "        lo = np.uint64(s0)",
        "        hi = np.uint64(n_rad)",
        *_indent(_radial_pass(shape, slopes), 2),
        *[line for t in range(e_count) for line in (
            f"        base = radial_base[{t}]", "        if base >= 0:",
            *[f"            out[row, base + {m}] += sum{t}_{m}" for m in range(n_m)])],
        "        # 3. angular pairs into slots s0:k grouped by neighbour element: a run of partners of",
        "        # one element shares its feature row, so the sums stay in registers over the run",
        "        k = s0",
        f"        for t in range({e_count}):",
        "            ang_bounds[c, t] = k",
        "            for q in range(np.uint64(s0), np.uint64(n_ang)):",
        "                p = np.uint64(ang_scratch[q])",
        "                if species[np.uint64(pj[p])] == t:",
        *(["                    ang_list[k] = p"] if slopes else []),
        "                    ang_unit[0, k] = unit[p, 0]",
        "                    ang_unit[1, k] = unit[p, 1]",
        "                    ang_unit[2, k] = unit[p, 2]",
        "                    ang_r[k] = r[p]",
        "                    ang_rc[k] = angular_rc[tc, t]",
        "                    k += 1",
        f"        ang_bounds[c, {e_count}] = k",
        "        lo = np.uint64(s0)",
        "        hi = np.uint64(k)",
        *_indent(_angular_pass(shape, slopes), 2),
        "        # 4. unordered triplets, pair types (ta, tb) outermost: a type's sums stay in registers",
        f"        for ta in range({e_count}):",
        f"            for tb in range(ta, {e_count}):",
        "                b_first = ang_bounds[c, tb]",
        "                b_end = ang_bounds[c, tb + 1]",
        "                if ang_bounds[c, ta] >= ang_bounds[c, ta + 1] or b_first >= b_end:",
        "                    continue",
        *[f"                total{i} = 0.0" for i in range(width)],
        "                for ai in range(ang_bounds[c, ta], ang_bounds[c, ta + 1]):",
        "                    uax = ang_unit[0, ai]",
        "                    uay = ang_unit[1, ai]",
        "                    uaz = ang_unit[2, ai]",
        *[f"                    acc{i} = 0.0" for i in range(width)],
        "                    for bi in range(np.uint64(max(ai + 1, b_first)), np.uint64(b_end)):",
        *_indent(triplet, 6),
        *[line for e in range(n_eta) for line in (
            f"                    qa = aq[{e}, ai]",
            *[f"                    total{e * n_lz + k} += qa * acc{e * n_lz + k}" for k in range(n_lz)])],
        "                base = angular_base[pair_type[ta, tb]]",
        *[f"                out[row, base + {i}] += {shape.lz_scales[i % n_lz]!r} * total{i}" for i in range(width)],
        "",
    ]
    return lines


def _gradient(shape: KernelShape, name: str) -> list[str]:
    """dE/dv per pair. For a triplet (a, b) with dE/dr_a, dE/dr_b, dE/dcos, the vector derivative
    dE/dv_a = dE/dr_a u_a + dE/dcos (u_b − cos u_a)/r_a is kept as sums over b of scalars
    (alpha, gamma) and of dE/dcos u_b (beta), combined once per a and partner element.

    Every per-model statement is written out once per model, the models' copies side by side, and
    pair_grad keeps the models contiguous (P, 3, M): that is the shape LLVM's SLP vectoriser packs
    into one SIMD lane per model (cpu_kernels.py compiles this kernel with it): a committee member
    beyond the first costs about a third of what it did in scalar code."""
    n_m, n_eta, n_lz, width = len(shape.radial_eta_scale), len(shape.angular_etas), shape.n_lz, shape.angular_width
    models = range(shape.n_models)
    slope_scales = [2.0 ** (1 - z) * z * float(lam) for lam in shape.lambdas for z in shape.zetas]
    linear = [k for k in range(n_lz) if shape.zetas[k % len(shape.zetas)] == 1]  # slope is a constant

    def each_model(*templates: str) -> list[str]:
        return [t.format(m=m) for t in templates for m in models]

    radial = ["p = np.uint64(rad_list[q])", "rb = np.uint64(radial_base[rad_element[q]])"]
    radial += [f"de{m} = " + " + ".join(f"grad[{m}, row, rb + np.uint64({k})] * rdg[{k}, q]" for k in range(n_m))
               for m in models]
    radial += [f"pair_grad[p, {x}, {m}] += de{m} * unit[p, {x}]" for x in range(3) for m in models]
    triplet = ["b = np.uint64(ang_list[bi])", "ubx = ang_unit[0, bi]", "uby = ang_unit[1, bi]", "ubz = ang_unit[2, bi]",
               "cos = uax * ubx + uay * uby + uaz * ubz", "inv_rb = ang_inv_r[bi]"]
    triplet += _powers(shape, slopes=True)
    for e in range(n_eta):
        triplet += [f"qb{e} = aq[{e}, bi]", f"dqb{e} = adq[{e}, bi]", f"qq{e} = qa{e} * qb{e}"]
    for e in range(n_eta):
        triplet += each_model(f"v{{m}}_{e} = " + " + ".join(f"g{{m}}_{e * n_lz + k} * P{k}" for k in range(n_lz)))
        triplet += each_model(f"s{{m}}_{e} = c{{m}}_{e} + " + " + ".join(f"h{{m}}_{e * n_lz + k} * S{k}"
                                                                       for k in range(n_lz) if k not in linear))
    triplet += each_model("dcos{m} = " + " + ".join(f"s{{m}}_{e} * qq{e}" for e in range(n_eta)),
                          "alpha{m} += " + " + ".join(f"v{{m}}_{e} * qb{e} * dqa{e}" for e in range(n_eta)),
                          "gamma{m} += dcos{m} * cos", "beta{m}_x += dcos{m} * ubx", "beta{m}_y += dcos{m} * uby",
                          "beta{m}_z += dcos{m} * ubz",
                          "drb{m} = " + " + ".join(f"v{{m}}_{e} * qa{e} * dqb{e}" for e in range(n_eta)),
                          "along_b{m} = drb{m} - dcos{m} * cos * inv_rb", "along_a{m} = dcos{m} * inv_rb")
    triplet += each_model(*(f"pair_grad[b, {xi}, {{m}}] += along_b{{m}} * ub{x} + along_a{{m}} * ua{x}"
                            for xi, x in enumerate("xyz")))
    # the constants 2^{1−ζ} (and ζλ of the slope) go into the run's coefficients, not every triplet
    load = [f"g{m}_{i} = {shape.lz_scales[i % n_lz]!r} * grad[{m}, row, base + {i}]" for i in range(width) for m in models]
    load += [f"h{m}_{i} = {slope_scales[i % n_lz]!r} * grad[{m}, row, base + {i}]" for i in range(width) for m in models]
    load += [f"c{m}_{e} = " + " + ".join(f"h{m}_{e * n_lz + k}" for k in linear) if linear else f"c{m}_{e} = 0.0"
             for e in range(n_eta) for m in models]
    combine = each_model("alpha{m} -= gamma{m} * inv_ra")
    combine += each_model(*(f"pair_grad[a, {xi}, {{m}}] += alpha{{m}} * ua{x} + beta{{m}}_{x} * inv_ra"
                            for xi, x in enumerate("xyz")))
    lines = [
        *_def_line(name, KERNEL_ARGUMENTS["gradient"]),
        "    for c in prange(len(segment) - 1):",
        "        row = row_of_atom[c]",
        "        for q in range(np.uint64(segment[c]), np.uint64(rad_end[c])):",
        *_indent(radial, 3),
        "        # pair types (ta, tb) outermost: their coefficients are loaded once per centre, not per a",
        f"        for ta in range({shape.n_elements}):",
        f"            for tb in range(ta, {shape.n_elements}):",
        "                b_first = ang_bounds[c, tb]",
        "                b_end = ang_bounds[c, tb + 1]",
        "                if ang_bounds[c, ta] >= ang_bounds[c, ta + 1] or b_first >= b_end:",
        "                    continue",
        "                base = angular_base[pair_type[ta, tb]]",
        *_indent(load, 4),
        "                for ai in range(ang_bounds[c, ta], ang_bounds[c, ta + 1]):",
        "                    a = np.uint64(ang_list[ai])",
        "                    uax = ang_unit[0, ai]",
        "                    uay = ang_unit[1, ai]",
        "                    uaz = ang_unit[2, ai]",
        "                    inv_ra = ang_inv_r[ai]",
        *[f"                    qa{e} = aq[{e}, ai]" for e in range(n_eta)],
        *[f"                    dqa{e} = adq[{e}, ai]" for e in range(n_eta)],
        *_indent(each_model("alpha{m} = 0.0", "gamma{m} = 0.0", "beta{m}_x = 0.0", "beta{m}_y = 0.0",
                            "beta{m}_z = 0.0"), 5),
        "                    for bi in range(np.uint64(max(ai + 1, b_first)), np.uint64(b_end)):",
        *_indent(triplet, 6),
        *_indent(combine, 5),
        "",
    ]
    return lines


KERNELS = {"features": _features, "gradient": _gradient,
           "energy_features": lambda shape, name: _features(shape, name, slopes=False)}


def kernel_source(shape: KernelShape, kernel: str) -> str:
    """A module with {kernel}_serial and {kernel}_parallel ('features' or 'gradient'): the two builds
    are separate functions so each has its own entry in numba's on-disk cache."""
    lines = [f'"""Generated by tasks/nnp/kernel_source.py: {kernel} for {shape!r}; do not edit."""', "",
             "import math", "", "import numpy as np", "from numba import njit, prange", _helpers(shape), ""]
    for build, extra in (("serial", ""), ("parallel", "parallel=True, ")):
        lines += [f"@njit(cache=True, {extra}{_OPTIONS})", *KERNELS[kernel](shape, f"{kernel}_{build}"), ""]
    return "\n".join(lines) + "\n"
