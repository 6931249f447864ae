import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import zarr

from storage import CampaignStore, StoreError, StoreLockedError
from storage.ledger import DONE, LedgerEntry, done_keys, ledger_block
from storage.schema import ZARR_NAME


def _entries(keys, status=DONE):
    return ledger_block([LedgerEntry(key=k, stage="s", status=status, duration_s=1.0) for k in keys])


def test_append_is_visible_to_readers_and_reopen(tmp_path):
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        store.append({"ledger": _entries(["a", "b"])})
        assert store.length("ledger") == 2
    reader = CampaignStore.open(tmp_path / "s")
    assert done_keys(reader) == {"a", "b"}


def test_rows_past_the_commit_are_dropped_on_reopen(tmp_path):
    """A driver killed after writing rows but before the commit pointer: those rows never count."""
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        store.append({"ledger": _entries(["a"])})
    # Simulate the half-finished transaction: rows written, commit pointer not updated.
    group = zarr.open_group(tmp_path / "s" / ZARR_NAME, mode="a")
    keys = group["ledger/key"]
    keys.resize((3,))
    keys[1:3] = np.array(["ghost1", "ghost2"], dtype=object)
    assert done_keys(CampaignStore.open(tmp_path / "s")) == {"a"}
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        assert store._group["ledger/key"].shape == (1,)
        store.append({"ledger": _entries(["b"])})
        assert [str(k) for k in store.read("ledger", ["key"])["key"]] == ["a", "b"]


def test_append_refuses_ragged_or_incomplete_blocks(tmp_path):
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        block = _entries(["a", "b"])
        block["duration_s"] = block["duration_s"][:1]
        with pytest.raises(StoreError, match="different lengths"):
            store.append({"ledger": block})
        with pytest.raises(StoreError, match="lacks columns"):
            store.append({"ledger": {"key": np.array(["a"], dtype=object)}})
        assert store.length("ledger") == 0


def test_store_of_another_campaign_or_not_a_store_is_refused(tmp_path):
    with CampaignStore.open_for_writing(tmp_path / "s", "c"):
        pass
    with pytest.raises(StoreError, match="belongs to campaign 'c'"):
        CampaignStore.open_for_writing(tmp_path / "s", "other")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="holds no campaign store"):
        CampaignStore.open_for_writing(tmp_path / "junk", "c")
    with pytest.raises(StoreError, match="not a campaign store"):
        CampaignStore.open(tmp_path / "junk")


def test_lock_refuses_a_second_writer_and_dies_with_its_holder(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from storage import CampaignStore
        s = CampaignStore.open_for_writing({str(tmp_path / 's')!r}, "c")
        print("locked", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd())
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(StoreLockedError, match=f"pid {holder.pid}"):
            CampaignStore.open_for_writing(tmp_path / "s", "c")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # The kernel dropped the lock with the process: a relaunch after a crash is never blocked.
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        assert store.length("ledger") == 0


def test_a_column_added_to_a_table_with_rows_reads_as_fill_values_and_keeps_the_store_whole(tmp_path):
    """A recipe whose table gains a column: the rows already committed get the fill value, and
    every chunk below the committed length exists, so the store opens (with checksums) as before."""
    from storage.tables import columnar

    before = columnar("things", "things", "thing", (("n", "i8"),), chunk_rows=4)
    after = columnar("things", "things", "thing", (("n", "i8"), ("energy_eV", "f8"), ("label", "str")), chunk_rows=4)
    with CampaignStore.open_for_writing(tmp_path / "s", "c", [before]) as store:
        store.append({"things": {"n": np.arange(10)}})
    with CampaignStore.open_for_writing(tmp_path / "s", "c", [after]) as store:
        store.append({"things": {"n": np.array([10]), "energy_eV": np.array([-1.5]),
                                 "label": np.array(["x"], dtype=object)}})
    for _ in range(2):  # read-only with every checksum verified, then a launch's open
        store = CampaignStore.open(tmp_path / "s", checksums=True)
        rows = store.read("things")
        assert rows["n"].tolist() == list(range(11))
        assert np.isnan(rows["energy_eV"][:10]).all() and rows["energy_eV"][10] == -1.5
        assert [str(x) for x in rows["label"]] == [""] * 10 + ["x"]
        CampaignStore.open_for_writing(tmp_path / "s", "c", [after]).close()


def test_every_write_of_the_root_metadata_is_a_whole_state(tmp_path, monkeypatch):
    """A process can die between any two file writes, so each written zarr.json must be a state a
    reader may see: the owner with the version, every table's commit count with its layout. The
    real writes go through; they are only recorded."""
    import json

    import zarr.storage._local as local

    from storage.tables import columnar

    root = (tmp_path / "s" / ZARR_NAME / "zarr.json").resolve()
    written, put = [], local._put

    def recording_put(path, value, exclusive=False):
        if path.resolve() == root and not (exclusive and path.exists()):  # zarr's "create parents if
            # missing" calls write nothing where the file exists
            written.append(json.loads(bytes(value.as_buffer_like()))["attributes"])
        return put(path, value, exclusive=exclusive)

    monkeypatch.setattr(local, "_put", recording_put)
    things = columnar("things", "things", "thing", (("n", "i8"),), chunk_rows=4)
    with CampaignStore.open_for_writing(tmp_path / "s", "c") as store:
        store.record_launch({"spec": {"name": "c"}})
        store.append({"ledger": _entries(["a", "b"])})
        store.declare([things])
        store.append({"ledger": _entries(["c"]), "things": {"n": np.arange(3)}})
    assert len(written) >= 5
    for attributes in written[1:]:  # the first is the empty group zarr creates
        assert {"schema_version", "campaign", "committed", "launches", "tables"} <= set(attributes), attributes
        assert set(attributes["committed"]) == set(attributes["tables"]), attributes
    assert written[-1]["committed"]["ledger"] == 3 and written[-1]["committed"]["things"] == 3
