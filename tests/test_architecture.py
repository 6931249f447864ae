"""The dependency directions of DESIGN.md, checked in a fresh interpreter."""

import subprocess
import sys


def _modules_after_import(*packages: str) -> set[str]:
    code = ("import sys\n" + "".join(f"import {p}\n" for p in packages) +
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return {m.split(".")[0] for m in out.split()}


def test_tasks_and_storage_never_import_dask_or_the_campaign():
    loaded = _modules_after_import("tasks.labeling", "tasks.generate", "tasks.outcome", "storage.store",
                                   "storage.ledger", "storage.frames", "tasks.irradiation.statistics",
                                   "tasks.irradiation.damage")
    assert not loaded & {"dask", "distributed", "dask_jobqueue", "campaign", "schedulers"}
    assert "torch" not in loaded, "storage never imports torch"


def test_schedulers_know_nothing_of_the_science():
    loaded = _modules_after_import("schedulers.cluster")
    assert not loaded & {"tasks", "storage", "campaign"}


def test_the_science_with_torch_never_imports_dask_or_the_campaign():
    loaded = _modules_after_import("tasks.irradiation.impact", "tasks.irradiation.cascade", "tasks.irradiation.target",
                                   "tasks.md.state", "tasks.nnp.repulsion", "tasks.active.explore")
    assert not loaded & {"dask", "distributed", "dask_jobqueue", "campaign", "schedulers"}
