"""``initial.irradiation`` of the active-learning spec: the MoS2 study's irradiation-ready initial
data (its Table I) as spec sections, and the structures they make. Each section is optional;
``{}`` gives the study's values. The generators are tasks/active/irradiation_data.py."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from ase.data import chemical_symbols
from pydantic import Field, field_validator, model_validator

from campaign.errors import SpecError
from campaign.keys import derive_seed
from campaign.recipes.structures import load_structures
from campaign.spec import StrictModel, StructureSource
from tasks.active.initial import dimers
from tasks.active.irradiation_data import (DEFECT_NAMES, DefectName, dimer_grid_A, formula_unit,
                                           formula_units_for_box, interstitial, monolayer, nanopore, point_defect,
                                           random_packing, scaled)
from tasks.cell_validity import MIN_WIDTH_A
from tasks.structures import Structure

MAX_DIMER_DISTANCES = 1000  # per pair: a step typo (0.0001) must not plan a million labels


class IrradiationDimers(StrictModel):
    """Dimers of every element pair from the repulsion switch's outer radius to dissociation."""

    min_A: float = Field(1.2, gt=0)
    max_A: float = Field(5.0, gt=0)
    step_A: float = Field(0.1, gt=0)

    @model_validator(mode="after")
    def _a_grid(self) -> "IrradiationDimers":
        if self.max_A < self.min_A:
            raise ValueError(f"max_A ({self.max_A}) must not be below min_A ({self.min_A})")
        if (self.max_A - self.min_A) / self.step_A + 1 > MAX_DIMER_DISTANCES:
            raise ValueError(f"more than {MAX_DIMER_DISTANCES} distances per pair; raise step_A")
        return self

    def distances_A(self) -> list[float]:
        return dimer_grid_A(self.min_A, self.max_A, self.step_A)


class IrradiationInterstitials(StrictModel):
    """One extra atom at a random position of the host, its nearest neighbour ≥ min_distance_A away."""

    count: int = Field(10, ge=0, le=100_000, description="structures per element")
    elements: list[str] | None = Field(None, min_length=1, description="default: every element of the campaign")
    min_distance_A: float = Field(1.2, gt=0, description="the study's 1.2 Å, the repulsion switch's outer radius")
    margin_A: float = Field(1.5, ge=0, description="a sheet: how far beyond its outer atoms along the "
                            "normal the atom may land")

    @field_validator("elements")
    @classmethod
    def _symbols(cls, elements: list[str] | None) -> list[str] | None:
        unknown = [e for e in elements or [] if e not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"not chemical symbols: {unknown}")
        return elements


class IrradiationPackings(StrictModel):
    """Liquid-like random packings of the host's composition in a periodic cube."""

    count: int = Field(4, ge=0, le=100_000)
    density_g_per_cm3: float = Field(4.8, gt=0, le=25.0, description="the study: liquid MoS2, 4.8 g/cm³")
    min_distance_A: float = Field(2.0, gt=0, description="PACKMOL's usual tolerance")
    formula_units: int | None = Field(None, ge=1, le=1000, description="default: the fewest whose cube is "
                                      f"≥ {MIN_WIDTH_A:g} Å wide (the cell-validity rule)")


class IrradiationScaled(StrictModel):
    """The host with every interatomic distance scaled (tasks.active.irradiation_data.scaled)."""

    # Below 0.5 MoS2's Mo–S bond is under 1.2 Å, where the repulsion table, not the network,
    # is in charge; above 1.5 the sheet is taken apart, which dimers and isolated atoms cover.
    scales: list[Annotated[float, Field(ge=0.5, le=1.5)]] = Field(
        default_factory=lambda: [round(0.5 + 0.1 * k, 1) for k in range(11)], min_length=1)
    min_width_A: float = Field(MIN_WIDTH_A, gt=0, description="the host is repeated until the scaled cell "
                               "is this wide (the cell-validity rule)")


class IrradiationDefects(StrictModel):
    """Vacancies and antisites of an MX2 sheet; M is the metal, X the chalcogen (V_X2 on MoS2 is V_S2)."""

    names: list[DefectName] = Field(default_factory=lambda: list(DEFECT_NAMES), min_length=1)
    copies: int = Field(1, ge=0, le=10_000, description="per name, each at its own seeded site")

    @field_validator("names", mode="before")
    @classmethod
    def _known(cls, names):
        unknown = [n for n in names if n not in DEFECT_NAMES] if isinstance(names, list) else []
        if unknown:
            raise ValueError(f"unknown defect name(s) {unknown}; known: {', '.join(DEFECT_NAMES)} "
                             "(M: the metal, X: the chalcogen; V_S2 on MoS2 is V_X2, S2_Mo is X2_M)")
        return names


