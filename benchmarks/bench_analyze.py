"""Time and peak memory of `cathodeml analyze` on a large synthetic trajectory, and against
pymatgen's DiffusionAnalyzer on the same data (at a size pymatgen can hold).

    python benchmarks/bench_analyze.py --atoms 20000 --li 6000 --frames 5000 [--peer-atoms 2000 --peer-frames 1000]

The trajectory is an H5MD file in cathodeml's layout: Li random walkers (D known) in a vibrating
framework, 60 Å cubic cell, unwrapped positions with image counts.  cathodeml runs as the real
command in a child process so that its peak resident memory (ru_maxrss) is its own.  pymatgen's
DiffusionAnalyzer (package pymatgen-analysis-diffusion) is timed on a smaller trajectory built
the same way, with cathodeml re-timed on that same file, and the ratio reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np



def write_synthetic(path: Path, n_atoms: int, n_li: int, n_frames: int, seed: int = 0, dt_fs: float = 100.0) -> float:
    """Write the trajectory chunk by chunk (never all in memory); returns D (cm²/s) of the walkers."""
    rng = np.random.default_rng(seed)
    box = (n_atoms / 0.09) ** (1 / 3)
    cell = np.eye(3) * box
    sigma = 0.15  # Å per axis per frame → D = σ²/(2 dt)
    li = rng.random((n_li, 3)) * box
    fw = rng.random((n_atoms - n_li, 3)) * box

    chunk = max(1, int(2e8 // (n_atoms * 24)))
    with h5py.File(path, "w") as f:
        f.attrs["cathodeml"] = json.dumps({"kind": "trajectory", "format_version": 1, "type_map": ["Li", "Cl"]})
        h5 = f.create_group("h5md")
        h5.attrs["version"] = np.array([1, 1])
        h5.create_group("author").attrs["name"] = "bench"
        c = h5.create_group("creator")
        c.attrs["name"], c.attrs["version"] = "cathodeml", "bench"
        part = f.create_group("particles/all")
        pos = part.create_group("position").create_dataset("value", (n_frames, n_atoms, 3), "f8", chunks=(8, n_atoms, 3))
        pos.attrs["unit"] = "Å"
        img = part.create_group("image").create_dataset("value", (n_frames, n_atoms, 3), "i4", chunks=(8, n_atoms, 3))
        for g in ("position", "image"):
            part[g].create_dataset("step", data=np.arange(n_frames) * 100)
            part[g].create_dataset("time", data=np.arange(n_frames) * dt_fs).attrs["unit"] = "fs"
        box_g = part.create_group("box")
        box_g.attrs["dimension"] = 3
        box_g.attrs["boundary"] = np.array([b"periodic"] * 3)
        edges = box_g.create_group("edges")
        edges.create_dataset("value", data=np.broadcast_to(cell, (n_frames, 3, 3)))
        edges.create_dataset("step", data=np.arange(n_frames) * 100)
        edges.create_dataset("time", data=np.arange(n_frames) * dt_fs)
        part.create_dataset("species", data=np.array([0] * n_li + [1] * (n_atoms - n_li), dtype=np.int32))
        part.create_dataset("mass", data=np.array([6.94] * n_li + [35.45] * (n_atoms - n_li)))
        f.create_group("parameters").attrs["cathodeml"] = json.dumps(
            {"type_map": ["Li", "Cl"], "temperature_K": 600.0, "timestep_fs": 1.0, "stride": 100, "ensemble": "nvt"})
        current = li.copy()
        for lo in range(0, n_frames, chunk):
            n = min(chunk, n_frames - lo)
            steps = rng.normal(0, sigma, (n, n_li, 3))
            if lo == 0:
                steps[0] = 0.0
            li_path = current + np.cumsum(steps, axis=0)
            current = li_path[-1]
            frame = np.concatenate([li_path, fw + rng.normal(0, 0.1, (n, n_atoms - n_li, 3))], axis=1)
            pos[lo:lo + n] = frame
            img[lo:lo + n] = np.floor(frame / box).astype(np.int32)
    return sigma**2 / (2 * dt_fs) * 0.1


def run_cathodeml(path: Path, out: Path, extra=()) -> dict:
    """`cathodeml analyze` in a child process: wall time (s), peak RSS (MiB) and its results."""
    code = ("import resource, sys, time; t = time.perf_counter(); from cathodeml.cli import main; "
            "sys.argv = ['cathodeml', 'analyze', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('BENCH', time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    args = [sys.executable, "-c", code, str(path), "-o", str(out), "--quiet", "--no-plots", *extra]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("BENCH")][-1].split()
    res = json.loads((out / "results.json").read_text())["runs"][0]
    return {"wall_s": float(line[1]), "peak_MiB": int(line[2]) / 1024, "D": res["D_self"], "D_sigma": res["D_sigma"]}


def run_pymatgen(path: Path, dt_fs: float) -> dict | None:
    """pymatgen DiffusionAnalyzer.from_structures on the same trajectory (time includes building
    the Structures, which is how it is fed).  None when the package is not installed."""
    code = r"""
