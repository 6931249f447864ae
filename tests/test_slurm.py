"""A real single-node SLURM on localhost (scripts/slurm_localhost.sh), driven by dask-jobqueue."""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from storage import CampaignStore
from tests.conftest import committed, small_crs, write_spec
from tests.test_failures_of_infrastructure import _exactly_once, _wait_for

pytestmark = pytest.mark.slurm
ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "campaign.cli"]


@pytest.fixture(scope="module")
def slurm():
    subprocess.run(["bash", str(ROOT / "scripts" / "slurm_localhost.sh"), "start"], check=True, timeout=600)
    assert shutil.which("sbatch")
    yield
    subprocess.run(["scancel", "-u", "root"], check=False)


def _slurm_spec(tmp_path, count, **slurm):
    settings = {"queue": "debug", "cores": 1, "memory": "1GB", "walltime": "00:15:00", "jobs": 2,
                "worker_start_timeout_s": 120, **slurm}
    return write_spec(tmp_path, structures=[small_crs(count=count, seed=9, supercell=(2, 2, 1))],
                      scheduler={"kind": "local", "slurm": settings})


def _worker_jobs():
    out = subprocess.run(["squeue", "-h", "-n", "campaign-worker", "-t", "RUNNING", "-o", "%i"],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_slurm_campaign_survives_a_cancelled_worker_job(tmp_path, slurm):
    n = 20
    spec = _slurm_spec(tmp_path, n)
    proc = subprocess.Popen([*CLI, "launch", str(spec), "--scheduler", "slurm", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        _wait_for(lambda: committed(tmp_path / "store").get("frames", 0) >= 2 or proc.poll() is not None,
                  180, "first frames from SLURM workers")
        jobs = _worker_jobs()
        assert len(jobs) == 2, f"expected two running worker jobs, squeue says {jobs}"
        subprocess.run(["scancel", jobs[0]], check=True)
        at_cancel = committed(tmp_path / "store")["frames"]
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert at_cancel < n, "the job must be cancelled while work remains"
    assert "Dashboard: http" in out and f"Stored {n} labeled frames" in out
    _exactly_once(tmp_path / "store", n)
    assert (tmp_path / "store" / "slurm-logs").is_dir()
    time.sleep(1)
    assert _worker_jobs() == [], "closing the campaign cancels its worker jobs"


def test_a_job_sbatch_refuses_is_a_clear_error(tmp_path, slurm):
    spec = _slurm_spec(tmp_path, 2, memory="4000GB")
    start = time.monotonic()
    run = subprocess.run([*CLI, "launch", str(spec), "--scheduler", "slurm", "--no-progress"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert "SLURM refused the worker job" in run.stderr and "memory" in run.stderr
    assert time.monotonic() - start < 60, "a refused job is reported at once, not after a timeout"


def test_active_learning_on_slurm_tags_gpu_work(tmp_path, slurm):
    """The AL recipe on SLURM worker jobs that ask for a GPU each (--gres=gpu:1; the localhost
    node's GPUs are stand-ins, so the models train on the CPU): training and exploration tasks
    require the GPU resource, labeling does not, and the loop completes its two iterations."""
    from tests.test_active_learning import al_spec

    path = al_spec(tmp_path)
    raw = yaml.safe_load(path.read_text())
    raw["scheduler"] = {"kind": "local", "slurm": {"queue": "debug", "cores": 1, "memory": "3GB",
                                                   "walltime": "00:20:00", "jobs": 2, "gpus_per_job": 1,
                                                   "worker_start_timeout_s": 120}}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.Popen([*CLI, "launch", str(path), "--scheduler", "slurm", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: len(_worker_jobs()) == 2 or proc.poll() is not None, 120, "two running worker jobs")
        gres = subprocess.run(["squeue", "-h", "-n", "campaign-worker", "-o", "%b"], capture_output=True,
                              text=True, check=True).stdout.split()
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert gres and all("gpu:1" in g for g in gres), f"worker jobs must hold one GPU each, squeue says {gres}"
    with CampaignStore.open(tmp_path / "store") as store:
        ledger = store.read("ledger", ["stage", "resources", "status"])
        iterations = store.read("al_iterations", ["iteration", "n_selected"])
        devices = set(store.read("al_models", ["device"])["device"].tolist())
    asked = {}  # stage kind (iteration number dropped) -> the resources its tasks asked for
    for stage, resources in zip(ledger["stage"], ledger["resources"]):
        asked.setdefault(re.sub(r"-\d+$", "", str(stage)), set()).add(str(resources))
    assert asked["al-train"] == {"GPU=1"} and asked["al-explore"] == {"GPU=1"}
    assert asked["al-initial"] == {""} and asked["al-label"] == {""}
    assert set(ledger["status"].tolist()) == {"done"}
    assert iterations["iteration"].tolist() == [0, 1] and iterations["n_selected"].tolist() == [3, 3]
    assert devices == {"cpu"}, "device auto falls back to the CPU where CUDA is absent"


def test_workers_retire_before_the_walltime_and_are_replaced(tmp_path, slurm):
    """worker_lifetime shorter than the campaign: each worker job retires after 40 s (± 10 s),
    adapt submits a replacement, and every item is still done exactly once."""
    n = 40
    spec = write_spec(tmp_path, structures=[small_crs(count=n, seed=23)],
                      labeler={"kind": "ase", "calculator_class": "tests.slow_labeler.SometimesSlowTBLite",
                               "parameters": {"delay_s": 3.0, "every": 1}},
                      scheduler={"kind": "slurm", "slurm": {
                          "queue": "debug", "cores": 1, "memory": "1GB", "walltime": "00:15:00",
                          "adapt": {"minimum_jobs": 2, "maximum_jobs": 2}, "worker_lifetime": "40s",
                          "lifetime_stagger": "10s", "worker_start_timeout_s": 120}})
    raw = yaml.safe_load(spec.read_text())
    raw["recipe"]["batch_size"] = 1
    spec.write_text(yaml.safe_dump(raw, sort_keys=False))
    start = time.monotonic()
    run = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall_s = time.monotonic() - start
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"Stored {n} labeled frames" in run.stdout and "0 failed" in run.stdout
    assert "Dashboard: http://127.0.0.1:" in run.stdout, "the dashboard link is where it listens"
    links = dict(line.split(": ", 1) for line in run.stdout.splitlines()
                 if line.startswith(("Dashboard: ", "Campaign page: ")))
    assert links["Campaign page"] == links["Dashboard"].rsplit("/", 1)[0] + "/campaign", "on the dashboard's port"
    store = _exactly_once(tmp_path / "store", n)
    ledger = store.read("ledger", ["worker", "status"])
    workers = set(ledger["worker"].tolist())
    assert len(workers) >= 3, f"{wall_s:.0f} s with workers {workers}: none retired and was replaced"
