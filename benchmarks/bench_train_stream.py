"""Training from data larger than memory: s/step and peak memory of streamed training (`train --stream`)
on a synthetic 1,000,000-frame dataset against a 1,000-frame one, and of resident training.

The dataset: a rock-salt Ni4O4 cell (a = 4.17 Å) whose atoms are displaced at random (σ = 0.1 Å) in
every frame, with harmonic labels (E = E0 + k Σ u², F = −2k u, k = 1 eV/Å²), written in blocks straight
into the deepmd/hdf5 layout (contiguous arrays, as `cathodeml ingest` writes them) (1M frames: ~0.4 GB on disk).  Every configuration runs in its own process
so its peak resident memory (ru_maxrss) is its own; s/step is the trainer's (first step and displays
excluded).  The model is small (embedding 8-16, fitting 32-32, rcut 4 Å) so that the data path, not
the network, is what is measured (`--water-nets`: DeePMD-kit's water nets, a realistic step);
batch_size auto (32 atoms: 4 frames).

    python benchmarks/bench_train_stream.py [--frames 1000 1000000] [--resident 1000 100000] [--steps 300]
                                            [--water-nets] [--workdir DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CONFIG = """
[model]
rcut = 4.0
rcut_smth = 0.5
sel = "auto"
embedding_neurons = {embedding}
axis_neuron = {axis}
fitting_neurons = {fitting}
type_map = ["Ni", "O"]

[training]
steps = {steps}
batch_size = "auto"
disp_freq = 100000
save_freq = 100000
validation_fraction = 0.001
valid_frames = 4
stat_frames = 20
"""


def write_synthetic(path: Path, n_frames: int, chunk: int = 100_000, seed: int = 0) -> None:
    import h5py

    a = 4.17
    base = np.array([[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0]], float)
    pos0 = np.concatenate([base, base + 0.5]) % 1.0 * a
    types = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        g = f.create_group("Ni4O4")
        g["type.raw"] = types
        g["type_map.raw"] = np.array([b"Ni", b"O"])
        s = g.create_group("set.000")
        cols = {"coord.npy": 24, "force.npy": 24, "box.npy": 9}
        for name, width in cols.items():
            s.create_dataset(name, (n_frames, width), "f8")  # contiguous, as write_dataset (ingest) lays them out
        s.create_dataset("energy.npy", (n_frames,), "f8")
        for start in range(0, n_frames, chunk):
            n = min(chunk, n_frames - start)
            u = rng.normal(scale=0.1, size=(n, 8, 3))
            s["coord.npy"][start:start + n] = ((pos0 + u) % a).reshape(n, 24)
            s["force.npy"][start:start + n] = (-2.0 * u).reshape(n, 24)
            s["box.npy"][start:start + n] = np.tile((np.eye(3) * a).reshape(9), (n, 1))
            s["energy.npy"][start:start + n] = -40.0 + np.sum(u * u, axis=(1, 2))


def worker(data: str, config: str, stream: bool) -> dict:
    from cathodeml.train.config import read_config, with_overrides
    from cathodeml.train.plan import plan_run
    from cathodeml.train.trainer import train

    settings, _ = read_config(config)
    settings = with_overrides(settings, training__data=(data,), training__stream=stream)
    t0 = time.perf_counter()
    plan = plan_run(settings)
    plan_s = time.perf_counter() - t0
    rss_plan = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as tmp:
        result = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                       lcurve_path=Path(tmp) / "lcurve.out", checkpoint_path=Path(tmp) / "ck.h5")
    return {"frames": sum(s.n_frames for s in plan.train_systems), "stream": stream, "plan_s": plan_s,
            "s_per_step": 1.0 / result.steps_per_second, "steps": result.step,
            "peak_rss_after_plan_MB": rss_plan,
            "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "batch_size": plan.train_systems[0].batch_size}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[1000, 1_000_000], help="streamed dataset sizes")
    ap.add_argument("--resident", type=int, nargs="*", default=[1000, 100_000], help="resident dataset sizes")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--water-nets", action="store_true",
                    help="DeePMD-kit's water nets (25-50-100, axis 16, 240-240-240) instead of the small ones")
    ap.add_argument("--workdir", type=Path, help="keep the datasets here (default: a temporary folder)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker[0], args.worker[1], args.worker[2] == "stream")))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        config = work / "bench.toml"
        nets = (dict(embedding=[25, 50, 100], axis=16, fitting=[240, 240, 240]) if args.water_nets
                else dict(embedding=[8, 16], axis=4, fitting=[32, 32]))
        config.write_text(CONFIG.format(steps=args.steps, **nets))
        rows = []
        for mode, sizes in (("stream", args.frames), ("resident", args.resident)):
            for n in sizes:
                data = work / f"synthetic_{n}.h5"
                if not data.exists():
                    t0 = time.perf_counter()
                    write_synthetic(data, n)
                    print(f"wrote {data} ({data.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s)",
                          file=sys.stderr)
                env = dict(os.environ, JAX_ENABLE_X64="1")
                out = subprocess.run([sys.executable, __file__, "--worker", str(data), str(config), mode], env=env,
                                     check=True, capture_output=True, text=True).stdout
                rows.append({"dataset_frames": n, **json.loads(out.strip().splitlines()[-1])})
                print(json.dumps(rows[-1]), flush=True)
    base = {r["stream"]: r["s_per_step"] for r in rows if r["dataset_frames"] == min(args.frames)}
    print(f"{'frames':>9} {'mode':>9} {'plan s':>7} {'ms/step':>8} {'vs 1k stream':>12} {'peak RSS MB':>12}")
    for r in rows:
        print(f"{r['dataset_frames']:>9} {'stream' if r['stream'] else 'resident':>9} {r['plan_s']:>7.1f} "
              f"{1000 * r['s_per_step']:>8.2f} {r['s_per_step'] / base.get(True, np.nan):>12.2f} {r['peak_rss_MB']:>12.0f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
