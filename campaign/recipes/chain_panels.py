"""The Monte Carlo recipes' box on the campaign page (anneal, slab_mc): energy per atom and
temperature of every chain against its step, from the trace each committed segment wrote."""

from __future__ import annotations

from typing import Any, Mapping

from campaign.page.panel import Panel, PanelData, colours, columns, figure, thin
from campaign.report import rows_by_chain
from storage import CampaignStore
from storage.tables import Table

POINTS_PER_CHAIN = 400


class ChainTracePanel(Panel):
    def __init__(self, name: str, title: str, trace: Table):
        self.name, self.title, self.trace = name, title, trace

    def read(self, store: CampaignStore) -> PanelData:
        trace = store.read(self.trace, ["chain", "step", "temperature_K", "energy_eV_per_atom"])
        chains = rows_by_chain(trace)
        shown = {chain: rows[thin(rows, POINTS_PER_CHAIN)] for chain, rows in chains.items()}
        names = list(shown)
        return {"chains": columns(
            chain=names, colour=colours(names), step=[trace["step"][r].tolist() for r in shown.values()],
            energy_eV_per_atom=[trace["energy_eV_per_atom"][r].tolist() for r in shown.values()],
            temperature_K=[trace["temperature_K"][r].tolist() for r in shown.values()],
            last_energy=[float(trace["energy_eV_per_atom"][r[-1]]) for r in chains.values()],
            last_step=[int(trace["step"][r[-1]]) for r in chains.values()])}

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import row

        source = models["chains"]
        energy = figure("energy per chain", "Monte Carlo step", "energy (eV/atom)")
        energy.multi_line(xs="step", ys="energy_eV_per_atom", line_color="colour", legend_field="chain", source=source)
        temperature = figure("temperature per chain", "Monte Carlo step", "temperature (K)")
        temperature.multi_line(xs="step", ys="temperature_K", line_color="colour", source=source)
        energy.legend.label_text_font_size = "8pt"
        return row(energy, temperature, sizing_mode="stretch_width")
