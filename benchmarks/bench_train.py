"""Training speed and accuracy on DeePMD-kit's water example: cathodeml vs `dp --pt train`, one run.

Both programs read the *same* DeePMD-kit input.json (the water se_e2_a setup: sel [46, 92],
rcut 6, embedding 25-50-100, fitting 240-240-240, batch 1, float64, lr 1e-3 → 3.51e-8 over
the run), train on data_0..2 for the same number of steps, and are then tested on all 80 frames
of data_3 (`dp --pt test` and `cathodeml test`).  Speed is steps per second excluding the first
step (compilation / warm-up) and the display steps; the machine is shared, so only the ratio of
two back-to-back runs means something.

    python benchmarks/bench_train.py --steps 200            # both
    python benchmarks/bench_train.py --steps 200 --skip-deepmd
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WATER = Path("/work/shared/data/deepmd/water")


def make_input(work: Path, steps: int, disp_freq: int) -> Path:
    spec = json.loads((WATER / "input_torch.json").read_text())
    spec["training"]["training_data"]["systems"] = [str(WATER / f"data_{i}") for i in range(3)]
    spec["training"]["validation_data"]["systems"] = [str(WATER / "data_3")]
    spec["training"].pop("stat_file", None)
    spec["training"].update(numb_steps=steps, disp_freq=disp_freq, save_freq=10 * steps)
    path = work / "input.json"
    path.write_text(json.dumps(spec, indent=1))
    return path


def run_deepmd(work: Path, steps: int) -> dict:
    log = subprocess.run(["dp", "--pt", "train", "input.json"], cwd=work, capture_output=True, text=True)
    if log.returncode:
        raise RuntimeError(log.stderr[-3000:])
    text = log.stdout + log.stderr
    walls = [(int(b), float(t)) for b, t in re.findall(r"Batch\s+(\d+): total wall time = ([\d.]+) s", text)]
    # intervals after the first display: (steps in interval, seconds)
    timed_steps = sum(b2 - b1 for (b1, _), (b2, _) in zip(walls[:-1], walls[1:]))
    timed = sum(t for _, t in walls[1:])
    subprocess.run(["dp", "--pt", "freeze", "-o", "frozen.pth"], cwd=work, capture_output=True, check=True)
    test = subprocess.run(["dp", "--pt", "test", "-m", "frozen.pth", "-s", str(WATER / "data_3"), "-n", "100000"],
                          cwd=work, capture_output=True, text=True)
    out = test.stdout + test.stderr
    e = float(re.search(r"Energy RMSE/Natoms\s*:\s*([\d.eE+-]+)", out).group(1))
    f = float(re.search(r"Force\s+RMSE\s*:\s*([\d.eE+-]+)", out).group(1))
    return {"seconds_per_step": timed / timed_steps, "valid_energy_rmse_meV_per_atom": 1000 * e,
            "valid_force_rmse_meV_per_A": 1000 * f}


def run_cathodeml(work: Path, steps: int) -> dict:
    proc = subprocess.run([sys.executable, "-m", "cathodeml.cli", "train", "input.json", "-o", "model.h5", "--json"],
                          cwd=work, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-3000:])
    summary = json.loads(proc.stdout)
    test = subprocess.run([sys.executable, "-m", "cathodeml.cli", "test", "model.h5", str(WATER / "data_3"), "--json"],
                          cwd=work, capture_output=True, text=True)
    if test.returncode:
        raise RuntimeError(test.stderr[-3000:])
    report = json.loads(test.stdout)["overall"]
    return {"seconds_per_step": 1.0 / summary["steps_per_second"],
            "valid_energy_rmse_meV_per_atom": report["energy"]["rmse"],
            "valid_force_rmse_meV_per_A": report["force"]["rmse"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--disp-freq", type=int, default=50)
    parser.add_argument("--skip-deepmd", action="store_true")
    args = parser.parse_args()
    results = {"steps": args.steps}
    with tempfile.TemporaryDirectory() as tmp:
        for name, runner in (("cathodeml", run_cathodeml), ("deepmd-kit", run_deepmd)):
            if name == "deepmd-kit" and (args.skip_deepmd or shutil.which("dp") is None):
                continue
            work = Path(tmp) / name
            work.mkdir()
            make_input(work, args.steps, args.disp_freq)
            t0 = time.perf_counter()
            results[name] = runner(work, args.steps)
            results[name]["wall_seconds"] = time.perf_counter() - t0
    if "deepmd-kit" in results:
        results["speedup"] = results["deepmd-kit"]["seconds_per_step"] / results["cathodeml"]["seconds_per_step"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
