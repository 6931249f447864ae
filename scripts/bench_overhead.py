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

The last line printed is one JSON object with all of these.
Usage: python scripts/bench_overhead.py [--tasks 5000] [--structures 24]
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


def through_campaign(client: Client, n: int, tag: str) -> float:
    items = [WorkItem(task_key("tiny", 1, {"i": i, "run": tag}), i) for i in range(n)]
    stage = Stage("tiny", items, tiny_batch, batch_size=1)
    with tempfile.TemporaryDirectory() as tmp, CampaignStore.open_for_writing(Path(tmp) / "s", "bench") as store:
        start = time.perf_counter()
        report = run_stage(client, store, stage, launch=0, progress=False)
        elapsed = time.perf_counter() - start
        assert report.done == n and store.length("ledger") == n
    return elapsed


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--structures", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

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
    print(json.dumps({
        "raw_ms_per_task": round(raw_ms, 4), "campaign_ms_per_task": round(camp_ms, 4),
        "campaign_vs_raw_throughput": round(raw_ms / camp_ms, 3), "label_1w_per_s": round(one, 3),
        "label_2w_per_s": round(two, 3), "parallel_efficiency": round(efficiency, 3),
        "n_tiny_tasks": args.tasks, "n_label_structures": len(structures), "cores": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
