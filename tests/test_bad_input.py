"""Bad input cannot hurt the launcher: hostile YAML, typos that cost hours, broken structures,
a calculator that is no calculator, outside processes on the scheduler, signals, failed exports.
Real subprocess launches, a real LocalCluster and SLURMCluster scheduler, real tblite."""

import gc
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import ase.io
import numpy as np
import psutil
import pytest
import yaml
from ase import Atoms

from campaign.cli import main
from campaign.errors import SpecError
from campaign.launch import build_stages
from campaign.spec import load_spec
from schedulers.local import local_cluster
from schedulers.slurm import slurm_cluster
from storage import CampaignStore
from tests.conftest import committed, small_crs, write_spec
from tests.test_failures_of_infrastructure import _exactly_once, _wait_for

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "campaign.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
V1_LABEL_STORE = ROOT / "tests" / "data" / "v1" / "label" / "store"


def _cli(args, tmp_path, timeout_s=120.0, address_space_GB=4):
    """Run ``campaign ARGS`` in a subprocess of this tree, its address space capped (today's
    code would take the machine's memory); returns (exit code, stdout, stderr, peak RSS in MB, wall s)."""
    def cap():
        limit = int(address_space_GB * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    out_path, err_path = tmp_path / "cli.out", tmp_path / "cli.err"
    start = time.monotonic()
    with open(out_path, "w") as out, open(err_path, "w") as err:
        proc = subprocess.Popen([*CLI, *map(str, args)], stdout=out, stderr=err, cwd=ROOT, env=ENV,
                                preexec_fn=cap, start_new_session=True)
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout_s:
            os.killpg(proc.pid, signal.SIGKILL)  # its workers too
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, out_path.read_text(), err_path.read_text(), usage.ru_maxrss / 1024,
            time.monotonic() - start)


def _alias_bomb(levels: int = 7, width: int = 10) -> str:
    """Each level is ten aliases of the one below: 10**7 copies of a 100-character string."""
    lines = ['  l0: &l0 "' + "x" * 100 + '"']
    for i in range(1, levels + 1):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines)


# -- 1. YAML input -----------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["labeler.parameters", "typed field"])
def test_alias_bomb_is_refused_in_seconds_and_little_memory(tmp_path, where):
    spec = write_spec(tmp_path, structures=[small_crs(count=1)])
    text = spec.read_text()
    if where == "labeler.parameters":
        text += ("labeler:\n  kind: ase\n  calculator_class: ase.calculators.emt.EMT\n  parameters:\n"
                 + textwrap.indent(_alias_bomb(), "  ") + "\n")
    else:
        text = "bomb:\n" + _alias_bomb() + "\n" + text.replace("name: t", "name: *l7")
    spec.write_text(text)
    assert len(text) < 2000, "a small file"
    code, out, err, peak_MB, wall_s = _cli(["launch", spec, "--no-progress"], tmp_path)
    assert code == 2, (code, err[-2000:])
    assert err.startswith("error: ") and "aliases" in err and len(err) < 1000, err[:2000]
    assert wall_s < 30, f"refused in seconds, took {wall_s:.0f} s"
    assert peak_MB < 700, f"peak RSS {peak_MB:.0f} MB (the interpreter and its imports take about 360)"
    assert not (tmp_path / "store").exists()


def test_long_and_many_bad_inputs_give_a_short_message(tmp_path):
    spec = write_spec(tmp_path)
    raw = yaml.safe_load(spec.read_text())
    raw["recipe"]["batch_size"] = list(range(50_000))
    raw["recipe"]["structures"][0]["vacancy_fractions"] = ["x" * 1000] * 500
    raw["name"] = "y" * 100_000
    spec.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as info:
        load_spec(spec)
    message = str(info.value)
    assert len(message) < 6000, f"{len(message)} characters"
    lines = message.splitlines()
    assert len(lines) <= 22 and max(map(len, lines)) < 400 and lines[-1].endswith("more"), message


