"""The SLURM job script as dask-jobqueue would submit it (no SLURM needed)."""

import subprocess
import sys

from tests.conftest import small_crs, write_spec


def test_dry_run_prints_job_script_with_gpus_lifetime_and_tls(tmp_path):
    spec = write_spec(tmp_path, structures=[small_crs(count=2)], scheduler={"slurm": {
        "queue": "gpu", "account": "mat123", "cores": 4, "processes": 2, "memory": "16GB",
        "walltime": "02:00:00", "gpus_per_job": 2, "job_extra_directives": ["--constraint=a100"],
        "job_script_prologue": ["module load cuda"]}})
    run = subprocess.run([sys.executable, "-m", "campaign.cli", "launch", str(spec), "--dry-run",
                          "--scheduler", "slurm"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    script = run.stdout
    for line in ("#SBATCH -p gpu", "#SBATCH -A mat123", "#SBATCH --cpus-per-task=4", "#SBATCH -t 02:00:00",
                 "#SBATCH --gres=gpu:2", "#SBATCH --constraint=a100", "module load cuda",
                 "export OMP_NUM_THREADS=1"):
        assert line in script, line
    # two worker processes per job, each advertising one of the job's two GPUs
    assert "--nworkers 2" in script and "--resources GPU=1" in script
    assert "--lifetime 115m --lifetime-stagger 2m" in script
    assert "--protocol tls://" in script and "--tls-ca-file" in script
    assert not (tmp_path / "store").exists(), "a dry run writes nothing"
