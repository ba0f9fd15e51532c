"""Peak memory and speed of `cathodeml md` against cell size: the whole cell at once vs atom chunks.

The model is bench_md.py's water model (DeePMD-kit's reference water architecture: se_e2_a, rcut 6 Å,
sel 46/92, embedding 25-50-100, fitting 240³, float64; random weights, real descriptor statistics),
the cell the 192-atom water frame replicated n×n×n.  Each run is its own `cathodeml md` process (NVT,
300 K, 0.25 fs, a frame at the end), timed whole and with its peak resident memory from
/usr/bin/time; the steady steps/s is what md reports.  `--chunk 0` evaluates the whole cell at once
(cathodeml before chunking), the default evaluates 512 atoms at a time on CPU.

    python benchmarks/bench_md_memory.py --reps 2 4 5 --steps 20
    python benchmarks/bench_md_memory.py --reps 2 4 5 --steps 20 --compressed --whole-max 0

`--compressed` runs the model after `compress_model` (DeePMD-kit's tables; on CPU the fused kernel,
1,024-atom chunks by default).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_md import replicate, water_frame, water_model  # noqa: E402


def run_md(model: Path, poscar: Path, out: Path, steps: int, chunk: str | None) -> dict:
    args = ["/usr/bin/time", "-f", "%M", "cathodeml", "md", str(model), str(poscar), "-o", str(out), "--steps",
            str(steps), "--stride", str(steps), "--dt", "0.25", "-T", "300", "--json", "--overwrite"]
    t0 = time.perf_counter()
    res = subprocess.run(args + ([] if chunk is None else ["--chunk", chunk]), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(res.stderr)
    return {"wall_s": wall, "peak_gib": int(res.stderr.strip().splitlines()[-1]) / 2**20, **json.loads(res.stdout)}


def main() -> None:
    from ase import Atoms
    from ase.io import write

    from cathodeml.model import save_model

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", type=int, nargs="+", default=[2, 4, 5])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--whole-max", type=int, default=13000, help="largest cell also run with --chunk 0")
    p.add_argument("--compressed", action="store_true", help="the compressed (tabulated) model")
    args = p.parse_args()
    print("| atoms | energy evaluation | peak resident (GiB) | kB/atom | steady steps/s | atom-steps/s | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = water_model()
        if args.compressed:
            from cathodeml.model.compress import compress_model, min_neighbor_distance

            pos, cell, types = water_frame()
            model = compress_model(model, min_neighbor_distance([(pos[None], cell[None], types)]))
        save_model(tmp / "water.h5", model)
        for n in args.reps:
            pos, cell, types = replicate(*water_frame(), n)
            poscar = tmp / f"POSCAR_{n}"
            write(poscar, Atoms(["O" if t == 0 else "H" for t in types], positions=pos, cell=cell, pbc=True),
                  format="vasp", sort=False)
            for chunk in (["0"] if len(types) <= args.whole_max else []) + [None]:
                r = run_md(tmp / "water.h5", poscar, tmp / "traj.h5", args.steps, chunk)
                default = "compressed, 1,024-atom chunks (default)" if args.compressed else "512-atom chunks (default)"
                label = "whole cell (`--chunk 0`)" if chunk == "0" else default
                print(f"| {len(types):,} | {label} | {r['peak_gib']:.2f} | {r['peak_gib'] * 2**20 / len(types):.0f} | "
                      f"{r['steps_per_s']:.2f} | {r['steps_per_s'] * len(types):,.0f} | {r['wall_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
