"""What a store says about its campaign, read from the store alone (no cluster)."""

from __future__ import annotations

from storage import CampaignStore
from storage.ledger import failures, stage_summary


def campaign_status(store: CampaignStore, max_failures: int = 20) -> dict:
    attrs = store.attrs
    return {
        "campaign": attrs.get("campaign"),
        "store": str(store.directory.resolve()),
        "schema_version": attrs.get("schema_version"),
        "launches": len(attrs.get("launches", [])),
        "frames": store.length("frames"),
        "stages": stage_summary(store),
        "failures": [{k: f[k] for k in ("key", "stage", "error", "error_kind", "worker")}
                     for f in failures(store, limit=max_failures)],
        "iterations": iteration_table(store),
    }


ITERATION_COLUMNS = ("iteration", "n_training_frames", "test_energy_rmse_meV_per_atom", "test_force_rmse_eV_per_A",
                     "n_explored", "accurate_fraction", "candidate_fraction", "failed_fraction", "n_selected",
                     "n_labeled_before_next", "train_s", "explore_s", "label_s", "converged")


def iteration_table(store: CampaignStore) -> list[dict]:
    """One row per finished active-learning iteration (empty for other recipes)."""
    table = store.read("al_iterations", ITERATION_COLUMNS)
    return [{c: table[c][i].item() for c in ITERATION_COLUMNS} for i in range(store.length("al_iterations"))]


def format_status(status: dict) -> str:
    lines = [f"campaign {status['campaign']}  store {status['store']}",
             f"launches {status['launches']}  labeled frames {status['frames']}", "",
             f"{'stage':<16}{'done':>8}{'failed':>8}{'pending':>9}"]
    for stage, c in status["stages"].items():
        lines.append(f"{stage:<16}{c['done']:>8}{c['failed']:>8}{c['pending']:>9}")
    if status["iterations"]:
        lines += ["", f"{'iter':>4}{'frames':>8}{'E meV/at':>10}{'F eV/Å':>8}{'explored':>10}{'accurate':>10}"
                      f"{'cand.':>7}{'failed':>8}{'picked':>8}{'in time':>8}{'train s':>9}{'expl. s':>8}{'label s':>8}"]
        for r in status["iterations"]:
            lines.append(f"{r['iteration']:>4}{r['n_training_frames']:>8}{r['test_energy_rmse_meV_per_atom']:>10.1f}"
                         f"{r['test_force_rmse_eV_per_A']:>8.3f}{r['n_explored']:>10}{r['accurate_fraction']:>10.3f}"
                         f"{r['candidate_fraction']:>7.3f}{r['failed_fraction']:>8.3f}{r['n_selected']:>8}"
                         f"{r['n_labeled_before_next']:>8}{r['train_s']:>9.1f}{r['explore_s']:>8.1f}{r['label_s']:>8.1f}"
                         + ("  converged" if r["converged"] else ""))
    if status["failures"]:
        lines += ["", "failed items (a relaunch retries them):"]
        lines += [f"  {f['stage']} {f['key'][:12]}  [{f['error_kind']}] {f['error']}" for f in status["failures"]]
    return "\n".join(lines)
