"""Extra pages in Dask's dashboard, at its address and port (no new port is opened).

Dask builds the dashboard from ``distributed.dashboard.scheduler.applications`` (route → a
function of scheduler, template variables and bokeh document) when the scheduler starts; the
clusters we start run their scheduler in this process, so pages added to that table while the
cluster starts are served beside Dask's own. They are taken out again afterwards, so the table
only ever holds them for the cluster they belong to.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Mapping
from urllib.parse import urlsplit

DashboardPage = Callable[[Any, dict, Any], None]


@contextlib.contextmanager
def dashboard_pages(pages: Mapping[str, DashboardPage]) -> Iterator[list[str]]:
    """Yields the routes added (none where Dask cannot build its bokeh dashboard)."""
    try:
        from distributed.dashboard import scheduler as dashboard
    except ImportError:  # no bokeh, or one Dask refuses: Dask runs without a dashboard, so do we
        yield []
        return
    added = {route: page for route, page in pages.items() if route not in dashboard.applications}
    dashboard.applications.update(added)
    try:
        yield list(added)
    finally:
        for route in added:
            dashboard.applications.pop(route, None)


def page_link(dashboard_link: str, route: str) -> str:
    """The address of ``route`` beside the dashboard's status page ``dashboard_link`` (a prefix or
    a proxy's path before it is kept)."""
    parts = urlsplit(dashboard_link)
    return parts._replace(path=parts.path.rsplit("/", 1)[0] + "/" + route.strip("/"), query="").geturl()