def test_duplicate_keys_are_an_error_naming_key_and_line(tmp_path, capsys):
    spec = write_spec(tmp_path)
    lines = spec.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("batch_size:"))
    lines.insert(at + 1, "  batch_size: 64")
    spec.write_text("\n".join(lines) + "\n")
    assert main(["launch", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"line {at + 2}" in err and "duplicate key 'batch_size'" in err and f"first on line {at + 1}" in err


# -- 2. Bounds ---------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"count": 10_000_000}, "recipe.structures.0.count: Input should be less than or equal to 100000 (got 10000000)"),
    ({"supercell": [2, 0, 1]}, "recipe.structures.0.supercell.1: Input should be greater than or equal to 1 (got 0)"),
])
def test_typos_that_cost_hours_are_refused(tmp_path, change, message):
    spec = write_spec(tmp_path, structures=[{**small_crs(count=4), **change}])
    code, out, err, peak_MB, wall_s = _cli(["launch", spec, "--dry-run"], tmp_path)
    assert code == 2 and message in err, (code, err[-2000:])
    assert wall_s < 60 and peak_MB < 700


# -- 3. Structures -----------------------------------------------------------------------------

def _write_structure(path: Path, positions=None, cell=None, pbc=True, frames_before: int = 1):
    good = Atoms("CrS", positions=[[0, 0, 0], [1.2, 1.2, 1.2]], cell=[3, 3, 3], pbc=True)
    bad = Atoms("CrS", positions=positions if positions is not None else good.positions,
                cell=cell if cell is not None else good.cell, pbc=pbc)
    ase.io.write(path, [good] * frames_before + [bad], format="extxyz")


@pytest.mark.parametrize("name, bad, message", [
    ("nan", dict(positions=[[0, 0, 0], [np.nan, 1, 1]]), "positions are not finite (atom 1"),
    ("inf", dict(positions=[[np.inf, 0, 0], [1, 1, 1]]), "positions are not finite (atom 0"),
    ("flat", dict(cell=[[3, 0, 0], [0, 3, 0], [3, 3, 1e-6]]), "degenerate cell"),
    ("zero", dict(cell=[[3, 0, 0], [0, 0, 0], [0, 0, 3]]), "degenerate cell: periodic cell vector 1"),
    ("flat-slab", dict(cell=[[3, 0, 0], [6, 1e-5, 0], [0, 0, 0]], pbc=[True, True, False]), "degenerate cell"),
])
def test_broken_structures_are_refused_when_the_spec_is_read(tmp_path, name, bad, message):
    _write_structure(tmp_path / "in.xyz", **bad)
    spec = load_spec(write_spec(tmp_path, structures=[{"file": "in.xyz"}]))
    with pytest.raises(SpecError) as info:
        build_stages(spec)
    assert f"{tmp_path / 'in.xyz'} frame 1" in str(info.value) and message in str(info.value)


def test_a_structure_with_nan_positions_is_never_labeled(tmp_path):
    _write_structure(tmp_path / "in.xyz", positions=[[0, 0, 0], [np.nan, 1, 1]])
    spec = write_spec(tmp_path, structures=[small_crs(count=2), {"file": "in.xyz"}],
                      scheduler={"local": {"workers": 1}})
    code, out, err, _, _ = _cli(["launch", spec, "--no-progress"], tmp_path)
    assert code == 2 and "in.xyz frame 1" in err and "not finite" in err, (code, err[-2000:])
    assert not (tmp_path / "store").exists()


def test_an_infinite_generated_cell_is_refused(tmp_path):
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=2, a_A=float("inf"))]))
    with pytest.raises(SpecError, match=r"generated nias CrS \(tag nias-CrS\) copy 0: positions are not finite"):
        build_stages(spec)


# -- 4. The calculator class -------------------------------------------------------------------

@pytest.mark.parametrize("calculator_class, message", [
    ("subprocess.Popen", "'subprocess.Popen' is not an ASE calculator class"),
    ("os.system", "'os.system' is not an ASE calculator class"),
    ("no_such_package.Calc", "cannot import calculator 'no_such_package.Calc'"),
])
def test_calculator_class_must_be_an_ase_calculator(tmp_path, calculator_class, message):
    marker = tmp_path / "ran"
    spec = write_spec(tmp_path, structures=[small_crs(count=1)], scheduler={"local": {"workers": 1}},
                      labeler={"kind": "ase", "calculator_class": calculator_class,
                               "parameters": {"args": f"touch {marker}", "shell": True}})
    code, out, err, _, _ = _cli(["launch", spec, "--no-progress"], tmp_path)
    assert code == 2 and "labeler.ase.calculator_class" in err and message in err, (code, err[-2000:])
    assert not marker.exists() and not (tmp_path / "store").exists()


