"""What the Monte Carlo recipes (anneal, slab_mc) share: their potential's checks at plan time and
the loop that advances groups of chains one keyed segment at a time.

A segment of a group is one stage item whose outcome is each chain's checkpoint; the next segment
of that group continues from the checkpoints the store holds. A relaunch plans the same keys, so
the runner skips the finished segments and every chain continues on its own trajectory.
"""

from __future__ import annotations

from typing import Callable, Sequence

from campaign.errors import SpecError
from campaign.recipe import RunContext
from campaign.recipes.potential_source import PotentialSource, potential_files
from campaign.stage import Stage, WorkItem
from tasks.potential import PotentialFiles


def monte_carlo_potential(source: PotentialSource, elements: set[str], of: str) -> tuple[PotentialFiles, float]:
    """The potential's files, each loaded once and checked: energies per atom (the local energy
    updates need them) and every element of ``of``; and the largest cutoff of its models."""
    from tasks.potential import atomic_energy_factory

    cutoffs = []

    def check(model, where: str) -> None:
        if getattr(model, "atomic_energies", None) is None and atomic_energy_factory(model) is None:
            raise SpecError(f"recipe.potential: {where} gives no energies per atom, which the Monte Carlo's local "
                            "energy updates need (Behler–Parrinello networks, committees and blends of them do)")
        known = set(model.elements)
        if elements - known:
            raise SpecError(f"recipe.potential knows {sorted(known)}, not {sorted(elements - known)} of {of}")
        cutoffs.append(float(model.cutoff_A))

    files = potential_files(source, check)
    return files, max(cutoffs)


def groups_of(starts: Sequence, size: int) -> list[tuple]:
    """Chains in groups of ``size``, one batched state (one task) each."""
    return [tuple(starts[k:k + size]) for k in range(0, len(starts), size)]


def run_segments(context: RunContext, groups: Sequence[tuple], n_segments: int,
                 key_of: Callable[[tuple, int], str], job_of: Callable[[tuple, int, tuple | None], object],
                 records_of: Callable[[str], dict[str, dict]], stage_of: Callable[[list[WorkItem], int], Stage],
                 finished: Callable[[], set[str]] = set, finished_as: str = "finished") -> list:
    """Advance every group (chains with a ``name``) segment by segment; returns the stages' reports.
    A group whose previous segment failed stops; chains named by ``finished()`` (read after each
    segment, e.g. those at their energy plateau: ``finished_as`` says so) leave their group."""
    groups, previous = list(groups), [None] * len(groups)  # each group's last segment key
    reports = []
    for segment in range(n_segments):
        done = finished() if segment else set()
        items = []
        for g, group in enumerate(groups):
            records = None
            if segment:
                stored = records_of(previous[g]) if previous[g] else {}
                kept = tuple(c for c in group if c.name not in done)
                if len(stored) != len(group) or not kept:
                    previous[g] = None
                    continue
                group, records = kept, tuple(stored[c.name] for c in kept)
            groups[g], previous[g] = group, key_of(group, segment)
            items.append(WorkItem(previous[g], job_of(group, segment, records)))
        if not items:
            context.say(f"segment {segment + 1}: no chain to continue ({len(done)} {finished_as}, the others have "
                        "no checkpoint to continue from); stopping")
            break
        reports.append(context.run(stage_of(items, segment)).report)
    return reports