class IrradiationNanopores(StrictModel):
    """M_nX_m pores for every n in ``metals`` and m in ``chalcogens`` (except the empty pore)."""

    metals: list[Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    chalcogens: list[Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=lambda: list(range(7)),
                                                                   min_length=1)
    copies: int = Field(1, ge=0, le=10_000, description="per pore, each at its own seeded centre")

    def pores(self) -> list[tuple[int, int]]:
        return [(n, m) for n in sorted(set(self.metals)) for m in sorted(set(self.chalcogens)) if n + m > 0]


class IrradiationData(StrictModel):
    """The study's Table I beyond perturbed cells. Geometry comes from ``host`` (default: the first
    initial structure); the MoS2 study cuts defects from 6×6 and pores from 4×4 sheets."""

    host: StructureSource | None = Field(None, description="its first structure is the host")
    dimers: IrradiationDimers | None = None
    interstitials: IrradiationInterstitials | None = None
    packings: IrradiationPackings | None = None
    scaled: IrradiationScaled | None = None
    defects: IrradiationDefects | None = None
    nanopores: IrradiationNanopores | None = None


def irradiation_structures(data: IrradiationData, base: list[Structure], elements: tuple[str, ...],
                           seed: int) -> list[Structure]:
    """The structures ``data`` asks for, tagged by kind (irr-dimer, irr-interstitial, irr-packing,
    irr-scaled, irr-vacancy-V_S2, irr-antisite-Mo_S, irr-nanopore-Mo1S3, ...). ``elements``: the
    committee's elements; ``seed``: initial.seed. Each kind (each defect name, each pore) draws from
    its own stream of ``seed``, so adding a section leaves the structures, and keys, of the others."""
    host = (load_structures([data.host]) if data.host is not None else base)[0].to_atoms()
    outside = sorted(set(host.get_chemical_symbols()) - set(elements))
    extra = sorted(set((data.interstitials.elements or []) if data.interstitials else []) - set(elements))
    if outside or extra:
        raise SpecError(f"initial.irradiation: {outside + extra} are not elements of initial.structures or "
                        f"explore.structures ({', '.join(elements)}): the committee would not know them")

    def rng(*path) -> np.random.Generator:
        return np.random.default_rng(derive_seed(seed, "irradiation", *path))

    out: list[Structure] = []

    def add(atoms_list, tag: str) -> None:
        out.extend(Structure.from_atoms(a, tag) for a in atoms_list)

    try:
        if data.dimers is not None:
            add(dimers(elements, data.dimers.distances_A()), "irr-dimer")
        if (i := data.interstitials) is not None:
            for element in i.elements or elements:
                g = rng("interstitial", element)
                add([interstitial(host, element, i.min_distance_A, g, i.margin_A) for _ in range(i.count)],
                    "irr-interstitial")
        if (p := data.packings) is not None:
            unit = formula_unit(host)
            n = p.formula_units or formula_units_for_box(unit, p.density_g_per_cm3)
            g = rng("packing")
            add([random_packing(unit, n, p.density_g_per_cm3, p.min_distance_A, g) for _ in range(p.count)],
                "irr-packing")
        if data.scaled is not None:
            add([scaled(host, s, data.scaled.min_width_A) for s in data.scaled.scales], "irr-scaled")
        if (d := data.defects) is not None:
            sheet = monolayer(host)
            for name in d.names:
                g = rng("defect", name)
                kind = "vacancy" if name.startswith("V_") else "antisite"
                add([point_defect(host, name, g) for _ in range(d.copies)], f"irr-{kind}-{sheet.concrete(name)}")
        if (pores := data.nanopores) is not None:
            sheet = monolayer(host)
            for n, m in pores.pores():
                g = rng("nanopore", n, m)
                add([nanopore(host, n, m, g) for _ in range(pores.copies)],
                    f"irr-nanopore-{sheet.metal}{n}{sheet.chalcogen}{m}")
    except ValueError as exc:
        raise SpecError(f"initial.irradiation: {exc}") from None
    return out
