"""The campaign page: a bokeh document of the common panels and the store's recipe's panels.

One ``CampaignPage`` per store. While at least one browser has the page open, a reader thread
asks a process of its own to read the store every ``refresh_s`` (read-only, committed rows only:
``CampaignStore.open``; when the store's root metadata has not changed, only the rates) and keeps
the panels' data as a snapshot. The documents' callbacks, on the dashboard's event loop, only
copy a newer snapshot into their models: neither the scheduler's loop nor the driver's GIL waits
for the disk or the panels' arithmetic, and the page never writes. ``read_now`` reads in the
calling process (scripts, tests).

Served two ways: inside Dask's dashboard (``schedulers.dashboard.dashboard_pages`` with
``page.dask_document``; same address and port as Dask's own pages) during ``campaign launch``, and
by ``campaign.page.serve`` for any store, running or finished, without a cluster.
"""

from __future__ import annotations

import hashlib
import html
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from campaign.page.common import common_panels
from campaign.page.panel import Panel, PanelData
from campaign.recipe import Recipe, recipe_for, store_recipe_kind
from campaign.errors import SpecError
from storage import CampaignStore
from storage.errors import StoreError
from storage.schema import ZARR_NAME

ROUTE = "/campaign"
TITLE = "Campaign"


@dataclass
class Snapshot:
    version: int
    read_unix: float
    panels: Sequence[Panel] = ()
    data: dict[str, PanelData] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # panels that could not be read this time


def page_panels(store: CampaignStore) -> list[Panel]:
    """The common panels, then those of the store's recipe (a recipe this installation does not
    know still gets the common ones)."""
    try:
        recipe = recipe_for(store_recipe_kind(store))
    except SpecError:
        recipe = Recipe()
    return [*common_panels(), *recipe.panels()]


