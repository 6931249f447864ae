"""What the campaign layer costs on top of Dask, and how labeling scales with workers.

Measured side by side in one run on one LocalCluster:

Both use the cluster `campaign launch` builds (schedulers.local.local_cluster).

  raw_ms_per_task          client.map of N tiny tasks, gathered (plain Dask)
  campaign_ms_per_task     the same N tiny tasks through campaign.runner.run_stage: keys,
                           as_completed, ledger rows committed to a real Zarr store
  campaign_vs_raw_throughput   raw_ms_per_task / campaign_ms_per_task (goal >= 0.7)
  label_1w_per_s, label_2w_per_s   tblite labels per second (3x3 MoS2, 27 atoms) with 1 and 2 workers
  parallel_efficiency      label_2w_per_s / (2 * label_1w_per_s) (goal >= 0.9)
  n_tiny_tasks, n_label_structures, cores

With --browser, also the campaign page's cost to the driver: the tiny tasks through the runner
on a cluster whose dashboard serves the campaign page (campaign.page) of the store they commit
to, in rounds that take turns with the page closed and open in a headless Chromium (which of
the two goes first alternates; the browser runs on the same cores, so this is an upper bound for
a page watched from a laptop):

  page_closed_ms_per_task, page_open_ms_per_task   best of --page-rounds each
  page_open_vs_closed_throughput   page_closed_ms_per_task / page_open_ms_per_task (goal >= 0.95)
  page_browser_cores       CPU seconds of Chromium's processes per second of an open round (median)
  page_rounds_refreshed    open rounds in which the page showed a new read of the store (all, or
                           the page was not live)

The last line printed is one JSON object with all of these.
Usage: python scripts/bench_overhead.py [--tasks 5000] [--structures 24] [--browser [--page-rounds 4] [--page-only]]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from distributed import Client

from campaign.keys import task_key
from campaign.recipes.label import label_items, labeled_frame_rows
from campaign.runner import run_stage
from campaign.stage import Stage, WorkItem
from schedulers.local import local_cluster
from schedulers.settings import LocalSettings
from storage import CampaignStore
from tasks.generate import monolayer_mx2, perturbed_copies
from tasks.labeling import TbliteLabeler, label_batch
from tasks.outcome import Outcome
from tasks.structures import Structure


def tiny(x):
    return x


def tiny_batch(keys, payloads):
    return [Outcome(key=k, value=p) for k, p in zip(keys, payloads)]


def raw_dask(client: Client, n: int) -> float:
    start = time.perf_counter()
    client.gather(client.map(tiny, range(n), pure=False))
    return time.perf_counter() - start


def through_campaign(client: Client, n: int, tag: str, store_dir: Path | None = None) -> float:
    """Seconds for ``n`` tiny tasks through the runner, committed to a new store (or ``store_dir``)."""
    items = [WorkItem(task_key("tiny", 1, {"i": i, "run": tag}), i) for i in range(n)]
    stage = Stage("tiny", items, tiny_batch, batch_size=1)
    with tempfile.TemporaryDirectory() as tmp, \
            CampaignStore.open_for_writing(store_dir or Path(tmp) / "s", "bench") as store:
        before = store.length("ledger")
        start = time.perf_counter()
        report = run_stage(client, store, stage, launch=0, progress=False)
        elapsed = time.perf_counter() - start
        assert report.done == n and store.length("ledger") == before + n
    return elapsed


def page_overhead(n: int, rounds: int) -> tuple[float, float, int, float]:
    """Seconds per tiny task with the campaign page closed and open (best of ``rounds`` each, taking
    turns), and in how many open rounds the page showed a new read of the store."""
    from campaign.page.document import ROUTE, CampaignPage
    from schedulers.dashboard import dashboard_pages, page_link
    from headless_chromium import open_chromium  # beside this script

    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "s"
        CampaignStore.open_for_writing(store_dir, "bench").close()
        page = CampaignPage(store_dir)
        with dashboard_pages({ROUTE: page.dask_document}):
            cluster = local_cluster(LocalSettings(workers=2, dashboard_address="127.0.0.1:0"))
        browser = open_chromium()
        try:
            with Client(cluster) as client:
                url = page_link(client.dashboard_link, ROUTE)
                through_campaign(client, 200, "warm", store_dir)
                closed, opened, refreshes, browser_cpu = [], [], 0, []
                for r in range(rounds):
                    for page_open in ((False, True) if r % 2 == 0 else (True, False)):  # who goes first alternates
                        if not page_open:
                            browser.get("about:blank")
                            _wait_until_unwatched(page)
                            closed.append(through_campaign(client, n, f"closed{r}", store_dir))
                            continue
                        browser.get(url)
                        first = _wait_for_page(browser)
                        cpu_before = _browser_cpu_s(browser)
                        opened.append(through_campaign(client, n, f"open{r}", store_dir))
                        browser_cpu.append((_browser_cpu_s(browser) - cpu_before) / opened[-1])
                        refreshes += int(_wait_for_page(browser, after=first) > first)
        finally:
            browser.quit()
            cluster.close()
            page.close()
    return min(closed) / n, min(opened) / n, refreshes, statistics.median(browser_cpu)


def _wait_until_unwatched(page, timeout_s: float = 120.0) -> None:
    """Until the server has dropped the session the browser left (bokeh does so some seconds
    later), the page's reader still reads: a closed round starts only after that."""
    deadline = time.monotonic() + timeout_s
    while page.watched:
        if time.monotonic() > deadline:
            raise RuntimeError("the left page's session was never dropped")
        time.sleep(0.2)


