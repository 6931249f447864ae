"""The irradiation recipe's box on the campaign page: sputtering yield per (ion, energy) of the
latest ensemble with its confidence interval, recomputed (the recipe's own BCa / exact Poisson
intervals, campaign.recipes.irradiation_tables.yield_rows) as impacts are committed."""

from __future__ import annotations

from typing import Any, Mapping

from campaign.page.panel import Panel, PanelData, colours, columns, figure, html_table
from storage import CampaignStore


class YieldsPanel(Panel):
    name = "irradiation-yields"
    title = "Irradiation: sputtering yield per ion energy (impacts so far)"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.irradiation_tables import IRR_IMPACTS, yield_rows

        recipe = store.attrs.get("spec", {}).get("recipe", {})
        names = ("ion", "energy_eV", "species", "mean", "low", "high", "impacts", "method")
        # the whole sheet's yields only (total and per element): the layers' intervals are the report's
        pick = yield_rows(store, None, recipe.get("confidence", 0.95), recipe.get("seed", 0), -1, layers=("all",)) \
            if store.length(IRR_IMPACTS) else {name: [] for name in names}
        series = [f"{ion} ions: {'total' if s == 'all' else s}" for ion, s in zip(pick["ion"], pick["species"])]
        order = sorted(range(len(series)), key=lambda k: (series[k], pick["energy_eV"][k]))
        data = columns(series=[series[k] for k in order], colour=colours([series[k] for k in order]),
                       **{name: [pick[name][k] for k in order] for name in names})
        return {"yields": data, "table": html_table(data, [
            ("ion", "ion"), ("energy_eV", "E (eV)"), ("species", "species"), ("impacts", "impacts"),
            ("mean", "yield"), ("low", "low"), ("high", "high"), ("method", "interval")],
            {"energy_eV": "g", "mean": ".3f", "low": ".3f", "high": ".3f"})}

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import row

        source = models["yields"]
        fig = figure("yield (atoms per ion) with its confidence interval", "ion energy (eV)", "sputtering yield",
                     x_axis_type="log")
        fig.x_range.range_padding = 0.15  # the lowest and highest energies clear of the frame
        fig.segment(x0="energy_eV", x1="energy_eV", y0="low", y1="high", line_color="colour", source=source)
        fig.scatter(x="energy_eV", y="mean", color="colour", legend_field="series", size=7, source=source)
        fig.legend.location = "top_left"
        fig.legend.label_text_font_size = "8pt"
        return row(fig, models["table"], sizing_mode="stretch_width")


PANELS = (YieldsPanel(),)