class CampaignPage:
    def __init__(self, store_dir: str | Path, refresh_s: float = 3.0):
        self.store_dir = Path(store_dir)
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._snapshot = Snapshot(version=0, read_unix=0.0)
        self._signature = b""  # of the store's root metadata at the last good read
        self._sessions = 0
        self._wanted = threading.Event()  # set while a browser has the page open
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._store: CampaignStore | None = None  # as opened by the last good read
        self._pool = None  # the reader's process (_read_elsewhere)
        self._reported: set[str] = set()

    # -- the reader thread -----------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot

    @property
    def watched(self) -> bool:
        """Whether a browser session has the page open (the reader reads only then)."""
        with self._lock:
            return self._sessions > 0

    def read_now(self) -> Snapshot:
        """Read the store and publish the snapshot. When the store's root metadata is unchanged
        since the last good read, only the live panels (rates, ETA) are read again, from the
        store as it was opened then."""
        started = time.time()  # the data shown is at least this recent
        signature = self._store_signature()
        previous = self.snapshot()
        unchanged = signature == self._signature and self._store is not None
        snapshot = self._read(previous, started, self._store if unchanged else None)
        if not unchanged and not snapshot.problems:
            self._signature = signature
        with self._lock:
            self._snapshot = snapshot
        return snapshot

    def _store_signature(self) -> bytes:
        # the root zarr.json holds the committed row counts and the launches: unchanged, nothing new
        try:
            return hashlib.sha256((self.store_dir / ZARR_NAME / "zarr.json").read_bytes()).digest()
        except OSError:
            return b""

    def _read(self, previous: Snapshot, started: float, store: CampaignStore | None) -> Snapshot:
        """Every panel from a newly opened store, or only the live ones from ``store``."""
        only_live = store is not None
        try:
            store = store or CampaignStore.open(self.store_dir)
            panels = previous.panels or page_panels(store)
        except StoreError as exc:
            return Snapshot(previous.version + 1, started, previous.panels, previous.data, [str(exc)])
        except Exception as exc:  # a file system's hiccup: say so, read again at the next refresh
            return Snapshot(previous.version + 1, started, previous.panels, previous.data,
                            [f"the store could not be read: {type(exc).__name__}: {exc}"])
        self._store = store
        data, problems = dict(previous.data), []
        for panel in panels:
            if only_live and not panel.live:
                continue
            try:
                data[panel.name] = panel.read(store)
            except Exception as exc:  # one panel's trouble must not take the page down
                problems.append(f"{panel.name}: {type(exc).__name__}: {exc}")
                if problems[-1] not in self._reported:  # once, not at every refresh
                    self._reported.add(problems[-1])
                    traceback.print_exc()
        return Snapshot(previous.version + 1, started, panels, data, problems)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wanted.wait()
            started = time.monotonic()
            try:
                self._read_elsewhere()
            except RuntimeError as exc:
                if "after shutdown" in str(exc):  # the interpreter is exiting and took the process pool
                    return
                traceback.print_exc()
            except Exception:  # store and panel trouble is reported by the read itself; this is ours
                traceback.print_exc()
            self._stop.wait(max(0.0, self.refresh_s - (time.monotonic() - started)))

    def _read_elsewhere(self) -> None:
        """``read_now`` in a process of its own, the result published here. The driver runs Dask's
        scheduler and the runner's loop in one interpreter: a reader thread there held its GIL
        long enough to cost a tenth of the tiny-task throughput (scripts/bench_overhead.py)."""
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        if self._pool is None:
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        try:
            read_unix, data, problems = self._pool.submit(_read_in_child, str(self.store_dir)).result()
        except BrokenProcessPool:  # the reader process died: a new one next time
            self._pool = None
            raise
        previous = self.snapshot()
        panels = previous.panels
        if not panels:
            try:
                panels = page_panels(CampaignStore.open(self.store_dir))
            except StoreError as exc:
                problems = [*problems, str(exc)]
        with self._lock:
            self._snapshot = Snapshot(previous.version + 1, read_unix, panels, data or previous.data, problems)

    def close(self) -> None:
        """Stop the reader (its cluster and server are gone; sessions may never be closed)."""
        self._stop.set()
        self._wanted.set()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _join(self) -> None:
        with self._lock:
            self._sessions += 1
            self._wanted.set()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="campaign-page-reader", daemon=True)
                self._thread.start()

    def _leave(self, session_context: Any) -> None:
        with self._lock:
            self._sessions -= 1
            if self._sessions <= 0:
                self._wanted.clear()

    # -- documents -------------------------------------------------------------------------
    def dask_document(self, scheduler: Any, extra: dict, doc: Any) -> None:
        """The signature of Dask's dashboard applications (``distributed.dashboard.scheduler``):
        the page in Dask's own template, with its navigation bar."""
        from distributed.dashboard.components.scheduler import BOKEH_THEME, env

        self.document(doc)
        doc.template = env.get_template("simple.html")
        doc.template_variables.update(extra)
        # our page in the navigation bar too (Dask's own pages list only theirs)
        doc.template_variables["pages"] = [*extra.get("pages", []), ROUTE.strip("/")]
        doc.theme = BOKEH_THEME

    def document(self, doc: Any) -> None:
        from bokeh.layouts import column
        from bokeh.models import ColumnDataSource, Div

        self._join()
        doc.on_session_destroyed(self._leave)
        doc.title = f"{TITLE}: {self.store_dir.name}"
        status = Div(text="reading the store…", name="page.status", sizing_mode="stretch_width")
        root = column(status, sizing_mode="stretch_width", name="page.root")
        doc.add_root(root)
        models: dict[str, dict[str, Any]] = {}
        sources: list[Any] = []  # data sources added as roots of their own
        shown = {"version": 0}

        def refresh() -> None:
            snapshot = self.snapshot()
            if snapshot.version == shown["version"]:
                return
            if snapshot.data and set(models) != set(snapshot.data):  # first data, or a panel read at last
                models.clear()
                for source in sources:
                    doc.remove_root(source)
                sources.clear()
                boxes = []
                for panel in snapshot.panels:
                    if panel.name not in snapshot.data:
                        continue
                    mine = models[panel.name] = {}
                    for name, value in snapshot.data[panel.name].items():
                        model_name = f"{panel.name}.{name}"
                        mine[name] = Div(text=value, name=model_name, sizing_mode="stretch_width") \
                            if isinstance(value, str) else ColumnDataSource(value, name=model_name)
                    boxes.append(Div(text=f"<h3 style='margin:0.6em 0 0.2em'>{html.escape(panel.title)}</h3>"))
                    try:
                        boxes.append(panel.draw(mine))
                    except Exception as exc:  # the other panels are still drawn
                        boxes.append(Div(text=f"<span style='color:#b00'>{html.escape(repr(exc))}</span>"))
                root.children = [status, *boxes]
                for mine in models.values():  # drawn or not, every source reaches the browser
                    sources.extend(model for model in mine.values() if isinstance(model, ColumnDataSource))
                for source in sources:
                    doc.add_root(source)
            else:
                for panel_name, mine in models.items():
                    for name, value in snapshot.data.get(panel_name, {}).items():
                        if isinstance(value, str):
                            if mine[name].text != value:
                                mine[name].text = value
                        elif mine[name].data != value:
                            mine[name].data = value
            shown["version"] = snapshot.version
            problems = "".join(f"<br><span style='color:#b00'>{html.escape(p)}</span>" for p in snapshot.problems)
            status.text = (f"refreshed {time.strftime('%H:%M:%S UTC', time.gmtime(snapshot.read_unix))} "
                           f"(every {self.refresh_s:g} s, committed rows only){problems}")
            status.tags = [snapshot.read_unix]  # when the shown data was read, for scripts and tests

        doc.add_periodic_callback(refresh, 250)


_READERS: dict[str, CampaignPage] = {}  # in the reader's process: one page (its ledger follower) per store


def _read_in_child(store_dir: str) -> tuple[float, dict[str, PanelData], list[str]]:
    page = _READERS.setdefault(store_dir, CampaignPage(store_dir))
    snapshot = page.read_now()
    return snapshot.read_unix, snapshot.data, snapshot.problems
