"""Source text of the CPU symmetry-function kernels, specialised to one descriptor shape.

A general loop over (η, λ, ζ, model) with these counts read at run time keeps every
accumulator in memory and evaluates (1 + λ cos)^ζ by a data-dependent loop; that cost ~75 ns per
triplet. Written out for fixed counts, the accumulators are scalar locals, ζ = 24 becomes four
multiplications, and the compiler can schedule everything: several times faster. So the kernels
are generated as Python text for one ``KernelShape`` and compiled by numba (cpu_kernels.py).

Layouts (all arrays are per batch, pairs sorted by centre atom, ``segment`` their boundaries):
  features (N, F): radial block (neighbour element × m), then angular (pair type × η × λ × ζ),
    row ``row_of_atom[i]`` (atoms grouped by element, so each network reads one block);
  per pair: unit (P, 3), r (P,), rdg (P, n_m) dG2/dr, aq / adq (P, n_η) Q_e and dQ_e/dr with
    Q_e(r) = exp(−η_e r²) f_c(r);
  ang_list (P,) angular pairs of each centre grouped by neighbour element, ang_bounds (N, E + 1);
  grad (M, N, F) dE/dG of M models; pair_grad (P, M, 3) dE/dv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class KernelShape:
    n_elements: int
    radial_eta_scale: tuple[float, ...]  # η_m = scale_m / r_c² (Imbalzano rule, per pair cutoff)
    angular_etas: tuple[float, ...]
    lambdas: tuple[float, ...]
    zetas: tuple[int, ...]
    n_models: int = 0  # the gradient kernel is written out for this many models; features need none
    # Taylor degree of the inlined exp: 12 gives double precision; float32 models need 7 (5e-9)
    exp_degree: int = 12

    @property
    def n_radial(self) -> int:
        return self.n_elements * len(self.radial_eta_scale)

    @property
    def n_lz(self) -> int:
        return len(self.lambdas) * len(self.zetas)

    @property
    def angular_width(self) -> int:
        return len(self.angular_etas) * self.n_lz


def _powers(shape: KernelShape, slopes: bool) -> list[str]:
    """P{k} = 2^{1−ζ}(1 + λ cos)^ζ (and S{k} = dP/dcos), k = λ-index · n_ζ + ζ-index, from
    binary powers of the clamped base shared by all ζ."""
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
            scale = 2.0 ** (1 - z)
            lines.append(f"P{k} = {scale!r} * {power(z)}")
            if slopes:
                lines.append(f"S{k} = {scale * z * float(lam)!r} * {power(z - 1)}")
    return lines


def _cutoff(rc: str) -> list[str]:
    return [f"t = _tanh_unit(1.0 - rr / {rc})", "t2 = t * t", "fc = t2 * t", f"dfc = -3.0 * t2 * (1.0 - t2) / {rc}"]


# exp and tanh are most of the per-pair cost (6 + 3 exponentials, 2 tanh per pair); libm's take
# 7 and 18 ns. Inlined here they overlap with each other and the arithmetic around them.
def _helpers(shape: KernelShape) -> str:
    taylor = "".join(f"    p = p * r + {1 / math.factorial(n)!r}\n" for n in range(shape.exp_degree - 1, -1, -1))
    return f'''
# 2^-k, k = 0..1023
_POW2 = np.ldexp(1.0, -np.arange(1024))


@njit(inline="always")
def _exp_neg(x):
    """exp(x) for x <= 0: x = k ln2 + r, |r| <= ln2/2, Taylor series to r^{shape.exp_degree}."""
    x = max(x, -700.0)
    k = math.floor(x * 1.4426950408889634 + 0.5)
    r = (x - k * 6.93147180369123816490e-01) - k * 1.90821492927058770002e-10
    p = {1 / math.factorial(shape.exp_degree)!r}
{taylor}    return p * _POW2[int(-k)]


@njit(inline="always")
def _tanh_unit(y):
    """tanh(y) for 0 <= y <= 1 (1 − r/r_c inside a cutoff), absolute error as _exp_neg's."""
    e = _exp_neg(-2.0 * y)
    return (1.0 - e) / (1.0 + e)
