"""Temperature schedules and move settings of Monte Carlo chains."""

from __future__ import annotations

from dataclasses import dataclass

EV_PER_A3_PER_GPA = 1.0 / 160.21766208


@dataclass(frozen=True)
class GeometricCycles:
    """Cycles of ``steps_per_cycle`` steps, each cooling geometrically from its start temperature to
    ``end_temperature_K`` (the study: 12 cycles starting at 20,000, 19,000, …, 9,000 K down to
    0.01 K); each cycle continues from the previous one's last structure."""

    start_temperatures_K: tuple[float, ...]
    steps_per_cycle: int
    end_temperature_K: float = 0.01

    @property
    def total_steps(self) -> int:
        return len(self.start_temperatures_K) * self.steps_per_cycle

    def cycle(self, step: int) -> int:
        return step // self.steps_per_cycle

    def step_in_cycle(self, step: int) -> int:
        return step % self.steps_per_cycle

    def temperature_K(self, step: int) -> float:
        start = self.start_temperatures_K[self.cycle(step)]
        fraction = self.step_in_cycle(step) / max(self.steps_per_cycle - 1, 1)
        return start * (self.end_temperature_K / start) ** fraction


@dataclass(frozen=True)
class ConstantTemperature:
    fixed_temperature_K: float
    steps: int

    @property
    def total_steps(self) -> int:
        return self.steps

    @property
    def steps_per_cycle(self) -> int:
        return self.steps

    def cycle(self, step: int) -> int:
        return 0

    def step_in_cycle(self, step: int) -> int:
        return step

    def temperature_K(self, step: int) -> float:
        return self.fixed_temperature_K


@dataclass(frozen=True)
class MoveSettings:
    """One proposal per chain and step: a cell move with probability ``cell_move_fraction``, else a
    swap of a group of (occupied, vacant) mobile-site pairs whose size is drawn uniformly from 1 to
    the limit in force (``swap_groups``: (first step within the cycle, largest group), ascending)."""

    cell_move_fraction: float = 0.12
    max_strain: float = 0.001  # each strained lattice vector is scaled by exp(ε), |ε| ≤ max_strain
    strained_axes: tuple[bool, bool, bool] = (True, True, True)
    swap_groups: tuple[tuple[int, int], ...] = ((0, 6), (10_000, 2))
    pressure_GPa: float = 0.0

    def largest_group(self, step_in_cycle: int) -> int:
        limit = self.swap_groups[0][1]
        for first, largest in self.swap_groups:
            if step_in_cycle >= first:
                limit = largest
        return limit