def _browser_cpu_s(browser) -> float:
    """CPU seconds used so far by the browser's processes (Chromium runs on the cores the
    benchmark uses: part of what an open page costs here, none of it on a laptop's browser)."""
    import psutil

    total = 0.0
    for process in psutil.Process(browser.service.process.pid).children(recursive=True):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _wait_for_page(browser, after: float = 0.0, timeout_s: float = 60.0) -> float:
    """When the data the open page shows was read (campaign.page.document tags its status Div)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        read_at = browser.execute_script(
            "const m = window.Bokeh && Bokeh.documents.length && Bokeh.documents[0].get_model_by_name('page.status');"
            "return m && m.tags.length ? m.tags[0] : 0;") or 0.0
        if read_at > after:
            return float(read_at)
        time.sleep(0.1)
    raise RuntimeError("the campaign page did not refresh")


def label_throughput(n_workers: int, structures: list[Structure]) -> float:
    labeler = TbliteLabeler()
    items = label_items(structures, labeler)
    stage = Stage("label", items, label_batch, kwargs={"labeler": labeler}, batch_size=1,
                  store_rows=functools.partial(labeled_frame_rows, labeler=labeler))
    with local_cluster(LocalSettings(workers=n_workers, dashboard_address=":0")) as cluster, \
            Client(cluster) as client, tempfile.TemporaryDirectory() as tmp:
        # warm every worker (imports, tblite's first-call set-up) before the clock starts
        client.run(label_batch, ["warm"], structures[:1], labeler)
        with CampaignStore.open_for_writing(Path(tmp) / "s", "bench") as store:
            start = time.perf_counter()
            report = run_stage(client, store, stage, launch=0, progress=False)
            elapsed = time.perf_counter() - start
    assert report.done == len(items)
    return len(items) / elapsed


def runner_and_labels(args) -> dict:
    """The tiny tasks through the runner against raw Dask, and tblite labeling on 1 and 2 workers."""
    with local_cluster(LocalSettings(workers=2, dashboard_address=":0")) as cluster, Client(cluster) as client:
        raw_dask(client, 200)
        through_campaign(client, 200, "warm")
        raw, camp = [], []
        for r in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            raw.append(raw_dask(client, args.tasks))
            camp.append(through_campaign(client, args.tasks, str(r)))
    raw_ms = 1e3 * statistics.median(raw) / args.tasks
    camp_ms = 1e3 * statistics.median(camp) / args.tasks
    print(f"tiny tasks: raw Dask {raw_ms:.3f} ms/task, campaign runner {camp_ms:.3f} ms/task, "
          f"campaign/raw throughput {raw_ms / camp_ms:.2f} (goal >= 0.7)")

    structures = [Structure.from_atoms(a, "bench") for a in
                  perturbed_copies(monolayer_mx2(), args.structures, seed=0, max_strain=0.03, rattle_A=0.05)]
    one = label_throughput(1, structures)
    two = label_throughput(2, structures)
    efficiency = two / (2 * one)
    print(f"tblite labeling: {one:.2f}/s with 1 worker, {two:.2f}/s with 2 workers, "
          f"parallel efficiency {efficiency:.2f} (goal >= 0.9)")
    return {
        "raw_ms_per_task": round(raw_ms, 4), "campaign_ms_per_task": round(camp_ms, 4),
        "campaign_vs_raw_throughput": round(raw_ms / camp_ms, 3), "label_1w_per_s": round(one, 3),
        "label_2w_per_s": round(two, 3), "parallel_efficiency": round(efficiency, 3),
        "n_label_structures": len(structures),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--structures", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--browser", action="store_true", help="also the campaign page's cost, open in Chromium")
    parser.add_argument("--page-rounds", type=int, default=4)
    parser.add_argument("--page-only", action="store_true", help="with --browser: only the page's cost")
    args = parser.parse_args()
    result = {"n_tiny_tasks": args.tasks, "cores": os.cpu_count()}
    if not args.page_only:
        result.update(runner_and_labels(args))
    if args.browser:
        closed_s, open_s, refreshes, browser_cpu = page_overhead(args.tasks, args.page_rounds)
        ratio = closed_s / open_s
        print(f"campaign page: {1e3 * closed_s:.3f} ms/task closed, {1e3 * open_s:.3f} ms/task open in Chromium, "
              f"throughput open/closed {ratio:.3f} (goal >= 0.95), refreshed in {refreshes} of {args.page_rounds}; "
              f"Chromium used {browser_cpu:.3f} of a core meanwhile")
        result.update(page_closed_ms_per_task=round(1e3 * closed_s, 4), page_open_ms_per_task=round(1e3 * open_s, 4),
                      page_open_vs_closed_throughput=round(ratio, 3), page_rounds_refreshed=refreshes,
                      page_browser_cores=round(browser_cpu, 3))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
