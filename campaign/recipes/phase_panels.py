"""The phase-diagram recipe's boxes on the campaign page: per composition the cells enumerated,
ranked, relaxed and checked, with ρ of the potential's and the cluster expansion's ranking; and
the convex hull: the one the recipe wrote at its end or, before that, the hull of the labeler's
relaxed structures committed so far (the recipe's own hull_rows)."""

from __future__ import annotations

import html
from typing import Any, Mapping

import numpy as np

from campaign.page.panel import Panel, PanelData, columns, figure, html_table
from storage import CampaignStore


class CompositionsPanel(Panel):
    name = "phase-compositions"
    title = "Phase diagram: cells per composition, ranking quality ρ"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.phase_report import status_rows

        status = status_rows(store)
        rows = status["compositions"]
        rounds = status["ce_rounds"]
        ce = "no cluster-expansion fit yet" if not rounds else \
            f"cluster expansion: {len(rounds)} fits, last: {rounds[-1]['structures']} structures, " \
            f"CV {rounds[-1]['cv_meV_per_site']:.1f} meV/site"
        data = columns(**{name: [r[name] for r in rows] for name in
                          ("x", "enumerated", "ranked", "relaxed", "checked", "rho_potential", "rho_ce")})
        return {"compositions": data, "ce": ce, "table": html_table(data, [
            ("x", "x"), ("enumerated", "enumerated"), ("ranked", "ranked"), ("relaxed", "relaxed"),
            ("checked", "checked"), ("rho_potential", "ρ potential"), ("rho_ce", "ρ CE")],
            {"x": ".4f", "rho_potential": ".3f", "rho_ce": ".3f"})}

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import column

        return column(models["ce"], models["table"], sizing_mode="stretch_width")


class HullPanel(Panel):
    name = "phase-hull"
    title = "Phase diagram: convex hull"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.phase_report import latest
        from campaign.recipes.phase_tables import PHASE_HULL

        if store.length(PHASE_HULL):
            hull, caption = latest(store.read(PHASE_HULL)), "the hull the recipe wrote at its end"
        else:
            hull, caption = self._so_far(store)
        x = np.asarray(hull.get("vacancy_fraction", []), float)
        ef = 1000 * np.asarray(hull.get("formation_energy_eV_per_atom", []), float)
        on = np.asarray(hull.get("on_hull", []), bool)
        formula = [str(f) for f in hull.get("formula", [])]
        order = np.argsort(x[on])
        return {"points": columns(x=x, formation_meV_per_atom=ef, formula=formula,
                                  on_hull=["yes" if o else "" for o in on]),
                "hull": columns(x=x[on][order], formation_meV_per_atom=ef[on][order],
                                formula=[formula[i] for i in np.flatnonzero(on)[order]]),
                "caption": caption}

    @staticmethod
    def _so_far(store: CampaignStore) -> tuple[dict, str]:
        from campaign.errors import SpecError
        from campaign.recipes.phase_diagram import PhaseDiagramSpec, hull_rows
        from campaign.recipes.phase_tables import PHASE_HULL

        try:
            recipe = PhaseDiagramSpec.model_validate(store.attrs.get("spec", {}).get("recipe", {}))
            return hull_rows(recipe, store, -1)[PHASE_HULL.name], "so far: the labeler's relaxed structures committed"
        except (SpecError, ValueError, KeyError) as exc:  # a reference phase not relaxed yet
            return {}, html.escape(f"no hull yet ({exc})")

    def draw(self, models: Mapping[str, Any]) -> Any:
        from bokeh.layouts import column
        from bokeh.models import HoverTool

        fig = figure("formation energy (line: hull)", "x in M(1−x)A", "formation energy (meV/atom)")
        fig.scatter(x="x", y="formation_meV_per_atom", source=models["points"], color="grey", size=6)
        fig.line(x="x", y="formation_meV_per_atom", source=models["hull"], color="#d62728", line_width=2)
        fig.scatter(x="x", y="formation_meV_per_atom", source=models["hull"], color="#d62728", size=8)
        fig.add_tools(HoverTool(tooltips=[("", "@formula"), ("x", "@x{0.000}"),
                                          ("E_f", "@formation_meV_per_atom{0.0} meV/atom")]))
        return column(models["caption"], fig, sizing_mode="stretch_width")


PANELS = (CompositionsPanel(), HullPanel())
