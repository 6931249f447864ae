"""Stores written by the release of schema version 1 (tests/data/v1, made by that release's code):
read as they are, migrated in place by a launch, resumed without redoing finished work."""

import json
import shutil
from pathlib import Path

import ase.io
import yaml

from campaign.cli import main
from campaign.launch import launch
from campaign.recipes.active_learning import AL_ITERATIONS, AL_MODELS
from campaign.spec import load_spec
from storage import CampaignStore
from storage.schema import SCHEMA_VERSION
from tests.conftest import tree_digest

V1 = Path(__file__).parent / "data" / "v1"


def _copy(name: str, tmp_path: Path) -> Path:
    """The version-1 campaign folder copied, its spec pointing at the copy of its store."""
    target = tmp_path / name
    shutil.copytree(V1 / name, target)
    spec_file = next(p for p in target.glob("*.yaml"))
    raw = yaml.safe_load(spec_file.read_text())
    raw["store"] = str(target / "store")
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    return spec_file


def test_status_and_export_read_version_1_stores_without_writing(tmp_path, capsys):
    for name, frames in (("label", 3), ("al", 14)):
        _copy(name, tmp_path)
        store = tmp_path / name / "store"
        before = tree_digest(store)
        assert main(["status", str(store), "--json"]) == 0
        status = json.loads(capsys.readouterr().out)
        assert status["schema_version"] == 1 and status["frames"] == frames
        out = tmp_path / f"{name}.xyz"
        assert main(["export", str(store), "--to", "extxyz", str(out)]) == 0
        assert len(ase.io.read(out, index=":")) == frames
        capsys.readouterr()
        assert tree_digest(store) == before, "reading a version-1 store must not change it"
    assert [r["iteration"] for r in status["iterations"]] == [0] and status["iterations"][0]["n_selected"] == 3
    assert status["stages"]["al-initial"]["done"] == 11


def test_launch_migrates_a_half_finished_version_1_store_and_does_only_the_rest(tmp_path, client):
    spec = load_spec(_copy("label", tmp_path))
    with CampaignStore.open(spec.store) as store:
        done_before = {str(k) for k in store.read("frames", ["key"])["key"]}
    report = launch(spec, client=client, progress=False, say=lambda _: None)
    assert (report.stages[0].skipped, report.stages[0].done, report.stages[0].failed) == (3, 3, 0)
    with CampaignStore.open(spec.store) as store:
        assert store.attrs["schema_version"] == SCHEMA_VERSION and store.attrs["migrated_from"] == 1
        keys = [str(k) for k in store.read("frames", ["key"])["key"]]
        launches = store.read("ledger", ["key", "launch"])
        assert set(store.tables) >= {"frames", "atoms", "ledger", "plan"}
    assert len(keys) == len(set(keys)) == 6 and done_before < set(keys)
    relabeled = [str(k) for k, n in zip(launches["key"], launches["launch"]) if n == 1]
    assert not set(relabeled) & done_before, "finished items of the old release are not redone"


def test_active_learning_store_of_version_1_resumes_without_retraining(tmp_path, client):
    spec = load_spec(_copy("al", tmp_path))
    with CampaignStore.open(spec.store) as store:
        ledger_before = store.length("ledger")
        models_before = store.read(AL_MODELS, ["key", "sha256"])
    launch(spec, client=client, progress=False, say=lambda _: None)
    with CampaignStore.open(spec.store) as store:
        assert store.length("ledger") == ledger_before, "iteration 0 was finished: nothing runs again"
        models = store.read(AL_MODELS, ["key", "sha256"])
        assert store.read(AL_ITERATIONS, ["iteration"])["iteration"].tolist() == [0]
    assert models["key"].tolist() == models_before["key"].tolist()
    assert models["sha256"].tolist() == models_before["sha256"].tolist()


def test_active_learning_store_of_version_1_stopped_after_training_resumes_where_it_stopped(tmp_path, client):
    """al_mid: the same campaign as al, stopped by the old release after its committee trained.
    The relaunch trains nothing and explores, selects and labels exactly what the old release did
    (its seeds and keys are kept for migrated stores)."""
    spec = load_spec(_copy("al_mid", tmp_path))
    launch(spec, client=client, progress=False, say=lambda _: None)
    with CampaignStore.open(spec.store) as resumed, CampaignStore.open(V1 / "al" / "store") as finished:
        ledger = resumed.read("ledger", ["stage", "launch"])
        assert [int(n) for s, n in zip(ledger["stage"], ledger["launch"]) if s == "al-train-0"] == [0, 0]
        assert set(resumed.read("al_explored", ["key"])["key"].tolist()) == \
            set(finished.read("al_explored", ["key"])["key"].tolist())
        assert sorted(map(str, resumed.read("frames", ["key"])["key"])) == \
            sorted(map(str, finished.read("frames", ["key"])["key"]))
        for column in ("n_explored", "n_selected", "n_accurate"):
            assert resumed.read(AL_ITERATIONS, [column])[column].tolist() == \
                finished.read(AL_ITERATIONS, [column])[column].tolist()


def test_a_migrated_version_1_store_has_checksums_and_its_damage_is_found(tmp_path, capsys):
    """Version 1 wrote no checksums and skipped chunks of fill values; the migration rewrites its
    arrays, so a chunk deleted afterwards is damage, not fill values (the ledger's error column
    was all empty strings: version 1 had not written its chunk at all)."""
    from storage.schema import ZARR_NAME

    _copy("label", tmp_path)
    store = tmp_path / "label" / "store"
    assert not (store / ZARR_NAME / "ledger" / "error" / "c" / "0").exists()
    CampaignStore.open_for_writing(store, "v1-label").close()
    with CampaignStore.open(store, checksums=True) as migrated:
        assert migrated.attrs["schema_version"] == SCHEMA_VERSION
        assert [str(e) for e in migrated.read("ledger", ["error"])["error"]] == ["", "", ""]
    (store / ZARR_NAME / "ledger" / "error" / "c" / "0").unlink()
    capsys.readouterr()
    assert main(["status", str(store)]) == 2
    assert "table 'ledger', column 'error': chunk c/0 (rows 0–2) is missing" in capsys.readouterr().err
