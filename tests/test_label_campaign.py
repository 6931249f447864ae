"""Labeling campaigns run in-process against a real LocalCluster, real tblite, a real store."""

import json

import ase.io
import numpy as np
from ase.build import mx2

from campaign.cli import main
from campaign.export import export_frames
from campaign.launch import launch
from campaign.spec import load_spec
from storage import CampaignStore
from storage.ledger import latest_status
from tasks.labeling import TbliteLabeler, label_structure
from tasks.structures import Structure
from tests.conftest import small_crs, tree_digest, write_spec


def test_labels_equal_a_direct_tblite_call_on_the_exported_structure(tmp_path, client):
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=6, seed=11)]))
    report = launch(spec, client=client, progress=False)
    assert report.frames == 6 and report.stages[0].failed == 0
    out = tmp_path / "out.xyz"
    assert export_frames(CampaignStore.open(spec.store), out) == 6
    for atoms in ase.io.read(out, index=":")[::2]:
        direct = label_structure(Structure.from_atoms(atoms), TbliteLabeler())
        assert abs(atoms.get_potential_energy() - direct.energy_eV) < 1e-6
        # extxyz keeps 8 decimals of position; the SCF's convergence threshold turns that into
        # force differences of a few 1e-6 eV/Å, far below any fitting target (~0.05 eV/Å).
        np.testing.assert_allclose(atoms.get_forces(), direct.forces_eV_per_A, atol=1e-4)
        np.testing.assert_allclose(atoms.get_stress(), direct.stress_eV_per_A3, atol=1e-8)


def _bad_structures(path):
    good = mx2("MoS2", size=(3, 3, 1), vacuum=7.5)
    close = good.copy()
    close.positions[1] = close.positions[0] + [0.1, 0.0, 0.0]
    plutonium = good.copy()
    plutonium.numbers[0] = 94  # tblite's GFN1-xTB stops at Rn
    ase.io.write(path, [close, plutonium])


def test_failing_structures_are_recorded_and_retried_by_a_relaunch(tmp_path, client, capsys):
    _bad_structures(tmp_path / "bad.xyz")
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=3), {"file": "bad.xyz"}]))
    report = launch(spec, client=client, progress=False)
    assert (report.stages[0].done, report.stages[0].failed) == (3, 2)
    capsys.readouterr()

    assert main(["status", str(spec.store), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["stages"]["label"] == {"done": 3, "failed": 2, "pending": 0}
    errors = sorted(f["error"] for f in status["failures"])
    assert "0.100 Å apart" in errors[0] and "Z >86" in errors[1]
    assert {f["error_kind"] for f in status["failures"]} == {"setup"}

    assert main(["status", str(spec.store)]) == 0
    assert "failed items (a relaunch retries them)" in capsys.readouterr().out

    report = launch(spec, client=client, progress=False)
    assert (report.stages[0].skipped, report.stages[0].failed) == (3, 2)
    store = CampaignStore.open(spec.store)
    ledger = store.read("ledger", ["key", "launch", "status"])
    assert sorted(ledger["launch"].tolist()) == [0, 0, 0, 0, 0, 1, 1], "only the failed items ran again"
    assert store.length("frames") == 3


def test_bad_specs_exit_nonzero_and_leave_the_store_unchanged(tmp_path, client, capsys):
    good = write_spec(tmp_path, structures=[small_crs(count=2)])
    launch(load_spec(good), client=client, progress=False)
    before = tree_digest(tmp_path / "store")
    text = good.read_text()
    cases = {
        "unknown key": (text.replace("batch_size:", "batchsize:"), "recipe.batchsize: unknown key"),
        "wrong type": (text.replace("batch_size: 2", "batch_size: [2]"), "recipe.batch_size"),
        "missing file": (text.replace("- prototype: nias", "- file: missing.xyz\n  - prototype: nias"),
                         "no such file"),
        "unknown labeler": (text + "labeler:\n  kind: castep\n", "'castep'"),
    }
    for name, (body, message) in cases.items():
        bad = tmp_path / f"bad-{name.replace(' ', '_')}.yaml"
        bad.write_text(body)
        assert main(["launch", str(bad), "--no-progress"]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err, (name, err)
        assert tree_digest(tmp_path / "store") == before, f"{name} changed the store"


def test_resume_skips_done_and_labels_added_structures(tmp_path, client):
    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=3, seed=5)]))
    launch(spec, client=client, progress=False)
    bigger = load_spec(write_spec(tmp_path, structures=[small_crs(count=3, seed=5), small_crs(count=2, seed=6)]))
    report = launch(bigger, client=client, progress=False)
    assert (report.stages[0].skipped, report.stages[0].done) == (3, 2)
    store = CampaignStore.open(spec.store)
    keys = [str(k) for k in store.read("frames", ["key"])["key"]]
    assert len(keys) == len(set(keys)) == 5
    assert all(s == "done" for s, _ in latest_status(store).values())


def test_store_reads_with_xarray(tmp_path, client):
    import xarray as xr

    spec = load_spec(write_spec(tmp_path, structures=[small_crs(count=3, seed=12)]))
    launch(spec, client=client, progress=False)
    frames = xr.open_zarr(tmp_path / "store" / "campaign.zarr", group="frames", consolidated=False)
    assert frames.sizes["frame"] == 3 and frames.sizes["atom"] == int(frames.n_atoms.sum())
    assert frames.energy_eV.dims == ("frame",) and frames.forces_eV_per_A.dims == ("atom", "xyz")
    assert frames.cell_A.dims == ("frame", "cell_vector", "xyz")
    ledger = xr.open_zarr(tmp_path / "store" / "campaign.zarr", group="ledger", consolidated=False)
    assert set(ledger.status.values.tolist()) == {"done"} and (ledger.duration_s > 0).all()
