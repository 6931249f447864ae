"""DeePMD-kit interop through dpdata: the store exported as `dp train`'s folders, and DeePMD folders
as a structure source. Real tblite labels on a real LocalCluster and store; dpdata reads and writes
the DeePMD side, so these tests check our files against the reader users have."""

import subprocess
import sys

import numpy as np
import pytest

from campaign.cli import main
from campaign.export import frame_to_atoms
from campaign.launch import launch
from campaign.recipes.structures import load_structures
from campaign.spec import load_spec
from storage import CampaignStore
from storage.frames import iter_frames
from tests.conftest import small_crs, tree_digest, write_spec

dpdata = pytest.importorskip("dpdata", reason="pip install 'mlip-campaign[deepmd]' (scripts/setup.sh --test does)")

# NiAs CrS cells, every other one with a Cr vacancy: two compositions (Cr4S4, Cr3S4), two frames each.
CRS_WITH_VACANCIES = small_crs(count=4, seed=5, vacancy_species="Cr", vacancy_fractions=[0.0, 0.25])


@pytest.fixture(scope="module")
def labeled(tmp_path_factory, client):
    """The store of a finished label campaign, shared by the tests here (they only read it)."""
    directory = tmp_path_factory.mktemp("labeled")
    spec = load_spec(write_spec(directory, structures=[CRS_WITH_VACANCIES]))
    report = launch(spec, client=client, progress=False)
    assert report.frames == 4 and report.stages[0].failed == 0
    return spec.store


def _virial_eV(stress_voigt_eV_per_A3, cell_A):
    """-stress x volume, the Voigt order (xx yy zz yz xz xy) unfolded by hand."""
    xx, yy, zz, yz, xz, xy = stress_voigt_eV_per_A3
    stress = np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return -stress * abs(np.linalg.det(cell_A))


def _expected_systems(frames, type_map):
    """The store's frames as DeePMD systems: grouped by composition (dpdata's folder name: every
    element of the type map with its count), atoms of each frame ordered by type, store order."""
    systems = {}
    for frame in frames:
        symbols = [dict(zip((16, 24, 42), ("S", "Cr", "Mo")))[int(z)] for z in frame.numbers]
        types = np.array([type_map.index(s) for s in symbols])
        order = np.argsort(types, kind="stable")
        name = "".join(f"{element}{symbols.count(element)}" for element in type_map)
        system = systems.setdefault(name, {"types": types[order], "coord": [], "box": [], "energy": [],
                                           "force": [], "virial": []})
        system["coord"].append(frame.positions_A[order])
        system["box"].append(frame.cell_A)
        system["energy"].append(frame.energy_eV)
        system["force"].append(frame.forces_eV_per_A[order])
        system["virial"].append(_virial_eV(frame.stress_eV_per_A3, frame.cell_A))
    return systems


def _assert_folder_holds(out, frames, type_map):
    expected = _expected_systems(frames, type_map)
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, want in expected.items():
        folder = out / name
        assert (folder / "type_map.raw").read_text().split() == type_map
        assert sorted(p.name for p in (folder / "set.000").iterdir()) == [
            "box.npy", "coord.npy", "energy.npy", "force.npy", "virial.npy"]
        system = dpdata.LabeledSystem(str(folder), fmt="deepmd/npy")
        assert len(system) == len(want["energy"])
        assert list(system["atom_names"]) == type_map
        np.testing.assert_array_equal(system["atom_types"], want["types"])
        for ours, theirs in (("coord", "coords"), ("box", "cells"), ("energy", "energies"),
                             ("force", "forces"), ("virial", "virials")):
            np.testing.assert_allclose(system[theirs], np.array(want[ours]), rtol=1e-12, atol=1e-12,
                                       err_msg=f"{name} {ours}")