def test_ase_calculators_of_both_kinds_are_accepted(tmp_path):
    for name in ("ase.calculators.vasp.Vasp", "ase.calculators.espresso:Espresso",
                 "tests.slow_labeler.SometimesSlowTBLite"):
        spec = load_spec(write_spec(tmp_path, labeler={"kind": "ase", "calculator_class": name}))
        assert spec.labeler.calculator_class == name


# -- 5. Scheduler access -----------------------------------------------------------------------

def test_an_outside_process_cannot_run_code_on_a_default_local_cluster(tmp_path):
    settings = load_spec(write_spec(tmp_path)).scheduler.local
    settings = settings.model_copy(update={"workers": 1, "dashboard_address": ":0"})
    marker = tmp_path / "ran"
    with local_cluster(settings) as cluster:
        address = cluster.scheduler_address
        host_port = address.split("://", 1)[1]
        code = textwrap.dedent(f"""
            from distributed import Client
            from distributed.security import Security
            tries = [({address!r}, None), ("tcp://{host_port}", None), ("tls://{host_port}", Security.temporary())]
            for address, security in tries:
                try:
                    with Client(address, security=security, timeout="5s") as client:
                        client.run_on_scheduler(lambda: open({str(marker)!r}, "w").close())
                    print("ran", address)
                except Exception as exc:
                    print("refused", address, type(exc).__name__)
        """)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=ENV)
    assert run.stdout.count("refused") == 3, run.stdout + run.stderr[-2000:]
    assert not marker.exists()


def _non_loopback_ipv4() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def _accepts(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=3).close()
        return True
    except OSError:
        return False


def test_slurm_dashboard_listens_on_localhost_only(tmp_path):
    """The scheduler of a SLURM campaign runs with the driver (a login node): its dashboard
    answers the README's tunnel (localhost) and nobody on the network."""
    other = _non_loopback_ipv4()
    if other is None:
        pytest.skip("no network interface besides loopback")
    settings = load_spec(write_spec(tmp_path)).scheduler.slurm
    cluster = slurm_cluster(settings, tmp_path)
    try:
        port = cluster.scheduler.http_server.port
        assert _accepts("127.0.0.1", port)
        assert not _accepts(other, port), f"the dashboard answers on {other}:{port}"
    finally:
        cluster.close()
        gc.collect()


# -- 6. Signals --------------------------------------------------------------------------------

def _launch(spec, log_path, **kwargs):
    return subprocess.Popen([*CLI, "launch", str(spec), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=open(log_path, "w"), text=True, cwd=ROOT, env=ENV, **kwargs)


@pytest.mark.slow
def test_sigterm_commits_releases_the_lock_and_a_relaunch_finishes(tmp_path):
    n = 16
    spec = write_spec(tmp_path, structures=[small_crs(count=n, seed=21, supercell=(2, 2, 1))],
                      scheduler={"local": {"workers": 2, "dashboard_address": "127.0.0.1:0"}})
    store_dir = tmp_path / "store"
    proc = _launch(spec, tmp_path / "first.log")
    try:
        _wait_for(lambda: committed(store_dir).get("frames", 0) >= 2 or proc.poll() is not None, 180,
                  "first committed frames")
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "first.log").read_text()
    assert proc.returncode == 143, (proc.returncode, err[-3000:])
    assert err.splitlines() == [err.strip()] and err.startswith("terminated (SIGTERM)"), err[-3000:]
    frames = committed(store_dir)["frames"]
    assert 2 <= frames < n, "signalled mid-run"
    with CampaignStore.open(store_dir) as store:
        energies = store.read("frames", ["energy_eV"])["energy_eV"]
        assert len(energies) == frames and np.isfinite(energies).all()

    final = _launch(spec, tmp_path / "final.log")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()[-3000:]
    assert f"Stored {n} labeled frames" in out and f"{frames} already done before this launch" in out
    _exactly_once(store_dir, n)


