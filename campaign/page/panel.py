"""One box of the campaign page: what it reads from the store, and how it draws that.

A panel's ``read`` runs in the page's reader thread, never on the dashboard's event loop, and
returns the same names every time: each name maps to columns (a dict of equal-length lists,
a bokeh ``ColumnDataSource`` in the page) or to a string (HTML, such as a table from
``html_table``, shown in a ``Div``). ``draw`` runs once per browser session, on the first data,
and lays out bokeh models bound to those; later reads only replace their data. Every model is
named ``"<panel>.<name>"`` and every data source is in the page's document, drawn or not, so a
script or a browser test reads what the page shows (``Bokeh.documents[0].get_model_by_name``).
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from storage import CampaignStore

PanelData = dict[str, dict[str, list] | str]

# enough to tell a dozen series apart (chains, ions × species); colours repeat after that
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939")


class Panel:
    """Subclass: set ``name`` and ``title``, write ``read`` and ``draw``."""

    name: str
    title: str
    live: bool = False  # read again at every refresh, even when nothing was committed (rates, ETA)

    def read(self, store: "CampaignStore") -> PanelData:
        raise NotImplementedError

    def draw(self, models: Mapping[str, Any]) -> Any:
        """A bokeh layout of ``models`` (name → ColumnDataSource or Div)."""
        raise NotImplementedError


def columns(**values: Sequence) -> dict[str, list]:
    """Plain lists (what a ColumnDataSource sends as JSON): NaN and None become None (bokeh shows
    an empty cell, JSON has no NaN), numpy scalars become Python ones."""
    return {name: [_plain(v) for v in vs] for name, vs in values.items()}


def _plain(value):
    if value is None:
        return None
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def colours(labels: Sequence[str]) -> list[str]:
    """One colour per distinct label, in sorted order of the labels (stable across refreshes)."""
    order = {label: k for k, label in enumerate(sorted(set(labels)))}
    return [PALETTE[order[label] % len(PALETTE)] for label in labels]


def thin(x: np.ndarray, at_most: int) -> np.ndarray:
    """Indices of at most ``at_most`` evenly spread points, the first and last included: a browser
    draws a curve of a few hundred points as well as one of a million."""
    if len(x) <= at_most:
        return np.arange(len(x))
    return np.unique(np.linspace(0, len(x) - 1, at_most).round().astype(int))


TABLE_STYLE = ("<style>table{border-collapse:collapse;font-size:13px;width:100%}th{text-align:left;"
               "border-bottom:1px solid #999}td,th{padding:2px 8px}tr:nth-child(even){background:#f2f2f2}</style>")


def html_table(data: Mapping[str, Sequence], fields: Sequence[tuple[str, str]],
               formats: Mapping[str, str] | None = None, max_height_px: int = 320) -> str:
    """An HTML table of ``data`` (columns as from ``columns``) showing ``fields`` (column, header);
    ``formats``: column → format spec such as ".3f"; None shows as –. Tables are HTML in a Div
    rather than bokeh DataTables: a DataTable of bokeh 3.9.1–3.9.2 does not redraw when its data
    is replaced (bokeh issue 15328), and a live page replaces it every refresh."""
    formats = formats or {}

    def cell(name, value):
        if value is None:
            return "–"
        return html.escape(format(value, formats[name]) if name in formats else str(value))

    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in fields)
    n = len(data[fields[0][0]]) if fields else 0
    body = "".join("<tr>" + "".join(f"<td>{cell(f, data[f][k])}</td>" for f, _ in fields) + "</tr>" for k in range(n))
    return (f"{TABLE_STYLE}<div style='max-height:{max_height_px}px;overflow:auto'><table><thead><tr>{head}</tr>"
            f"</thead><tbody>{body}</tbody></table></div>")


def figure(title: str, x_label: str, y_label: str, **kwargs):
    from bokeh.plotting import figure as bokeh_figure

    fig = bokeh_figure(title=title, height=300, sizing_mode="stretch_width", tools="pan,wheel_zoom,box_zoom,reset,save",
                       **kwargs)
    fig.xaxis.axis_label, fig.yaxis.axis_label = x_label, y_label
    return fig
