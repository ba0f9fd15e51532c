"""The GPU check of issue 16, one short script: md µs/step/atom on 1,536 / 12,288 / 24,000 water atoms in
float64 and float32, and the s/step of training, next to DeePMD-kit's published 2.33 µs/step/atom (12,288
water atoms, 2×V100, DeePMD-kit's paper).

The model is bench_md.py's (DeePMD-kit's water architecture, random weights, real water statistics); md is
`cathodeml.md`'s jitted NVT loop with the default chunk for the device; training is bench_train_stream.py's
synthetic Ni4O4 data with the water nets, resident and streamed.  Everything is written as JSON to --out.
On a device machine the water data is not under /work/shared: copy it into the checkout first and point
CATHODEML_WATER at it (`cp -r /work/shared/data/deepmd/water benchmarks/.water`, then carry that path).

    CATHODEML_WATER=benchmarks/.water python benchmarks/bench_gpu.py --sizes 2 4 5 --steps 50 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def md_rows(sizes, steps):
    import jax

    from bench_md import replicate, time_cathodeml, water_frame, water_model
    from cathodeml.model import Model

    model = water_model()
    base = water_frame()
    rows = []
    for precision in ("float64", "float32"):
        m = Model(model.config.replace(precision=precision), model.params, model.stats)
        for n in sizes:
            pos, cell, types = replicate(*base, n)
            try:
                r = time_cathodeml(m, pos, cell, types, steps)
                r["us_per_step_per_atom"] = 1e6 / r["atom_steps_per_s"]
            except Exception as exc:  # noqa: BLE001 -- out of device memory, say: record it, go on
                r = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
            rows.append({"precision": precision, "atoms": len(types), "device": str(jax.devices()[0]), **r})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def train_rows(steps):
    from bench_train_stream import CONFIG, worker, write_synthetic

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data, config = tmp / "synthetic.h5", tmp / "bench.toml"
        write_synthetic(data, 10_000)
        config.write_text(CONFIG.format(steps=steps, embedding=[25, 50, 100], axis=16, fitting=[240, 240, 240]))
        for stream in (False, True):
            rows.append({"train": "water nets, Ni4O4 × 10,000 frames", **worker(str(data), str(config), stream)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 5], help="replicas per axis of the 192-atom frame")
    ap.add_argument("--steps", type=int, default=50, help="timed md steps")
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = {"md": md_rows(args.sizes, args.steps), "train": train_rows(args.train_steps),
              "deepmd_kit_published_us_per_step_per_atom": 2.33, "wall_s": None}
    result["wall_s"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(result, indent=2))
    print(f"{'precision':>9} {'atoms':>7} {'µs/step/atom':>13}  (DeePMD-kit published: 2.33, 12,288 atoms, 2×V100)")
    for r in result["md"]:
        print(f"{r['precision']:>9} {r['atoms']:>7} {r.get('us_per_step_per_atom', float('nan')):>13.3f} {r.get('error', '')}")
    for r in result["train"]:
        print(f"train {'streamed' if r['stream'] else 'resident'}: {1000 * r['s_per_step']:.2f} ms/step")


if __name__ == "__main__":
    main()
