"""The active-learning recipe's boxes on the campaign page: per finished iteration the accurate,
candidate and failed fractions of the explored frames, and the committee's force deviations of
the latest iteration explored so far (committed exploration batches, before the iteration ends)."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from campaign.page.panel import Panel, PanelData, columns, figure, html_table
from storage import CampaignStore
from tasks.active.select import HISTOGRAM_EDGES_EV_PER_A

OVERFLOW_WIDTH = 0.04  # eV/Å: how wide the "above 0.5" bin is drawn


class IterationsPanel(Panel):
    name = "al-iterations"
    title = "Active learning: explored frames per finished iteration"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.active_learning import iteration_table

        rows = iteration_table(store)

        def col(name):
            return [r[name] for r in rows]

        data = columns(
            iteration=col("iteration"), accurate=col("accurate_fraction"), candidate=col("candidate_fraction"),
            failed=col("failed_fraction"), explored=col("n_explored"), selected=col("n_selected"),
            frames=col("n_training_frames"), force_rmse=col("test_force_rmse_eV_per_A"),
            energy_rmse=col("test_energy_rmse_meV_per_atom"), converged=["yes" if c else "" for c in col("converged")])
        return {"iterations": data, "table": html_table(data, [
            ("iteration", "iteration"), ("frames", "training frames"), ("energy_rmse", "E RMSE (meV/atom)"),
            ("force_rmse", "F RMSE (eV/Å)"), ("explored", "explored"), ("selected", "picked"),
            ("converged", "converged")], {"energy_rmse": ".1f", "force_rmse": ".3f"})}

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import row
        from bokeh.models import SingleIntervalTicker

        source = models["iterations"]
        fig = figure("fractions of explored frames", "iteration", "fraction", y_range=(0, 1.02))
        fig.xaxis.ticker = SingleIntervalTicker(interval=1)
        fig.vbar_stack(["accurate", "candidate", "failed"], x="iteration", width=0.8, source=source,
                       color=["#2ca02c", "#ff7f0e", "#d62728"], legend_label=["accurate", "candidate", "failed"])
        fig.legend.location = "top_left"
        return row(fig, models["table"], sizing_mode="stretch_width")


class DeviationPanel(Panel):
    name = "al-deviation"
    title = "Active learning: committee force deviation, latest iteration explored so far"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.active_learning import AL_EXPLORED

        explored = store.read(AL_EXPLORED.frames, ["iteration", "deviation_eV_per_A"])
        latest = int(explored["iteration"].max()) if len(explored["iteration"]) else None
        deviations = explored["deviation_eV_per_A"][explored["iteration"] == latest] if latest is not None \
            else np.zeros(0)
        counts, _ = np.histogram(deviations, HISTOGRAM_EDGES_EV_PER_A)
        edges = HISTOGRAM_EDGES_EV_PER_A.copy()
        edges[-1] = edges[-2] + OVERFLOW_WIDTH
        recipe = store.attrs.get("spec", {}).get("recipe", {})
        # a window edge beyond the histogram's range is left out, not drawn far off to the right
        trust = [recipe[k] for k in ("trust_lo", "trust_hi") if k in recipe and recipe[k] <= edges[-1]]
        caption = "no frame explored yet" if latest is None else f"iteration {latest}: {len(deviations)} frames " \
            f"explored; last bin: above {HISTOGRAM_EDGES_EV_PER_A[-2]:g} eV/Å"
        return {"histogram": columns(left=edges[:-1], right=edges[1:], frames=counts,
                                     fraction=counts / max(1, counts.sum())),
                "trust": columns(x=trust), "caption": caption}

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import column

        fig = figure("max force deviation of the committee (dashed: trust window)", "deviation (eV/Å)",
                     "fraction of explored frames")
        fig.quad(left="left", right="right", bottom=0, top="fraction", source=models["histogram"],
                 fill_color="#1f77b4", line_color="white")
        fig.vspan(x="x", source=models["trust"], line_dash="dashed", line_color="grey", line_width=2)
        return column(models["caption"], fig, sizing_mode="stretch_width")


PANELS = (IterationsPanel(), DeviationPanel())