def _signalled_mid_launch(tmp_path, seed: int, send) -> tuple[int, str]:
    """Launch a small campaign, call ``send(proc)`` once it runs; its exit code and stderr. The
    lock must be free afterwards."""
    spec = write_spec(tmp_path, structures=[small_crs(count=12, seed=seed, supercell=(2, 2, 1))],
                      scheduler={"local": {"workers": 1, "dashboard_address": "127.0.0.1:0"}})
    proc = _launch(spec, tmp_path / "log", start_new_session=True)
    try:
        while not proc.stdout.readline().startswith("Dashboard: "):
            assert proc.poll() is None, (tmp_path / "log").read_text()
        time.sleep(1.0)
        send(proc)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    with CampaignStore.open_for_writing(tmp_path / "store", "t"):
        pass  # the lock is free
    return proc.returncode, (tmp_path / "log").read_text()


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    # what a terminal's Ctrl-C does: SIGINT to the whole foreground group
    code, err = _signalled_mid_launch(tmp_path, 22, lambda proc: os.killpg(proc.pid, signal.SIGINT))
    assert code == 130, (code, err[-3000:])
    assert err.splitlines() == [err.strip()] and err.startswith("interrupted (Ctrl-C)"), err[-3000:]


def test_a_dropped_ssh_session_sighup_unwinds_like_sigterm(tmp_path):
    """SIGHUP (the terminal of a foreground launch went away): one line, exit 129, lock free."""
    code, err = _signalled_mid_launch(tmp_path, 23, lambda proc: proc.send_signal(signal.SIGHUP))
    assert code == 129, (code, err[-3000:])
    assert err.splitlines() == [err.strip()] and err.startswith("terminated (SIGHUP)"), err[-3000:]


# -- 7. Export atomicity -----------------------------------------------------------------------

def test_an_export_that_cannot_write_its_output_is_one_line_and_exit_2(tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(V1_LABEL_STORE, store)
    capsys.readouterr()
    assert main(["export", str(store), str(tmp_path / "missing-folder" / "frames.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: cannot write") and "No such file or directory" in err

def test_a_failed_export_leaves_the_previous_file_as_it_was(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(V1_LABEL_STORE, store)
    out = tmp_path / "frames.xyz"
    assert main(["export", str(store), str(out)]) == 0
    before = out.read_bytes()
    assert len(ase.io.read(out, index=":")) == 3
    chunk = store / "campaign.zarr" / "frames" / "positions_A" / "c" / "0" / "0"
    chunk.write_bytes(b"not zstd" * 16)  # committed frames that cannot be read
    code, _, err, _, _ = _cli(["export", store, out], tmp_path)
    assert code != 0, err[-2000:]
    assert out.read_bytes() == before, "the previous export is byte-identical"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".frames")) == [], "no temporary left"


def test_export_replaces_the_file_keeping_its_mode(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(V1_LABEL_STORE, store)
    out = tmp_path / "frames.xyz"
    out.write_text("old\n")
    os.chmod(out, 0o640)
    assert main(["export", str(store), str(out)]) == 0
    assert len(ase.io.read(out, index=":")) == 3 and (out.stat().st_mode & 0o777) == 0o640


# -- 8. The store path -------------------------------------------------------------------------

def test_status_export_and_report_accept_the_campaign_zarr_path(tmp_path, capsys):
    store = tmp_path / "store"
    shutil.copytree(V1_LABEL_STORE, store)
    assert main(["status", str(store), "--json"]) == 0
    by_dir = capsys.readouterr().out
    assert main(["status", str(store / "campaign.zarr"), "--json"]) == 0
    assert capsys.readouterr().out == by_dir
    assert main(["status", str(store / "campaign.zarr") + "/"]) == 0
    capsys.readouterr()
    assert main(["export", str(store / "campaign.zarr"), str(tmp_path / "out.xyz")]) == 0
    assert len(ase.io.read(tmp_path / "out.xyz", index=":")) == 3
    capsys.readouterr()
    main(["report", str(store / "campaign.zarr")])
    assert "no campaign.zarr inside" not in capsys.readouterr().err
