import pytest

from campaign.errors import SpecError
from campaign.recipes.label import label_items
from campaign.spec import load_spec
from tasks.generate import monolayer_mx2
from tasks.labeling import TbliteLabeler
from tasks.structures import Structure
from tests.conftest import small_crs, write_spec


def test_keys_are_deterministic_and_ignore_the_scheduler(tmp_path):
    local = load_spec(write_spec(tmp_path, structures=[small_crs(count=5, seed=7)]))
    slurm = local.with_scheduler("slurm")
    keys_local = [i.key for i in label_items([Structure.from_atoms(monolayer_mx2())], local.labeler)]
    keys_again = [i.key for i in label_items([Structure.from_atoms(monolayer_mx2())], slurm.labeler)]
    assert keys_local == keys_again
    other = label_items([Structure.from_atoms(monolayer_mx2())], TbliteLabeler(method="GFN2-xTB"))
    assert other[0].key != keys_local[0], "changing the labeler must change the key"


def test_duplicate_structures_collapse_to_one_item():
    s = Structure.from_atoms(monolayer_mx2())
    assert len(label_items([s, s], TbliteLabeler())) == 1


def test_generated_structures_depend_on_seed_only(tmp_path):
    from campaign.recipes.structures import generate_source

    a = generate_source(load_spec(write_spec(tmp_path, structures=[small_crs(3, seed=1)])).recipe.structures[0])
    b = generate_source(load_spec(write_spec(tmp_path, structures=[small_crs(3, seed=1)])).recipe.structures[0])
    c = generate_source(load_spec(write_spec(tmp_path, structures=[small_crs(3, seed=2)])).recipe.structures[0])
    assert [x.canonical() for x in a] == [x.canonical() for x in b]
    assert a[0].canonical() != c[0].canonical()


def test_vacancy_fractions_remove_metal_atoms(tmp_path):
    from campaign.recipes.structures import generate_source

    spec = load_spec(write_spec(tmp_path, structures=[small_crs(4, supercell=(2, 2, 1), vacancy_species="Cr",
                                                               vacancy_fractions=[0.0, 0.25])]))
    counts = [int((s.numbers == 24).sum()) for s in generate_source(spec.recipe.structures[0])]
    assert counts == [8, 6, 8, 6]


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.replace("batch_size: 2", "batch_sise: 2"), "recipe.batch_sise: unknown key (did you mean 'batch_size'?)"),
    (lambda s: s.replace("batch_size: 2", "batch_size: many"), "recipe.batch_size"),
    (lambda s: s + "labeler:\n  kind: vasp\n", "labeler"),
    (lambda s: s.replace("name: t", "name: 'bad name'"), "name"),
])
def test_bad_specs_name_the_field(tmp_path, mutate, expected):
    path = write_spec(tmp_path)
    path.write_text(mutate(path.read_text()))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert expected in str(err.value)


def test_missing_structure_file_is_named(tmp_path):
    path = write_spec(tmp_path, structures=[{"file": "nowhere.xyz"}])
    with pytest.raises(SpecError, match=r"recipe.structures.0.file: no such file: .*nowhere.xyz"):
        load_spec(path)


def test_file_paths_are_relative_to_the_spec(tmp_path):
    import ase.io

    (tmp_path / "data").mkdir()
    ase.io.write(tmp_path / "data" / "one.xyz", monolayer_mx2())
    spec = load_spec(write_spec(tmp_path, structures=[{"file": "data/one.xyz"}]))
    assert spec.recipe.structures[0].file == tmp_path / "data" / "one.xyz"


def test_slurm_settings_are_checked(tmp_path):
    path = write_spec(tmp_path, scheduler={"kind": "slurm", "slurm": {"jobs": 2, "adapt": {"maximum_jobs": 3}}})
    with pytest.raises(SpecError, match="either jobs"):
        load_spec(path)
    path = write_spec(tmp_path, scheduler={"kind": "slurm", "slurm": {"walltime": "2 hours"}})
    with pytest.raises(SpecError, match="walltime"):
        load_spec(path)
