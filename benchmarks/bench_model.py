"""Time cathodeml's se_e2_a energy+forces against DeePMD-kit's DeepPot.eval on the same model.

The model has DeePMD-kit's reference water architecture (examples/water/se_e2_a input_torch.json:
rcut 6 Å, sel 46/92, embedding 25-50-100, axis 16, fitting 240-240-240, type_one_side) with
random weights and statistics from the real water data.  cathodeml writes it as a .dp file;
DeePMD-kit converts that to .pth itself (`dp --pt convert-backend`) and evaluates it, which is
also the check that an exported model runs in DeePMD-kit with the same energies.  Systems: a
real 192-atom water frame and its 2×2×2 replica (1,536 atoms).  DeePMD-kit is a benchmark-only
dependency (benchmarks/requirements.txt).

    python benchmarks/bench_model.py [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# DeePMD-kit's recommended threading for a dedicated machine: all cores intra-op, one inter-op pool.
os.environ.setdefault("DP_INTRA_OP_PARALLELISM_THREADS", str(os.cpu_count()))
os.environ.setdefault("DP_INTER_OP_PARALLELISM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count()))
NOMINAL_FLOP_PER_ATOM = 8.5e6  # energy+forces of this architecture, all Σsel slots evaluated (an estimate, for the efficiency column)
WATER = Path(os.environ.get("CATHODEML_WATER", "/work/shared/data/deepmd/water"))


def _best(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _water_frames():
    d = WATER / "data_0"
    types = np.loadtxt(d / "type.raw", dtype=int)
    coords = np.load(d / "set.000" / "coord.npy").reshape(-1, types.size, 3)
    boxes = np.load(d / "set.000" / "box.npy").reshape(-1, 3, 3)
    energies = np.load(d / "set.000" / "energy.npy")
    return coords, boxes, types, energies


def _replicate(pos, cell, types, n):
    shifts = [np.array([i, j, k]) @ cell for i in range(n) for j in range(n) for k in range(n)]
    return np.concatenate([pos + s for s in shifts]), cell * n, np.tile(types, len(shifts))


def _build_model():
    import jax

    from cathodeml.model import Model, ModelConfig, descriptor_stats, fit_type_bias, init_params

    spec = json.loads((WATER / "input_torch.json").read_text())["model"]
    desc, fit = spec["descriptor"], spec["fitting_net"]
    config = ModelConfig(type_map=tuple(spec["type_map"]), sel=tuple(desc["sel"]), rcut=desc["rcut"],
                         rcut_smth=desc["rcut_smth"], embedding_neurons=tuple(desc["neuron"]),
                         axis_neuron=desc["axis_neuron"], type_one_side=desc.get("type_one_side", True),
                         embedding_resnet_dt=desc.get("resnet_dt", False), fitting_neurons=tuple(fit["neuron"]),
                         fitting_resnet_dt=fit.get("resnet_dt", True))
    coords, boxes, types, energies = _water_frames()
    davg, dstd = descriptor_stats(config, [(coords[:20], boxes[:20], types)])
    counts = np.tile(np.bincount(types, minlength=config.ntypes), (len(energies), 1))
    stats = {"davg": davg, "dstd": dstd, "type_bias": fit_type_bias(counts, energies)}
    return Model(config, init_params(config, jax.random.PRNGKey(2024)), stats)


def _peak_gflops(repeats):
    """Achievable float64 peak: a large numpy (BLAS) matmul on all cores."""
    a = np.random.default_rng(0).random((3072, 3072))
    t = _best(lambda: a @ a, repeats)
    return 2 * 3072 ** 3 / t / 1e9


def _cathodeml_runs(model, systems, repeats):
    import jax

    from cathodeml.model import build_neighbor_list, energy_forces_virial

    rows = []
    for precision in ("float64", "float32"):
        config = model.config.replace(precision=precision)
        for label, (pos, cell, types) in systems.items():
            nbr = build_neighbor_list(pos, cell, types, config.rcut, config.ntypes)

            def run():
                jax.block_until_ready(energy_forces_virial(config, model.params, model.stats, pos, cell, nbr))

            t0 = time.perf_counter()
            run()
            compile_s = time.perf_counter() - t0
            t_eval = _best(run, repeats)
            t_nbr = _best(lambda: build_neighbor_list(pos, cell, types, config.rcut, config.ntypes), repeats)
            lowered = energy_forces_virial.lower(config, model.params, model.stats, pos, cell, nbr)
            cost = lowered.compile().cost_analysis()
            cost = cost[0] if isinstance(cost, list) else cost
            e, f, v = energy_forces_virial(config, model.params, model.stats, pos, cell, nbr)
            rows.append({"precision": precision, "system": label, "atoms": len(types), "eval_s": t_eval,
                         "neighbor_list_s": t_nbr, "compile_s": compile_s, "xla_flops": float(cost.get("flops", 0)),
                         "energy": float(e), "forces": np.asarray(f, dtype=np.float64), "virial": np.asarray(v)})
    return rows


def _deepmd_runs(dp_path, pth_path, systems, repeats):
    from deepmd.infer import DeepPot

    rows = []
    pot = DeepPot(str(pth_path))
    for label, (pos, cell, types) in systems.items():
        def run():
            return pot.eval(pos.reshape(1, -1), cell.reshape(1, 9), types, atomic=False)

        t = _best(run, repeats)
        e, f, v = run()
        rows.append({"backend": "pytorch", "system": label, "atoms": len(types), "eval_s": t, "energy": float(e[0, 0]),
                     "forces": f.reshape(-1, 3), "virial": v.reshape(3, 3)})
    pot_dp = DeepPot(str(dp_path))  # DeePMD-kit's own numpy backend reading our file directly
    pos, cell, types = systems["water 192"]
    e, f, v = pot_dp.eval(pos.reshape(1, -1), cell.reshape(1, 9), types, atomic=False)
    rows.append({"backend": "dp (numpy)", "system": "water 192", "atoms": len(types), "eval_s": float("nan"),
                 "energy": float(e[0, 0]), "forces": f.reshape(-1, 3), "virial": v.reshape(3, 3)})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from cathodeml.model import export_deepmd, import_deepmd
    from cathodeml.model.store import parameters_identical

    coords, boxes, types, _ = _water_frames()
    systems = {"water 192": (coords[0], boxes[0], types), "water 1536": _replicate(coords[0], boxes[0], types, 2)}
    model = _build_model()
    with tempfile.TemporaryDirectory() as tmp:
        dp_path, pth_path = Path(tmp) / "water.dp", Path(tmp) / "water.pth"
        export_deepmd(dp_path, model)
        assert parameters_identical(model, import_deepmd(dp_path))
        subprocess.run(["dp", "--pt", "convert-backend", str(dp_path), str(pth_path)], check=True,
                       capture_output=True)
        ours = _cathodeml_runs(model, systems, args.repeats)
        theirs = _deepmd_runs(dp_path, pth_path, systems, args.repeats)
    peak = _peak_gflops(args.repeats)

    report = {"peak_gflops_float64_numpy_matmul": peak, "runs": []}
    print(f"float64 matmul peak (numpy BLAS, all cores): {peak:.1f} GFLOP/s\n")
    print("| system | DeePMD-kit 3.2 PyTorch f64 | cathodeml f64 | ratio | cathodeml f32 | ratio | "
          "+ neighbour list (vesin) | XLA GFLOP | f64 GFLOP/s (% of peak) | nominal 8.5 MFLOP/atom: % of peak, "
          "DeePMD-kit / cathodeml | max rel. ΔE, ΔF vs DeePMD-kit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for label in systems:
        dp = next(r for r in theirs if r["system"] == label and r["backend"] == "pytorch")
        f64 = next(r for r in ours if r["system"] == label and r["precision"] == "float64")
        f32 = next(r for r in ours if r["system"] == label and r["precision"] == "float32")
        de = abs(f64["energy"] - dp["energy"]) / abs(dp["energy"])
        df = np.max(np.abs(f64["forces"] - dp["forces"])) / np.max(np.abs(dp["forces"]))
        gflops = f64["xla_flops"] / f64["eval_s"] / 1e9
        nominal = NOMINAL_FLOP_PER_ATOM * f64["atoms"]
        print(f"| {label} | {dp['eval_s'] * 1e3:.1f} ms | {f64['eval_s'] * 1e3:.1f} ms | "
              f"{dp['eval_s'] / f64['eval_s']:.2f}× | {f32['eval_s'] * 1e3:.1f} ms | "
              f"{dp['eval_s'] / f32['eval_s']:.2f}× | "
              f"{f64['neighbor_list_s'] * 1e3:.1f} ms | {f64['xla_flops'] / 1e9:.2f} | "
              f"{gflops:.1f} ({100 * gflops / peak:.0f}%) | "
              f"{100 * nominal / dp['eval_s'] / 1e9 / peak:.0f}%, {100 * nominal / f64['eval_s'] / 1e9 / peak:.0f}% | "
              f"{de:.1e}, {df:.1e} |")
        report["runs"].append({"system": label, "atoms": f64["atoms"], "deepmd_s": dp["eval_s"],
                               "cathodeml_f64_s": f64["eval_s"], "cathodeml_f32_s": f32["eval_s"],
                               "neighbor_list_s": f64["neighbor_list_s"], "compile_f64_s": f64["compile_s"],
                               "xla_flops": f64["xla_flops"], "rel_energy_diff": de, "rel_force_diff": df})
    dpn = next(r for r in theirs if r["backend"] == "dp (numpy)")
    f64 = next(r for r in ours if r["system"] == "water 192" and r["precision"] == "float64")
    de = abs(f64["energy"] - dpn["energy"]) / abs(dpn["energy"])
    print(f"\nexported .dp evaluated by DeePMD-kit's own numpy backend: max rel. ΔE {de:.1e}")
    report["dp_numpy_rel_energy_diff"] = de
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
