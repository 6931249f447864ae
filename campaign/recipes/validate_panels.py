"""The validate recipe's box on the campaign page: every property each source has computed so far,
beside the labeler's (one row per property and source; errors relative to the labeler)."""

from __future__ import annotations

from typing import Any, Mapping

from campaign.page.panel import Panel, PanelData, columns, html_table
from storage import CampaignStore


class ComparisonPanel(Panel):
    name = "validate-comparison"
    title = "Validation: properties computed so far"

    def read(self, store: CampaignStore) -> PanelData:
        from campaign.recipes.validate_report import table_rows

        _, rows = table_rows(store)
        flat = [(prop, unit, source, text) for prop, unit, cells in rows for source, text in cells.items()]
        data = columns(property=[r[0] for r in flat], unit=[r[1] for r in flat], source=[r[2] for r in flat],
                       value=[r[3] for r in flat])
        return {"properties": data, "table": html_table(data, [
            ("property", "property"), ("unit", "unit"), ("source", "source"), ("value", "value (error vs labeler)")],
            max_height_px=420)}

    def draw(self, models: Mapping[str, Any]) -> Any:
        return models["table"]


PANELS = (ComparisonPanel(),)
