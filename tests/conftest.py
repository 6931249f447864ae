from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import pytest
import yaml
import zarr
from distributed import Client, LocalCluster

from storage import CampaignStore
from storage.errors import StoreError
from storage.schema import ZARR_NAME


@pytest.fixture(scope="session")
def client():
    """One real LocalCluster (2 single-threaded worker processes) shared by in-process launches."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster) as c:
            yield c


def write_spec(directory: Path, name: str = "t", structures: list | None = None, **top) -> Path:
    """A spec file in ``directory`` whose store is ``directory/store``."""
    spec = {
        "name": name,
        "store": str(directory / "store"),
        "recipe": {"kind": "label", "batch_size": 2, "structures": structures or [small_crs(count=4)]},
        **top,
    }
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def small_crs(count: int, seed: int = 0, supercell=(1, 1, 2), **extra) -> dict:
    """8-atom NiAs CrS cells: a fraction of a second each with GFN1-xTB."""
    return {"prototype": "nias", "formula": "CrS", "a_A": 3.45, "c_A": 5.75, "supercell": list(supercell),
            "count": count, "max_strain": 0.03, "rattle_A": 0.05, "seed": seed, **extra}


def mos2_3x3(count: int, seed: int = 0) -> dict:
    return {"prototype": "mx2", "formula": "MoS2", "a_A": 3.18, "supercell": [3, 3, 1], "count": count,
            "max_strain": 0.03, "rattle_A": 0.05, "seed": seed}


def mos2_and_crs(rattle_A: float, crs_supercell: tuple[int, int, int]) -> list:
    """A 3x3 MoS2 sheet (pbc in-plane) and a NiAs CrS bulk cell, rattled with fixed seeds."""
    from ase.build import mx2

    from tasks.generate import nias_bulk

    mos2 = mx2("MoS2", size=(3, 3, 1), vacuum=6.0)
    mos2.rattle(rattle_A, seed=1)
    crs = nias_bulk("CrS", 3.45, 5.75, crs_supercell)
    crs.rattle(rattle_A, seed=2)
    return [mos2, crs]


def committed(store_dir: Path) -> dict:
    """The store's commit pointer, read the way any outside reader would."""
    path = store_dir / ZARR_NAME
    if not (path / "zarr.json").exists():
        return {}
    return dict(zarr.open_group(path, mode="r").attrs.get("committed", {}))


def tree_digest(directory: Path) -> str:
    """A hash of every file's path and bytes under directory."""
    h = hashlib.sha256()
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(directory)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def load_json(text: str) -> dict:
    return json.loads(text)


def rattled_sheets_and_one_without_mo(n_rattled: int) -> list:
    """Structures of 2x2 MoS2 sheets: ``n_rattled`` rattled copies (seeds 0, 1, ...), then one with
    every Mo removed (an element a structure lacks)."""
    import numpy as np
    from ase.build import mx2

    from tasks.active.initial import vacancy
    from tasks.structures import Structure

    base = mx2("MoS2", size=(2, 2, 1), vacuum=6.0)
    structures = [Structure.from_atoms(base.copy()) for _ in range(n_rattled)]
    for k, s in enumerate(structures):
        s.positions_A[:] += np.random.default_rng(k).normal(0.0, 0.05, s.positions_A.shape)
    return structures + [Structure.from_atoms(vacancy(base, "Mo", 4, np.random.default_rng(0)))]


def done_in_stage(store_dir: Path, stage: str) -> int:
    """Items the store's ledger marks done in ``stage`` (0 while the store does not exist yet)."""
    try:
        with CampaignStore.open(store_dir) as store:
            ledger = store.read("ledger", ["stage", "status"])
    except (StoreError, KeyError):
        return 0
    return sum(1 for s, st in zip(ledger["stage"], ledger["status"]) if s == stage and st == "done")


def launch_cli(spec: Path) -> subprocess.CompletedProcess:
    """``campaign launch SPEC`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "campaign.cli", "launch", str(spec), "--no-progress"],
                          capture_output=True, text=True, timeout=900)


def sorted_rows(table: dict, *by: str) -> dict:
    """A table's rows sorted by the columns ``by`` (strings compared as text)."""
    order = np.lexsort(tuple(np.asarray([str(v) for v in table[b]]) if table[b].dtype == object else table[b]
                             for b in reversed(by)))
    return {k: v[order] for k, v in table.items()}


def kill_launch_once_done(spec: Path, store_dir: Path, stage: str, count: int = 1, timeout_s: float = 600) -> None:
    """``campaign launch SPEC`` in a fresh interpreter, killed (SIGKILL) as soon as ``count`` items of
    ``stage`` are committed."""
    proc = subprocess.Popen([sys.executable, "-m", "campaign.cli", "launch", str(spec), "--no-progress"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while done_in_stage(store_dir, stage) < count:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no {stage} item finished"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def page_data(store_dir: Path) -> dict:
    """What the campaign page (campaign.page) would show of the store: panel → name → data."""
    from campaign.page.document import CampaignPage

    snapshot = CampaignPage(store_dir).read_now()
    assert not snapshot.problems, snapshot.problems
    return snapshot.data


# tblite as the campaign's default labeler runs it (tasks.labeling.TbliteLabeler), as ASE parameters
TBLITE = {"method": "GFN1-xTB", "accuracy": 1.0, "electronic_temperature": 300.0, "max_iterations": 250,
          "verbosity": 0}


def tblite_potential_file(path: Path, elements: tuple[str, ...]) -> Path:
    """tblite wrapped as a potential file (tasks.ase_potential): a potential that is the labeler."""
    from tasks.ase_potential import AseCalculatorPotential

    AseCalculatorPotential("tblite.ase:TBLite", TBLITE, elements=elements).save(path)
    return path