'''


def _indent(lines: list[str], depth: int) -> list[str]:
    return ["    " * depth + line for line in lines]


def _features(shape: KernelShape, name: str) -> list[str]:
    e_count, n_m, n_eta, width = shape.n_elements, len(shape.radial_eta_scale), len(shape.angular_etas), shape.angular_width
    radial = _cutoff("rc") + ["inv_rc2 = 1.0 / (rc * rc)"]
    for m, scale in enumerate(shape.radial_eta_scale):
        radial += [f"eta = {scale!r} * inv_rc2", "g = _exp_neg(-eta * rr * rr)",
                   f"out[row, tj * {n_m} + {m}] += g * fc", f"rdg[p, {m}] = g * (dfc - 2.0 * eta * rr * fc)"]
    no_radial = [f"rdg[p, {m}] = 0.0" for m in range(n_m)]
    angular = _cutoff("rca")
    for e, eta in enumerate(shape.angular_etas):
        angular += [f"g = _exp_neg(-{eta!r} * rr * rr)", f"aq[p, {e}] = g * fc",
                    f"adq[p, {e}] = g * (dfc - 2.0 * {eta!r} * rr * fc)"]
    triplet = ["b = ang_list[bi]", "cos = uax * unit[b, 0] + uay * unit[b, 1] + uaz * unit[b, 2]"]
    triplet += _powers(shape, slopes=False)
    for e in range(n_eta):
        triplet.append(f"w = qa{e} * aq[b, {e}]")
        triplet += [f"acc{e * shape.n_lz + k} += w * P{k}" for k in range(shape.n_lz)]
    lines = [
        f"def {name}(positions, cells, pj, shift, psys, species, segment, row_of_atom, radial_rc, angular_rc,",
        "        pair_type, unit, r, rdg, aq, adq, ang_scratch, ang_list, ang_bounds, out):",
        "    for c in prange(len(segment) - 1):",
        "        s0 = segment[c]",
        "        s1 = segment[c + 1]",
        "        n_ang = s0",
        "        row = row_of_atom[c]",
        "        tc = species[c]",
        "        for p in range(s0, s1):",
        "            j = pj[p]",
        "            s = psys[p]",
    ]
    for x in range(3):
        lines.append(f"            v{x} = (positions[j, {x}] - positions[c, {x}] + shift[p, 0] * cells[s, 0, {x}]"
                     f" + shift[p, 1] * cells[s, 1, {x}] + shift[p, 2] * cells[s, 2, {x}])")
    lines += [
        "            rr = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)",
        "            r[p] = rr",
        "            inv = 1.0 / rr if rr > 0.0 else 0.0",
        "            unit[p, 0] = v0 * inv",
        "            unit[p, 1] = v1 * inv",
        "            unit[p, 2] = v2 * inv",
        "            tj = species[j]",
        "            rc = radial_rc[tc, tj]",
        "            if rr < rc:",
        *_indent(radial, 4),
        "            else:",
        *_indent(no_radial, 4),
        "            rca = angular_rc[tc, tj]",
        "            if rr < rca:",
        *_indent(angular, 4),
        "                ang_scratch[n_ang] = p",
        "                n_ang += 1",
        "        # angular pairs grouped by neighbour element: a run of partners of one element",
        "        # shares its feature row, so the sums stay in registers over the run",
        "        k = s0",
        f"        for t in range({e_count}):",
        "            ang_bounds[c, t] = k",
        "            for q in range(s0, n_ang):",
        "                if species[pj[ang_scratch[q]]] == t:",
        "                    ang_list[k] = ang_scratch[q]",
        "                    k += 1",
        f"        ang_bounds[c, {e_count}] = k",
        "        for ai in range(s0, k):",
        "            a = ang_list[ai]",
        "            ta = species[pj[a]]",
        "            uax = unit[a, 0]",
        "            uay = unit[a, 1]",
        "            uaz = unit[a, 2]",
        *[f"            qa{e} = aq[a, {e}]" for e in range(n_eta)],
        f"            for tb in range(ta, {e_count}):",
        "                lo = max(ai + 1, ang_bounds[c, tb])",
        "                hi = ang_bounds[c, tb + 1]",
        "                if lo >= hi:",
        "                    continue",
        *[f"                acc{i} = 0.0" for i in range(width)],
        "                for bi in range(lo, hi):",
        *_indent(triplet, 5),
        f"                base = {shape.n_radial} + pair_type[ta, tb] * {width}",
        *[f"                out[row, base + {i}] += acc{i}" for i in range(width)],
        "",
    ]
    return lines


def _gradient(shape: KernelShape, name: str) -> list[str]:
    n_m, n_eta, n_lz, width = len(shape.radial_eta_scale), len(shape.angular_etas), shape.n_lz, shape.angular_width
    models = range(shape.n_models)
    radial = ["tj = species[pj[p]]", "if r[p] < radial_rc[tc, tj]:"]
    for m in models:
        terms = " + ".join(f"grad[{m}, row, tj * {n_m} + {k}] * rdg[p, {k}]" for k in range(n_m))
        radial += [f"    de = {terms}"] + [f"    pair_grad[p, {m}, {x}] += de * unit[p, {x}]" for x in range(3)]
    triplet = ["b = ang_list[bi]", "ubx = unit[b, 0]", "uby = unit[b, 1]", "ubz = unit[b, 2]",
               "cos = uax * ubx + uay * uby + uaz * ubz", "inv_rb = 1.0 / r[b]"]
    triplet += _powers(shape, slopes=True)
    triplet += [f"da{x} = (ub{x} - cos * ua{x}) * inv_ra" for x in "xyz"]
    triplet += [f"db{x} = (ua{x} - cos * ub{x}) * inv_rb" for x in "xyz"]
    for e in range(n_eta):
        triplet += [f"qb{e} = aq[b, {e}]", f"dqb{e} = adq[b, {e}]", f"qq{e} = qa{e} * qb{e}"]
    for m in models:
        for e in range(n_eta):
            triplet.append(f"v{e} = " + " + ".join(f"g{m}_{e * n_lz + k} * P{k}" for k in range(n_lz)))
            triplet.append(f"s{e} = " + " + ".join(f"g{m}_{e * n_lz + k} * S{k}" for k in range(n_lz)))
        triplet.append("dcos = " + " + ".join(f"s{e} * qq{e}" for e in range(n_eta)))
        triplet.append("dra = " + " + ".join(f"v{e} * qb{e} * dqa{e}" for e in range(n_eta)))
        triplet.append("drb = " + " + ".join(f"v{e} * qa{e} * dqb{e}" for e in range(n_eta)))
        for xi, x in enumerate("xyz"):
            triplet.append(f"fa{m}_{xi} += dra * ua{x} + dcos * da{x}")
            triplet.append(f"pair_grad[b, {m}, {xi}] += drb * ub{x} + dcos * db{x}")
    load = [f"g{m}_{i} = grad[{m}, row, base + {i}]" for m in models for i in range(width)]
    lines = [
        f"def {name}(pj, species, segment, row_of_atom, radial_rc, unit, r, rdg, aq, adq, ang_list, ang_bounds,",
        "        pair_type, grad, pair_grad):",
        "    for c in prange(len(segment) - 1):",
        "        row = row_of_atom[c]",
        "        tc = species[c]",
        "        for p in range(segment[c], segment[c + 1]):",
        *_indent(radial, 3),
        f"        for ai in range(ang_bounds[c, 0], ang_bounds[c, {shape.n_elements}]):",
        "            a = ang_list[ai]",
        "            ta = species[pj[a]]",
        "            uax = unit[a, 0]",
        "            uay = unit[a, 1]",
        "            uaz = unit[a, 2]",
        "            inv_ra = 1.0 / r[a]",
        *[f"            qa{e} = aq[a, {e}]" for e in range(n_eta)],
        *[f"            dqa{e} = adq[a, {e}]" for e in range(n_eta)],
        *[f"            fa{m}_{x} = 0.0" for m in models for x in range(3)],
        f"            for tb in range(ta, {shape.n_elements}):",
        "                lo = max(ai + 1, ang_bounds[c, tb])",
        "                hi = ang_bounds[c, tb + 1]",
        "                if lo >= hi:",
        "                    continue",
        f"                base = {shape.n_radial} + pair_type[ta, tb] * {width}",
        *_indent(load, 4),
        "                for bi in range(lo, hi):",
        *_indent(triplet, 5),
        *[f"            pair_grad[a, {m}, {x}] += fa{m}_{x}" for m in models for x in range(3)],
        "",
    ]
    return lines


KERNELS = {"features": _features, "gradient": _gradient}


def kernel_source(shape: KernelShape, kernel: str) -> str:
    """A module with {kernel}_serial and {kernel}_parallel ('features' or 'gradient'): the two builds
    are separate functions so each has its own entry in numba's on-disk cache."""
    lines = [f'"""Generated by tasks/nnp/kernel_source.py: {kernel} for {shape!r}; do not edit."""', "",
             "import math", "", "import numpy as np", "from numba import njit, prange", _helpers(shape), ""]
    # no nnan/ninf: a blown-up MD step must still give NaN, not whatever the compiler assumed
    fast = "fastmath={'contract', 'reassoc', 'nsz', 'arcp'}"
    for build, options in ((("serial", f"cache=True, {fast}"), ("parallel", f"cache=True, parallel=True, {fast}"))):
        lines += [f"@njit({options})", *KERNELS[kernel](shape, f"{kernel}_{build}"), ""]
    return "\n".join(lines) + "\n"
