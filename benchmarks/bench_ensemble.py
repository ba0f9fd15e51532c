"""Ensembles of 4 against 4 separate runs, on the same work: md (`md --models`) and training (`train --ensemble 4`).

The driving model is examples/lgps/model.h5 (Li10GeP2S12, the 400-atom POSCAR of examples/lgps); the other
three members are copies with 1 % multiplicative noise on every weight (what matters here is the cost, not the
values).  The ensemble is evaluated at every written frame in one vmapped program, so its cost over a single run
is (members evaluated per frame) × frames, not 4× the steps.  Wall times of whole `cathodeml md` processes
(compilation included), and the steady-state steps/s that md reports.

Training: `train --ensemble 4` (one vmapped program) against `train --ensemble 4 --sequential` (four
runs one after another), configs/lgps.toml on two systems of the LGPS DP-GEN set.

    python benchmarks/bench_ensemble.py --steps 400 --stride 10 --train-steps 100
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from cathodeml.model import Model, load_model, save_model

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "lgps" / "model.h5"
POSCAR = ROOT / "examples" / "lgps" / "POSCAR_Li160Ge16P32S192"


def run(args: list[str]) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = subprocess.run(["cathodeml", "md", *args, "--json", "--overwrite"], capture_output=True, text=True, check=True)
    return time.perf_counter() - t0, json.loads(out.stdout)


LGPS = ROOT.parent / "shared" / "data" / "deepmd" / "lgps_dpgen" / "data.init"


def train_part(steps: int, tmp: Path) -> None:
    data = [str(LGPS / name) for name in ("LiGePS-iter.000000-data.000", "LiGePS-iter.000001-data.001")]
    walls, out = {}, {}
    for mode in ("vmap", "sequential"):
        (tmp / mode).mkdir()
        args = ["cathodeml", "train", str(ROOT / "configs" / "lgps.toml"), *sum((["--data", d] for d in data), []),
                "--steps", str(steps), "--ensemble", "4", "-o", str(tmp / mode / "model.h5"), "--json"]
        t0 = time.perf_counter()
        res = subprocess.run(args + (["--sequential"] if mode == "sequential" else []), capture_output=True,
                             text=True, check=True)
        walls[mode], out[mode] = time.perf_counter() - t0, json.loads(res.stdout)
    first = out["vmap"]["members"][0]
    atoms = sorted({s["atoms"] for s in first["train_systems"]})
    print(f"\ntraining, configs/lgps.toml, {steps} steps, systems of {atoms} atoms, batch 1")
    print("| run | wall (s) | steady steps/s (each member) | wall ÷ 1 member |")
    print("|---|---|---|---|")
    one = walls["sequential"] / 4
    print(f"| 4 members one by one (`--sequential`) | {walls['sequential']:.1f} | "
          f"{np.mean([m['steps_per_second'] for m in out['sequential']['members']]):.2f} | 4.00 |")
    print(f"| 4 members in one program | {walls['vmap']:.1f} | {first['steps_per_second']:.2f} | "
          f"{walls['vmap'] / one:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--stride", type=int, default=10)
    p.add_argument("--train-steps", type=int, default=100, help="0: skip the training part")
    args = p.parse_args()
    base = load_model(MODEL)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        members = []
        for k in range(1, 4):
            rng = np.random.default_rng(k)
            params = jax.tree_util.tree_map(lambda w: np.asarray(w) * (1 + 0.01 * rng.standard_normal(np.shape(w))), base.params)
            save_model(tmp / f"m{k}.h5", Model(base.config, params, base.stats, spin=base.spin))
            members += ["--models", str(tmp / f"m{k}.h5")]
        common = [str(POSCAR), "--steps", str(args.steps), "--stride", str(args.stride), "--dt", "1", "-T", "600"]
        single_wall, single = run([str(MODEL), *common, "-o", str(tmp / "one.h5")])
        ens_wall, ens = run([str(MODEL), *common, "-o", str(tmp / "ens.h5"), *members])
    n = ens["n_atoms"]
    print(f"{n} atoms, {args.steps} steps, a frame every {args.stride}")
    print("| run | wall (s) | steady steps/s | frames | wall ÷ single |")
    print("|---|---|---|---|---|")
    print(f"| 1 model | {single_wall:.1f} | {single['steps_per_s']:.1f} | {single['frames']} | 1.00 |")
    print(f"| 4 separate runs (4 × 1 model) | {4 * single_wall:.1f} | – | – | 4.00 |")
    print(f"| ensemble of 4 (`--models` ×3) | {ens_wall:.1f} | {ens['steps_per_s']:.1f} | {ens['frames']} | "
          f"{ens_wall / single_wall:.2f} |")
    print(f"max_devi_f mean {ens['model_deviation']['max_devi_f_mean']:.4f} eV/Å")
    if args.train_steps:
        with tempfile.TemporaryDirectory() as tmp:
            train_part(args.train_steps, Path(tmp))


if __name__ == "__main__":
    main()
