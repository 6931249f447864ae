"""Killed drivers, killed workers, a second launch, the dashboard, TLS: all against real processes."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter

import numpy as np
import pytest
from distributed import Client, LocalCluster

from campaign.launch import launch
from campaign.spec import load_spec
from schedulers.local import local_cluster
from schedulers.settings import LocalSettings
from storage import CampaignStore
from tests.conftest import committed, small_crs, write_spec

CLI = [sys.executable, "-m", "campaign.cli"]


def _start_launch(spec_path, log_path):
    return subprocess.Popen([*CLI, "launch", str(spec_path), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=open(log_path, "w"), text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(predicate, timeout_s, what):
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _exactly_once(store_dir, n_items):
    store = CampaignStore.open(store_dir)
    frame_keys = [str(k) for k in store.read("frames", ["key"])["key"]]
    plan_keys = {str(k) for k in store.read("plan", ["key"])["key"]}
    ledger = store.read("ledger", ["key", "status"])
    done_rows = Counter(str(k) for k, s in zip(ledger["key"], ledger["status"]) if s == "done")
    assert len(plan_keys) == n_items
    assert sorted(frame_keys) == sorted(plan_keys), "every structure labeled exactly once, none lost"
    assert set(done_rows.values()) == {1}, "no finished item was done again"
    return store


@pytest.mark.slow
def test_driver_killed_at_several_points_then_relaunched(tmp_path):
    n = 36
    spec_path = write_spec(tmp_path, structures=[small_crs(count=n, seed=3, supercell=(2, 2, 1))])
    store_dir = tmp_path / "store"
    rng = np.random.default_rng(20261121)
    kills = []
    for i, threshold in enumerate((4, 14, 26)):
        proc = _start_launch(spec_path, tmp_path / f"launch{i}.log")
        _wait_for(lambda: committed(store_dir).get("frames", 0) >= threshold or proc.poll() is not None,
                  180, f"{threshold} committed frames")
        time.sleep(rng.uniform(0.0, 0.8))  # somewhere inside the next flush window
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills.append(committed(store_dir).get("frames", 0))
    assert kills[0] < n, f"the first kill must land mid-run, frames at kills: {kills}"

    final = _start_launch(spec_path, tmp_path / "final.log")
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, (tmp_path / "final.log").read_text()
    assert f"Stored {n} labeled frames" in out
    _exactly_once(store_dir, n)


def test_worker_killed_mid_task_campaign_completes(tmp_path):
    n = 16
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=n, seed=4, supercell=(2, 2, 1))]))
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as c:
        victim = next(iter(c.run(os.getpid).values()))
        at_kill = {}

        def kill_one_worker():
            _wait_for(lambda: committed(tmp_path / "store").get("frames", 0) >= 2, 120, "first frames")
            at_kill["frames"] = committed(tmp_path / "store")["frames"]
            os.kill(victim, signal.SIGKILL)

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        report = launch(spec, client=c, progress=False)
        killer.join(timeout=1)
    assert at_kill and at_kill["frames"] < n, "the worker must die while work remains"
    assert (report.stages[0].done, report.stages[0].failed) == (n, 0)
    _exactly_once(tmp_path / "store", n)


def test_second_launch_refused_and_dashboard_answers(tmp_path):
    spec_path = write_spec(tmp_path, structures=[small_crs(count=12, seed=8, supercell=(2, 2, 1))])
    proc = _start_launch(spec_path, tmp_path / "first.log")
    try:
        lines = []
        while not any(line.startswith("Dashboard: ") for line in lines):
            line = proc.stdout.readline()
            assert line, f"launch ended early: {(tmp_path / 'first.log').read_text()}"
            lines.append(line)
        url = lines[-1].split(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:"), "a local dashboard binds to localhost"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200

        second = subprocess.run([*CLI, "launch", str(spec_path), "--no-progress"], capture_output=True,
                                text=True, timeout=120)
        assert second.returncode == 2
        assert "in use by another launch" in second.stderr and f"pid {proc.pid}" in second.stderr
        assert proc.poll() is None, "the first launch must still be running"
    finally:
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "Stored 12 labeled frames" in out


def _connect_from_another_process(address: str, other_authority: bool) -> str:
    """Try to connect an outside client; return what stopped it: 'refused <exception>' for
    OSError/TimeoutError (connection refused or TLS handshake failed), else the exception's name."""
    code = textwrap.dedent(f"""
        from distributed import Client
        from distributed.security import Security
        security = Security.temporary() if {other_authority!r} else None
        try:
            Client({address!r}, security=security, timeout="3s").close()
            print("connected")
        except (OSError, TimeoutError) as exc:
            print("refused", type(exc).__name__, exc)
        except Exception as exc:
            print(type(exc).__name__, exc)
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return run.stdout.strip() or run.stderr.strip()[-2000:]


def test_tls_scheduler_refuses_a_client_without_the_certificate():
    with local_cluster(LocalSettings(workers=1, tls=True, dashboard_address=":0")) as cluster:
        address = cluster.scheduler_address
        assert address.startswith("tls://")
        with Client(cluster) as trusted:  # the cluster's own credentials: connects
            assert trusted.submit(sum, [1, 2]).result() == 3
        no_certificate = _connect_from_another_process(address, other_authority=False)
        assert no_certificate.startswith("TypeError") and "TLS expects" in no_certificate
        other_authority = _connect_from_another_process(address, other_authority=True)
        assert other_authority.startswith("refused"), other_authority
        plain_tcp = _connect_from_another_process(address.replace("tls://", "tcp://"), other_authority=False)
        assert plain_tcp.startswith("refused"), plain_tcp
