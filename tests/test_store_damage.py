"""Damaged stores, leftovers of killed launches, full and read-only disks: each is a one-line error
with exit code 2 and nothing written, or a launch that carries on; never wrong data."""

import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from campaign.cli import main
from campaign.launch import launch
from campaign.spec import load_spec
from storage import CampaignStore, StoreError
from storage.schema import LOCK_NAME, ZARR_NAME
from tests.conftest import committed, small_crs, tree_digest, write_spec
from tests.test_failures_of_infrastructure import _exactly_once, _wait_for

CLI = [sys.executable, "-m", "campaign.cli"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, client):
    """A finished labeling campaign (5 CrS cells) to damage copies of."""
    directory = tmp_path_factory.mktemp("finished")
    spec = load_spec(write_spec(directory, structures=[small_crs(count=5, seed=31)]))
    launch(spec, client=client, progress=False, say=lambda _: None)
    return directory


def _copy(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "c")
    spec = tmp_path / "c" / "t.yaml"
    spec.write_text(spec.read_text().replace(str(finished), str(tmp_path / "c")))
    return tmp_path / "c"


def _store_digest(store: Path) -> str:
    """Every byte of the store except the tool's lock file (a launch writes its pid there)."""
    lock = store / LOCK_NAME
    saved = lock.read_bytes() if lock.exists() else None
    if saved is not None:
        lock.unlink()
    try:
        return tree_digest(store)
    finally:
        if saved is not None:
            lock.write_bytes(saved)


def _refused(argv: list[str], capsys, *expected: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    for text in expected:
        assert text in err, (text, err)


@pytest.mark.parametrize("chunk, table", [
    ("ledger/status/c/0", "table 'ledger', column 'status'"),  # a columnar table
    ("frames/energy_eV/c/0", "table 'frames', column 'energy_eV'"),  # per-structure rows
    ("frames/positions_A/c/0/0", "table 'atoms', column 'positions_A'"),  # per-atom rows
])
def test_a_missing_chunk_is_named_and_nothing_is_written(finished, tmp_path, capsys, chunk, table):
    run = _copy(finished, tmp_path)
    store = run / "store"
    (store / ZARR_NAME / chunk).unlink()
    before = _store_digest(store)
    missing = f"chunk {chunk.split('/', 2)[2]}"
    _refused(["launch", str(run / "t.yaml"), "--no-progress"], capsys, table, missing, "is missing")
    _refused(["status", str(store)], capsys, table, "is missing")
    _refused(["export", str(store), str(tmp_path / "out.xyz")], capsys, table, "is missing")
    assert _store_digest(store) == before
    assert not (tmp_path / "out.xyz").exists()


def test_a_truncated_chunk_fails_its_checksum_and_nothing_is_written(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    store = run / "store"
    chunk = store / ZARR_NAME / "frames" / "energy_eV" / "c" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    before = _store_digest(store)
    _refused(["launch", str(run / "t.yaml"), "--no-progress"], capsys, "table 'frames', column 'energy_eV'",
             "checksum")
    _refused(["export", str(store), str(tmp_path / "out.xyz")], capsys, "energy_eV", "checksum")
    _refused(["status", str(store)], capsys, "energy_eV", "checksum")
    assert _store_digest(store) == before


def test_an_empty_root_metadata_file_is_damage_not_a_new_store(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    store = run / "store"
    (store / ZARR_NAME / "zarr.json").write_text("")
    before = _store_digest(store)
    _refused(["launch", str(run / "t.yaml"), "--no-progress"], capsys, "root metadata", "zarr.json")
    _refused(["status", str(store)], capsys, "root metadata")
    assert _store_digest(store) == before


def test_a_store_without_its_root_metadata_is_refused_untouched(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    store = run / "store"
    (store / ZARR_NAME / "zarr.json").unlink()
    before = _store_digest(store)
    _refused(["launch", str(run / "t.yaml"), "--no-progress"], capsys, "holds data but no root metadata")
    assert _store_digest(store) == before and not (store / ZARR_NAME / "zarr.json").exists()


def test_a_group_with_tables_but_no_schema_version_is_refused_not_reinitialised(finished, tmp_path, capsys):
    run = _copy(finished, tmp_path)
    store = run / "store"
    group = zarr.open_group(store / ZARR_NAME, mode="a")
    attributes = group.attrs.asdict()
    del attributes["schema_version"]
    group.attrs.clear()
    group.attrs.update(attributes)
    before = _store_digest(store)
    _refused(["launch", str(run / "t.yaml"), "--no-progress"], capsys, "no schema_version")
    assert _store_digest(store) == before


@pytest.mark.parametrize("leftover", ["lock file", "lock file and empty group"])
def test_leftovers_of_a_launch_killed_before_its_first_commit_do_not_block(tmp_path, client, leftover):
    """What a SIGKILL right after the lock file appears leaves: the lock file (its holder gone),
    perhaps the empty group the launch had begun. The next launch takes them over."""
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=2, seed=32)]))
    store = Path(spec.store)
    store.mkdir()
    (store / LOCK_NAME).write_text('{"pid": 999999, "host": "gone", "since": "earlier"}')
    if leftover.endswith("group"):
        zarr.open_group(store / ZARR_NAME, mode="a")
    report = launch(spec, client=client, progress=False, say=lambda _: None)
    assert report.stages[0].done == 2 and report.frames == 2