import resource, sys, time, json
import h5py, numpy as np
from pymatgen.core import Lattice, Structure
from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
path, dt = sys.argv[1], float(sys.argv[2])
with h5py.File(path) as f:
    pos = f["particles/all/position/value"][()]; cell = f["particles/all/box/edges/value"][0]
    species = ["Li" if s == 0 else "Cl" for s in f["particles/all/species"][()]]
t = time.perf_counter()
lattice = Lattice(cell)
frac = pos @ np.linalg.inv(cell)
structures = [Structure(lattice, species, fr - np.floor(fr)) for fr in frac]
da = DiffusionAnalyzer.from_structures(structures, "Li", 600, time_step=dt, step_skip=1, smoothed=False)
wall = time.perf_counter() - t
print(json.dumps({"wall_s": wall, "peak_MiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "D": da.diffusivity, "D_err": da.diffusivity_std_dev}))
"""
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(dt_fs)], capture_output=True, text=True)
    if proc.returncode != 0:
        if "No module named 'pymatgen.analysis.diffusion'" in proc.stderr:
            return None
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, default=20000)
    ap.add_argument("--li", type=int, default=6000)
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--peer-atoms", type=int, default=2000)
    ap.add_argument("--peer-li", type=int, default=600)
    ap.add_argument("--peer-frames", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_analyze_"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        big = work / "big.h5"
        t = time.perf_counter()
        d_true = write_synthetic(big, args.atoms, args.li, args.frames)
        print(f"wrote {big} ({big.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.0f} s; D_true = {d_true:.4g} cm²/s")
        r = run_cathodeml(big, work / "out_big")
        rows.append(("cathodeml", f"{args.atoms} atoms ({args.li} Li) × {args.frames} frames", r))
        print(f"cathodeml  {args.atoms}×{args.frames}: {r['wall_s']:.1f} s, peak {r['peak_MiB']:.0f} MiB, "
              f"D = {r['D']['value']:.4g} ± {r['D']['err']:.2g} cm²/s")
        big.unlink()
        small = work / "small.h5"
        d_small = write_synthetic(small, args.peer_atoms, args.peer_li, args.peer_frames, seed=1)
        rc = run_cathodeml(small, work / "out_small")
        rp = run_pymatgen(small, 100.0)
        print(f"cathodeml  {args.peer_atoms}×{args.peer_frames}: {rc['wall_s']:.2f} s, peak {rc['peak_MiB']:.0f} MiB, "
              f"D = {rc['D']['value']:.4g} ± {rc['D']['err']:.2g} (true {d_small:.4g}) cm²/s")
        if rp is None:
            print("pymatgen DiffusionAnalyzer: not installed (pip install pymatgen-analysis-diffusion); no ratio")
        else:
            print(f"pymatgen   {args.peer_atoms}×{args.peer_frames}: {rp['wall_s']:.2f} s, peak {rp['peak_MiB']:.0f} MiB, "
                  f"D = {rp['D']:.4g} ± {rp['D_err']:.2g} cm²/s → cathodeml is {rp['wall_s'] / rc['wall_s']:.1f}× faster")
    finally:
        for p in work.glob("*.h5"):
            p.unlink()


if __name__ == "__main__":
    main()
