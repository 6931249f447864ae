"""Training accuracy at a cost: several training settings side by side on one tblite data set.

Data: --frames 3×3 MoS2 monolayer cells (27 atoms; one in six has an S vacancy), each with a
seeded random in-plane strain (components uniform in ±4 %), an out-of-plane strain of the layer
thickness (uniform in ±4 %) and Gaussian displacements of 0.07 Å, labeled with GFN1-xTB (tblite).
The labels are cached in --cache as one .npz named by a hash of the generated structures and the
labeler settings, so a second run with the same --frames and --data-seed labels nothing. Frames
whose SCF fails are left out (and counted).

Split: one seeded permutation (--seed) puts 80 % of the frames in the train part, 20 % in the test
part, the same for every row. A row trains on the train part only, with
tasks.nnp.train.train_model, which holds out its own validation_fraction of what it is given for
early stopping; the test part is seen only by the final scoring.

Rows (--rows picks some; --epochs-scale multiplies max_epochs and patience_epochs, and the
learning-rate decay is recomputed so the rate still ends at the same fraction of its start):

  example_old       examples/al_mos2.yaml's committee settings (16×16, cutoffs 5.0/3.6 Å, lr 0.005,
                    decay 0.99 per epoch, patience 20, energy : force weight 1 : 10) run for 400 epochs
  wide              64×64, cutoffs 6.0/4.0 Å, weights 100 : 10, 1000 epochs
  deepmd_schedule   as wide, with DeePMD-kit's prefactor schedule: w_E 0.02 → 1, w_F 1000 → 1
  mid               32×32, cutoffs 6.0/4.0 Å, weights 100 : 10, 1000 epochs
  deepmd            DeePMD-kit se_e2_a with DP-GEN-style settings, for the CPU time of `wide` (so it
                    needs that row); only when `import deepmd` works in this interpreter (see below)

The 1000-epoch rows use lr 0.005 decayed to 1/1000 of it over max_epochs and patience 200;
all rows use the training defaults otherwise (8 frames per step, validation_fraction 0.2, float64).
Each row's full TrainSettings are printed before it trains.

Figures, per row, in the JSON object's "rows":

  train_s, train_cpu_s         wall and CPU seconds of train_model (one thread), including its
                               normalisation fit (after a one-epoch warm-up on a few frames that loads
                               the compiled kernels); for deepmd, of `dp train` (a child process)
  cpu_vs_example_old, wall_vs_example_old   train_cpu_s and train_s over example_old's (absent
                               when example_old did not run)
  energy_rmse_meV_per_atom     test-part RMSE of the energy per atom
  force_rmse_eV_per_A          test-part RMSE of the force components
  epochs, best_epoch           epochs run (early stopping may end sooner) and the epoch kept
  settings                     the TrainSettings (for deepmd: the input.json's essentials)

and at the top level: frames (labeled frames used), failed_labels, n_train, n_test, data_key
(the cache file's hash), label_s (labeling time; 0 when the cache had them), threads.

These are accuracies at a given cost, not speed ratios, so each row trains once (the "taking
turns, best of rounds" rule of bench_md.py is for ratios of speeds). The cost is CPU time: with one
thread it equals the wall time on an idle machine, and unlike the wall time it does not grow while
other jobs hold the cores (run as `nice -n 19` beside a campaign, the wall time can be many times
the CPU time). The wall times are printed too; their ratios mean something only on an idle machine.

The DeePMD-kit row (`dp --pt`, PyTorch backend) writes the train and test parts as DeePMD npy
systems (one per composition, atoms sorted by type), runs `dp train` for 100 and for 300 steps to
measure its start-up and its time per step, then a `dp train` of as many steps as fit the wall
time of `wide`, in CPU seconds (the learning rate decays from 1e-3 to 3.5e-8 over them, as in DP-GEN), `dp freeze`
and `dp test -d`, and computes the RMSEs from the detail files. DeePMD-kit 3.2's wheels are built
against torch 2.11: their compiled ops and LAMMPS plugin do not load next to this project's torch,
so install it in its own environment if at all. This path is not exercised by the project's machines.

The last line printed is one JSON object with all of these.
Usage: OMP_NUM_THREADS=1 python scripts/bench_training.py [--frames 300] [--rows example_old,wide]
       [--epochs-scale 1.0] [--label-workers 1] [--cache DIR] [--seed 0] [--data-seed 0]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from tasks.generate import monolayer_mx2, perturbed_copies
from tasks.labeling import TbliteLabeler, label_structure, labeler_settings_json
from tasks.nnp.train import TrainSettings, pair_cutoff_A, prepare, rmse, train_model
from tasks.structures import Structure

DEFAULT_CACHE = Path("~/.cache/mlip-campaign/bench_training").expanduser()
MAX_STRAIN, THICKNESS_STRAIN, RATTLE_A = 0.04, 0.04, 0.07
VACANCY_FRACTIONS = (0.0, 0.0, 0.0, 0.0, 0.0, 1 / 18)  # one S of 18 gone in one cell of six
TEST_FRACTION = 0.2
DEEPMD_ROW = "deepmd"


@dataclass(frozen=True)
class Row:
    """One named training configuration; lr_end_fraction fixes the decay for any epoch count."""

    name: str
    hidden: tuple[int, ...]
    radial_cutoff_A: float
    angular_cutoff_A: float
    max_epochs: int
    patience_epochs: int
    learning_rate: float
    lr_end_fraction: float
    energy_weight: float
    force_weight: float
    energy_weight_limit: float | None = None
    force_weight_limit: float | None = None

    def settings(self, epochs_scale: float) -> TrainSettings:
        epochs = max(1, round(self.max_epochs * epochs_scale))
        return TrainSettings(
            hidden=self.hidden, radial_cutoff_A=self.radial_cutoff_A, angular_cutoff_A=self.angular_cutoff_A,
            max_epochs=epochs, patience_epochs=max(1, round(self.patience_epochs * epochs_scale)),
            learning_rate=self.learning_rate, lr_decay_per_epoch=self.lr_end_fraction ** (1 / epochs),
            energy_weight=self.energy_weight, force_weight=self.force_weight,
            energy_weight_limit=self.energy_weight_limit, force_weight_limit=self.force_weight_limit,
            device="cpu")


ROWS = {row.name: row for row in [
    Row("example_old", (16, 16), 5.0, 3.6, 400, 20, 0.005, 0.99 ** 400, 1.0, 10.0),
    Row("wide", (64, 64), 6.0, 4.0, 1000, 200, 0.005, 1e-3, 100.0, 10.0),
    Row("deepmd_schedule", (64, 64), 6.0, 4.0, 1000, 200, 0.005, 1e-3, 0.02, 1000.0,
        energy_weight_limit=1.0, force_weight_limit=1.0),
    Row("mid", (32, 32), 6.0, 4.0, 1000, 200, 0.005, 1e-3, 100.0, 10.0),
]}


# ---------------------------------------------------------------- data

def structures(n: int, seed: int) -> list[Atoms]:
    """The seeded cells of the module docstring (no labels)."""
    cells = perturbed_copies(monolayer_mx2(a_A=3.19), n, seed=seed, max_strain=MAX_STRAIN, rattle_A=RATTLE_A,
                             vacancy_species="S", vacancy_fractions=VACANCY_FRACTIONS)
    rng = np.random.default_rng([seed, 1])
    for atoms in cells:  # the vacuum direction is not strained by perturbed_copies: stretch the layer itself
        z = atoms.positions[:, 2]
        atoms.positions[:, 2] = z.mean() + (z - z.mean()) * (1 + rng.uniform(-THICKNESS_STRAIN, THICKNESS_STRAIN))
    return cells


def data_key(cells: list[Atoms], labeler: TbliteLabeler) -> str:
    digest = hashlib.sha256(labeler_settings_json(labeler).encode())
    for atoms in cells:
        digest.update(json.dumps(Structure.from_atoms(atoms).canonical(), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _label(args: tuple[Atoms, TbliteLabeler]) -> tuple[float, np.ndarray] | None:
    atoms, labeler = args
    try:
        label = label_structure(Structure.from_atoms(atoms), labeler)
    except Exception as exc:  # a failed SCF: the frame is left out and counted
        print(f"  label failed: {type(exc).__name__}: {exc}", flush=True)
        return None
    return label.energy_eV, label.forces_eV_per_A


def label_all(cells: list[Atoms], labeler: TbliteLabeler, workers: int) -> list[tuple[float, np.ndarray] | None]:
    jobs = [(atoms, labeler) for atoms in cells]
    if workers <= 1:
        return [_label(job) for job in jobs]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return pool.map(_label, jobs, chunksize=4)


def save_frames(path: Path, frames: list[Atoms], failed: int) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp, n_atoms=np.array([len(a) for a in frames]), numbers=np.concatenate([a.numbers for a in frames]),
        positions=np.concatenate([a.positions for a in frames]), cells=np.stack([a.cell.array for a in frames]),
        pbc=np.stack([a.pbc for a in frames]), energy=np.array([a.get_potential_energy() for a in frames]),
        forces=np.concatenate([a.get_forces() for a in frames]), failed=np.array(failed))
    tmp.replace(path)


def load_frames(path: Path) -> tuple[list[Atoms], int]:
    with np.load(path) as f:
        offsets = np.concatenate([[0], np.cumsum(f["n_atoms"])])
        frames = []
        for k in range(len(f["n_atoms"])):
            sl = slice(offsets[k], offsets[k + 1])
            atoms = Atoms(numbers=f["numbers"][sl], positions=f["positions"][sl], cell=f["cells"][k], pbc=f["pbc"][k])
            atoms.calc = SinglePointCalculator(atoms, energy=float(f["energy"][k]), forces=f["forces"][sl])
            frames.append(atoms)
        return frames, int(f["failed"])


def labeled_frames(n: int, seed: int, cache: Path, workers: int) -> tuple[list[Atoms], int, str, float]:
    """(frames, failed labels, data key, labeling seconds): from the cache, or labeled and cached."""
    labeler = TbliteLabeler()
    cells = structures(n, seed)
    key = data_key(cells, labeler)
    path = cache / f"mos2_3x3_{n}_seed{seed}_{key}.npz"
    if path.exists():
        frames, failed = load_frames(path)
        print(f"data: {len(frames)} labeled frames from {path}")
        return frames, failed, key, 0.0
    print(f"data: labeling {n} cells with {labeler.method} on {workers} worker(s) (cached in {path})", flush=True)
    start = time.perf_counter()
    labels = label_all(cells, labeler, workers)
    elapsed = time.perf_counter() - start
    frames = []
    for atoms, label in zip(cells, labels):
        if label is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=label[0], forces=label[1])
            frames.append(atoms)
    failed = n - len(frames)
    cache.mkdir(parents=True, exist_ok=True)
    save_frames(path, frames, failed)
    print(f"data: {len(frames)} labeled in {elapsed:.0f} s, {failed} failed")
    return frames, failed, key, elapsed


class Clock:
    """Wall and CPU seconds of a block; the CPU time counts finished child processes (dp) too."""

    def __enter__(self) -> "Clock":
        self._start = time.perf_counter(), _cpu_s()
        return self

    def __exit__(self, *exc) -> None:
        self.wall_s = time.perf_counter() - self._start[0]
        self.cpu_s = _cpu_s() - self._start[1]


def _cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def train_test_split(n: int, seed: int) -> tuple[list[int], list[int]]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(TEST_FRACTION * n))
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


# ---------------------------------------------------------------- rows

def run_row(row: Row, train: list[Atoms], test: list[Atoms], epochs_scale: float, seed: int) -> dict:
    settings = row.settings(epochs_scale)
    print(f"\n[{row.name}] {settings.model_dump(mode='json', exclude={'repulsion', 'device'})}", flush=True)
    dtype = getattr(torch, settings.dtype)
    elements = tuple(sorted({s for atoms in train for s in atoms.get_chemical_symbols()}))
    cutoff = pair_cutoff_A(settings)
    train_data = prepare(train, elements, cutoff, dtype)
    test_data = prepare(test, elements, cutoff, dtype)
    # one epoch on a few frames first: numba's kernels for this shape load (or compile) off the clock
    warm = settings.model_copy(update={"max_epochs": 1, "validation_fraction": 0.0})
    train_model(prepare(train[:settings.frames_per_step], elements, cutoff, dtype), warm, seed)
    with Clock() as clock:
        model, report = train_model(train_data, settings, seed)
    energy, force = rmse(model, test_data, range(len(test)))
    print(f"[{row.name}] {clock.cpu_s:.0f} CPU s ({clock.wall_s:.0f} s wall), {report.epochs} epochs (best "
          f"{report.best_epoch}), test RMSE {energy:.2f} meV/atom, {force:.4f} eV/Å (validation "
          f"{report.validation_energy_rmse_meV_per_atom:.2f}, {report.validation_force_rmse_eV_per_A:.4f})", flush=True)
    return {"train_s": clock.wall_s, "train_cpu_s": clock.cpu_s, "energy_rmse_meV_per_atom": energy,
            "force_rmse_eV_per_A": force, "epochs": report.epochs, "best_epoch": report.best_epoch,
            "settings": settings.model_dump(mode="json", exclude={"repulsion", "device"})}


def deepmd_available() -> bool:
    try:
        import deepmd  # noqa: F401
    except Exception as exc:  # an ImportError, or a compiled extension that does not load
        print(f"\n[{DEEPMD_ROW}] skipped: `import deepmd` fails here ({type(exc).__name__}: {exc})")
        return False
    return True


def write_deepmd_systems(frames: list[Atoms], folder: Path, type_map: list[str]) -> None:
    """DeePMD npy systems, one per composition, atoms sorted by type (DeePMD needs one type list per system)."""
    groups: dict[tuple[int, ...], list[tuple[Atoms, np.ndarray]]] = {}
    for atoms in frames:
        types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()])
        order = np.argsort(types, kind="stable")
        groups.setdefault(tuple(types[order]), []).append((atoms, order))
    for k, (types, members) in enumerate(groups.items()):
        system = folder / f"system{k}"
        (system / "set.000").mkdir(parents=True)
        (system / "type.raw").write_text("\n".join(map(str, types)) + "\n")
        (system / "type_map.raw").write_text("\n".join(type_map) + "\n")
        arrays = {"coord": [a.positions[o].ravel() for a, o in members],
                  "force": [a.get_forces()[o].ravel() for a, o in members],
                  "box": [a.cell.array.ravel() for a, _ in members],
                  "energy": [a.get_potential_energy() for a, _ in members]}
        for name, values in arrays.items():
            np.save(system / "set.000" / f"{name}.npy", np.asarray(values))


def deepmd_input(type_map: list[str], train_dir: Path, steps: int, seed: int) -> dict:
    """se_e2_a with DP-GEN-style settings (cutoff 6.0 Å, embedding 25/50/100, fitting 240×3, the
    prefactor schedule 0.02 → 1 / 1000 → 1, learning rate 1e-3 → 3.5e-8)."""
    return {
        "model": {"type_map": type_map,
                  "descriptor": {"type": "se_e2_a", "sel": "auto", "rcut_smth": 0.5, "rcut": 6.0,
                                 "neuron": [25, 50, 100], "resnet_dt": False, "axis_neuron": 16, "seed": seed},
                  "fitting_net": {"neuron": [240, 240, 240], "resnet_dt": True, "seed": seed}},
        "learning_rate": {"type": "exp", "start_lr": 1e-3, "stop_lr": 3.51e-8,
                          "decay_steps": max(1, steps // 200)},
        "loss": {"type": "ener", "start_pref_e": 0.02, "limit_pref_e": 1, "start_pref_f": 1000,
                 "limit_pref_f": 1, "start_pref_v": 0, "limit_pref_v": 0},
        "training": {"training_data": {"systems": [str(p) for p in sorted(train_dir.iterdir())],
                                       "batch_size": "auto"},
                     "numb_steps": steps, "seed": seed, "disp_freq": max(1, steps // 20), "save_freq": steps},
    }


def dp(*args: str, cwd: Path) -> Clock:
    """Run one `dp --pt` command in ``cwd`` on one thread; its wall and CPU time."""
    env = dict(os.environ, OMP_NUM_THREADS="1", DP_INTRA_OP_PARALLELISM_THREADS="1",
               DP_INTER_OP_PARALLELISM_THREADS="1")
    with Clock() as clock:
        subprocess.run([sys.executable, "-m", "deepmd", "--pt", *args], cwd=cwd, env=env, check=True,
                       stdout=subprocess.DEVNULL)
    return clock


def run_deepmd(train: list[Atoms], test: list[Atoms], cpu_s: float, seed: int) -> dict:
    type_map = sorted({s for atoms in train + test for s in atoms.get_chemical_symbols()})
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_deepmd_systems(train, root / "train", type_map)
        write_deepmd_systems(test, root / "test", type_map)
        short = {}
        for n in (100, 300):  # two short runs: the time per step, and the start-up (statistics, sel)
            calibration = root / f"calibration{n}"
            calibration.mkdir()
            (calibration / "input.json").write_text(json.dumps(deepmd_input(type_map, root / "train", n, seed)))
            short[n] = dp("train", "input.json", cwd=calibration).cpu_s
        per_step = max(1e-4, (short[300] - short[100]) / 200)
        steps = max(300, int((cpu_s - (short[100] - 100 * per_step)) / per_step))
        run = root / "run"
        run.mkdir()
        config = deepmd_input(type_map, root / "train", steps, seed)
        (run / "input.json").write_text(json.dumps(config))
        print(f"\n[{DEEPMD_ROW}] {steps} steps (about {per_step * 1e3:.0f} ms each) to match {cpu_s:.0f} CPU s",
              flush=True)
        clock = dp("train", "input.json", cwd=run)
        dp("freeze", "-o", "frozen_model.pth", cwd=run)
        dp("test", "-m", "frozen_model.pth", "-s", str(root / "test"), "-n", "0", "-d", "detail", cwd=run)
        energy = np.loadtxt(run / "detail.e_peratom.out", ndmin=2)
        forces = np.loadtxt(run / "detail.f.out", ndmin=2)
    e_rmse = float(np.sqrt(np.mean((energy[:, 1] - energy[:, 0]) ** 2))) * 1e3
    f_rmse = float(np.sqrt(np.mean((forces[:, 3:6] - forces[:, 0:3]) ** 2)))
    print(f"[{DEEPMD_ROW}] {clock.cpu_s:.0f} CPU s ({clock.wall_s:.0f} s wall), test RMSE {e_rmse:.2f} meV/atom, "
          f"{f_rmse:.4f} eV/Å", flush=True)
    return {"train_s": clock.wall_s, "train_cpu_s": clock.cpu_s, "energy_rmse_meV_per_atom": e_rmse,
            "force_rmse_eV_per_A": f_rmse, "epochs": None, "best_epoch": None,
            "settings": {"descriptor": config["model"]["descriptor"], "fitting_net": config["model"]["fitting_net"],
                         "learning_rate": config["learning_rate"], "loss": config["loss"], "numb_steps": steps}}


# ---------------------------------------------------------------- report

def weight(start: float, limit: float | None) -> str:
    return f"{start:g}" if limit is None else f"{start:g}→{limit:g}"


def table(rows: dict[str, dict]) -> str:
    base = rows.get("example_old", {}).get("train_cpu_s")
    lines = [f"{'row':<16} {'hidden':>8} {'cutoffs Å':>9} {'w_E:w_F':>13} {'epochs':>9} {'CPU s':>7} "
             f"{'vs old':>6} {'wall s':>7} {'E meV/atom':>10} {'F eV/Å':>7}"]
    for name, r in rows.items():
        s = r["settings"]
        if name == DEEPMD_ROW:
            shape, cutoffs, weights, epochs = "se_e2_a", f"{s['descriptor']['rcut']:.1f}", "0.02→1:1000→1", \
                f"{s['numb_steps']} st"
        else:
            shape = "×".join(map(str, s["hidden"]))
            cutoffs = f"{s['radial_cutoff_A']:.1f}/{s['angular_cutoff_A']:.1f}"
            weights = (f"{weight(s['energy_weight'], s['energy_weight_limit'])}:"
                       f"{weight(s['force_weight'], s['force_weight_limit'])}")
            epochs = f"{r['epochs']}/{s['max_epochs']}"
        ratio = f"{r['train_cpu_s'] / base:.2f}" if base else "-"
        lines.append(f"{name:<16} {shape:>8} {cutoffs:>9} {weights:>13} {epochs:>9} {r['train_cpu_s']:>7.0f} "
                     f"{ratio:>6} {r['train_s']:>7.0f} {r['energy_rmse_meV_per_atom']:>10.2f} "
                     f"{r['force_rmse_eV_per_A']:>7.4f}")
    return "\n".join(lines)


def rounded(value):
    if isinstance(value, float):
        return round(value, 4) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--rows", default=",".join([*ROWS, DEEPMD_ROW]),
                        help=f"comma-separated, of {', '.join([*ROWS, DEEPMD_ROW])}")
    parser.add_argument("--epochs-scale", type=float, default=1.0)
    parser.add_argument("--label-workers", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--seed", type=int, default=0, help="the train/test split and the training seeds")
    parser.add_argument("--data-seed", type=int, default=0, help="the structures")
    args = parser.parse_args()
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = set(names) - {*ROWS, DEEPMD_ROW}
    if unknown or not names or args.epochs_scale <= 0:
        parser.error(f"--rows: unknown {sorted(unknown)}" if unknown else "--rows empty or --epochs-scale <= 0")
    if DEEPMD_ROW in names:  # it trains for the wall time of wide, so it runs after it
        if "wide" not in names:
            parser.error(f"--rows: {DEEPMD_ROW} needs wide (it trains for wide's wall time)")
        names = [n for n in names if n != DEEPMD_ROW] + [DEEPMD_ROW]
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # tblite's OpenMP, read when it first loads
    torch.set_num_threads(1)

    frames, failed, key, label_s = labeled_frames(args.frames, args.data_seed, args.cache.expanduser(),
                                                  args.label_workers)
    train_idx, test_idx = train_test_split(len(frames), args.seed)
    train, test = [frames[k] for k in train_idx], [frames[k] for k in test_idx]
    print(f"split (seed {args.seed}): {len(train)} train, {len(test)} test")

    rows: dict[str, dict] = {}
    for name in names:
        if name in ROWS:
            rows[name] = run_row(ROWS[name], train, test, args.epochs_scale, args.seed)
        elif deepmd_available():
            try:
                rows[name] = run_deepmd(train, test, rows["wide"]["train_cpu_s"], args.seed)
            except (subprocess.CalledProcessError, OSError) as exc:  # optional: the other rows still report
                print(f"[{DEEPMD_ROW}] failed, left out: {exc}")
    if "example_old" in rows:
        for r in rows.values():
            r["cpu_vs_example_old"] = r["train_cpu_s"] / rows["example_old"]["train_cpu_s"]
            r["wall_vs_example_old"] = r["train_s"] / rows["example_old"]["train_s"]

    print()
    print(table(rows))
    print(json.dumps(rounded({"frames": len(frames), "failed_labels": failed, "n_train": len(train),
                              "n_test": len(test), "data_key": key, "label_s": label_s,
                              "threads": torch.get_num_threads(), "rows": rows})))


if __name__ == "__main__":
    main()