def test_export_to_deepmd_is_what_dpdata_reads_and_a_used_folder_is_refused(labeled, tmp_path, capsys):
    out = tmp_path / "dp"
    assert main(["export", str(labeled), "--to", "deepmd", str(out)]) == 0
    assert "wrote 4 frames in 2 DeePMD systems (type map S,Cr)" in capsys.readouterr().out
    frames = list(iter_frames(CampaignStore.open(labeled)))
    _assert_folder_holds(out, frames, ["S", "Cr"])  # by atomic number
    assert sum(len(s) for s in dpdata.MultiSystems.from_file(str(out), fmt="deepmd/npy")) == 4

    before = tree_digest(out)
    assert main(["export", str(labeled), "--to", "deepmd", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {out} exists and is not an empty folder; export to a new folder"
    assert tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["dp"], "no temporary folder is left behind"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", str(labeled), "--to", "deepmd", str(empty)]) == 0, "an empty folder is filled"
    assert tree_digest(empty) == before


def test_a_user_type_map_orders_the_types_and_must_cover_the_store(labeled, tmp_path, capsys):
    out = tmp_path / "dp"
    assert main(["export", str(labeled), "--to", "deepmd", "--type-map", "Cr,Mo,S", str(out)]) == 0
    _assert_folder_holds(out, list(iter_frames(CampaignStore.open(labeled))), ["Cr", "Mo", "S"])

    for type_map, message in (("S,Mo", "--type-map S,Mo lacks element(s) Cr of the store"),
                              ("Cr,S,Qq", "--type-map: unknown element(s) Qq")):
        capsys.readouterr()
        assert main(["export", str(labeled), "--to", "deepmd", "--type-map", type_map, str(tmp_path / "x")]) == 2
        assert capsys.readouterr().err.strip() == f"error: {message}"
        assert not (tmp_path / "x").exists()
    assert main(["export", str(labeled), "--type-map", "S", str(tmp_path / "x.xyz")]) == 2


def test_a_deepmd_folder_made_by_dpdata_labels_the_same_frames(labeled, tmp_path, client):
    # dpdata writes the folder from the store's frames at full precision (an extxyz file keeps 8
    # decimals of position, and tblite's SCF turns that into force changes of up to 1e-4 eV/Å).
    systems = [dpdata.LabeledSystem(frame_to_atoms(frame), fmt="ase/structure")
               for frame in iter_frames(CampaignStore.open(labeled))]
    (tmp_path / "data").mkdir()
    dpdata.MultiSystems(*systems).to("deepmd/npy", str(tmp_path / "data" / "crs"))
    spec = load_spec(write_spec(tmp_path, name="again", structures=[{"deepmd": "data"}]))
    report = launch(spec, client=client, progress=False)
    assert report.frames == 4 and report.stages[0].failed == 0

    def by_structure(store):
        """Frames keyed by composition and rounded positions (dpdata may reorder atoms and frames)."""
        out = {}
        for frame in iter_frames(CampaignStore.open(store)):
            order = np.lexsort((*np.round(frame.positions_A, 5).T[::-1], frame.numbers))
            key = (tuple(frame.numbers[order]), np.round(frame.positions_A[order], 5).tobytes())
            out[key] = (frame, order)
        return out

    first, again = by_structure(labeled), by_structure(spec.store)
    assert sorted(first) == sorted(again) and len(again) == 4
    for key, (old, old_order) in first.items():
        new, new_order = again[key]
        assert new.source == "data" and new.pbc.all() and old.pbc.all()
        np.testing.assert_array_equal(new.numbers[new_order], old.numbers[old_order])
        np.testing.assert_allclose(new.positions_A[new_order], old.positions_A[old_order], rtol=0, atol=1e-12)
        np.testing.assert_allclose(new.cell_A, old.cell_A, rtol=0, atol=1e-12)
        assert abs(new.energy_eV - old.energy_eV) < 1e-6
        np.testing.assert_allclose(new.forces_eV_per_A[new_order], old.forces_eV_per_A[old_order], rtol=0, atol=1e-6)


def test_systems_are_read_in_path_order_from_folders_and_hdf5_files(labeled, tmp_path):
    (tmp_path / "out").mkdir()
    assert main(["export", str(labeled), "--to", "deepmd", str(tmp_path / "out" / "dp")]) == 0
    dpdata.MultiSystems.from_file(str(tmp_path / "out" / "dp"), fmt="deepmd/npy").to(
        "deepmd/hdf5", str(tmp_path / "data.h5"))
    sources = [{"deepmd": "out", "index": "1:"}, {"deepmd": "data.h5", "format": "deepmd/hdf5", "index": "-1"}]
    structures = load_structures(load_spec(write_spec(tmp_path, structures=sources)).recipe.structures)
    # out/dp/S4Cr3 (2 frames, the first left out), out/dp/S4Cr4 (2 frames); the file's last group and frame
    assert [(s.tag, s.n_atoms) for s in structures] == [("out", 7), ("out", 8), ("out", 8), ("data.h5", 8)]
    np.testing.assert_array_equal(structures[3].positions_A, structures[2].positions_A)
    assert all(s.pbc.all() for s in structures)


@pytest.mark.parametrize("case", ["missing", "empty", "no frames", "bad index"])
def test_a_deepmd_source_that_cannot_be_read_is_one_error_naming_it(tmp_path, capsys, case):
    folder = tmp_path / "dp"
    if case != "missing":
        folder.mkdir()
    if case == "no frames":  # a system folder with its types but no set.*
        (folder / "type.raw").write_text("0\n")
        (folder / "type_map.raw").write_text("Cr\n")
    source = {"deepmd": "dp"}
    if case == "bad index":  # one frame, the sixth asked for
        dpdata.System(data={"atom_names": ["Cr"], "atom_numbs": [1], "atom_types": np.array([0]),
                            "orig": np.zeros(3), "cells": 3 * np.eye(3)[None], "coords": np.zeros((1, 1, 3))}
                      ).to("deepmd/npy", str(folder))
        source["index"] = "5"
    spec = write_spec(tmp_path, structures=[source])
    assert main(["launch", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(folder) in err, err
    assert {"missing": "recipe.structures.0.deepmd: no such folder", "empty": "holds no DeePMD system",
            "no frames": "cannot read DeePMD system", "bad index": "index '5'"}[case] in err
    assert not (tmp_path / "store").exists()


def test_the_source_kind_follows_the_key_the_user_wrote(tmp_path, capsys):
    spec = write_spec(tmp_path, structures=[{"deepmd": "dp", "count": 3}])
    assert main(["launch", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "recipe.structures.0.count: unknown key" in err
    assert "prototype" not in err and "structures.0.file" not in err


def test_without_dpdata_both_directions_say_how_to_install_it(labeled, tmp_path):
    (tmp_path / "dp").mkdir()
    (tmp_path / "dp" / "type.raw").write_text("0\n")
    spec = write_spec(tmp_path, structures=[{"deepmd": "dp"}])
    no_dpdata = "import sys; sys.modules['dpdata'] = None; from campaign.cli import main; sys.exit(main(sys.argv[1:]))"
    for args in (["export", str(labeled), "--to", "deepmd", str(tmp_path / "out")],
                 ["launch", str(spec), "--dry-run"]):
        run = subprocess.run([sys.executable, "-c", no_dpdata, *args], capture_output=True, text=True)
        assert run.returncode == 2, run.stderr
        assert run.stderr.strip().endswith("needs dpdata: pip install 'mlip-campaign[deepmd]'"), run.stderr
    assert not (tmp_path / "out").exists()