def test_sigkill_right_after_the_lock_file_appears_then_relaunch(tmp_path):
    spec = write_spec(tmp_path, structures=[small_crs(count=2, seed=33)])
    lock = tmp_path / "store" / LOCK_NAME
    proc = subprocess.Popen([*CLI, "launch", str(spec), "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    _wait_for(lambda: lock.exists() or proc.poll() is not None, 120, "the lock file")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert committed(tmp_path / "store").get("frames", 0) == 0, "killed before the first commit"
    again = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    _exactly_once(tmp_path / "store", 2)


@pytest.fixture
def small_disk(tmp_path):
    """A real file system of a few hundred KB (tmpfs), or a skip where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _remount(mount: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)


def test_a_disk_too_full_for_the_store_is_a_one_line_error_and_does_not_block_later(small_disk, tmp_path, client,
                                                                                    capsys):
    spec = write_spec(tmp_path, structures=[small_crs(count=2, seed=34)])
    spec.write_text(spec.read_text().replace(str(tmp_path / "store"), str(small_disk / "store")))
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave a few KB: the lock file fits, the store does not
        f.write(b"\0" * (60 * 1024))
    _refused(["launch", str(spec), "--no-progress"], capsys, "No space left on device")
    filler.unlink()
    _remount(small_disk, "size=50m")
    report = launch(load_spec(spec), client=client, progress=False, say=lambda _: None)
    assert report.frames == 2


def test_a_disk_that_fills_during_a_campaign_keeps_what_was_committed(small_disk, tmp_path):
    _remount(small_disk, "size=50m")
    spec = write_spec(tmp_path, structures=[small_crs(count=24, seed=35, supercell=(2, 2, 1))])
    spec.write_text(spec.read_text().replace(str(tmp_path / "store"), str(small_disk / "store")))
    store = small_disk / "store"
    proc = subprocess.Popen([*CLI, "launch", str(spec), "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: committed(store).get("frames", 0) >= 2 or proc.poll() is not None, 180, "first frames")
    filler = small_disk / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    _, err = proc.communicate(timeout=300)
    at_failure = committed(store)["frames"]
    assert proc.returncode == 2 and err.strip().count("\n") == 0 and "No space left on device" in err, err
    assert 2 <= at_failure < 24
    filler.unlink()
    again = subprocess.run([*CLI, "launch", str(spec), "--no-progress"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    _exactly_once(store, 24)


def test_a_read_only_store_can_be_read_but_not_launched(small_disk, tmp_path, client, capsys):
    _remount(small_disk, "size=50m")
    spec = write_spec(tmp_path, structures=[small_crs(count=2, seed=36)])
    spec.write_text(spec.read_text().replace(str(tmp_path / "store"), str(small_disk / "store")))
    launch(load_spec(spec), client=client, progress=False, say=lambda _: None)
    _remount(small_disk, "ro")
    _refused(["launch", str(spec), "--no-progress"], capsys, "Read-only file system")
    capsys.readouterr()
    assert main(["status", str(small_disk / "store")]) == 0
    with pytest.raises(StoreError, match="Read-only"):
        CampaignStore.open_for_writing(small_disk / "store", "t")
