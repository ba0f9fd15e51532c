"""MD throughput of `cathodeml md` against LAMMPS + DeePMD-kit (uncompressed and compressed) on the same model.

The model has DeePMD-kit's reference water architecture (examples/water input_torch.json: se_e2_a,
rcut 6 Å, rcut_smth 0.5, sel 46/92, embedding 25-50-100, axis 16, fitting 240-240-240,
type_one_side, float64) with random weights and descriptor statistics from the real water data:
a trained water model costs exactly the same per step, and the water model had not been trained
when this was written.  cathodeml exports it as a .dp file and DeePMD-kit converts that to .pth
itself (`dp --pt convert-backend`), and the two energies of the starting frame are compared, so
both sides time the same model.  Systems: a real 192-atom water frame replicated 2×2×2 (1,536
atoms) and 4×4×4 (12,288 atoms).  Both run Nosé–Hoover chain NVT at 300 K with dt = 0.25 fs (the
cost of a step does not depend on dt; ns/day is quoted for the production 1 fs step); the
peers are
  * LAMMPS with the DeePMD-kit plugin (`--peers VENV`, a venv from requirements-lammps.txt): the
    exported model as .pth, `fix nvt` with a 3-chain, and the same model after `dp --pt compress`
    (stride 0.01, extrapolate 5, the minimum neighbour distance from the water data), timed by
    LAMMPS's own "Loop time" (setup and the first force evaluation excluded, as for cathodeml), on
    1 rank with every core as a thread and on one rank per core (`mpirun`), the faster one compared;
  * DeePMD-kit's ASE calculator under ASE's NoseHooverChainNVT, when `deepmd` imports in this
    python (it is not in cathodeml's environment by default).
cathodeml runs the exact model and, with `--compressed`, its own compressed model
(`cathodeml.model.compress_model`, DeePMD-kit's tables) at `--compressed-chunk` atoms per chunk.

    python benchmarks/bench_md.py --peers /path/to/peers [--sizes 2 4] [--steps 40] [--lammps-steps 10 5]
                                  [--lammps-ranks 1 2] [--compressed] [--json out.json]
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("DP_INTRA_OP_PARALLELISM_THREADS", str(os.cpu_count()))
os.environ.setdefault("DP_INTER_OP_PARALLELISM_THREADS", "1")
WATER = Path(os.environ.get("CATHODEML_WATER", "/work/shared/data/deepmd/water"))
DT_FS, T_K = 0.25, 300.0  # short steps: the random-weight model pulls atoms together within ~10 fs


def water_model():
    import jax

    from cathodeml.model import Model, ModelConfig, descriptor_stats, init_params

    spec = json.loads((WATER / "input_torch.json").read_text())["model"]
    desc, fit = spec["descriptor"], spec["fitting_net"]
    config = ModelConfig(type_map=tuple(spec["type_map"]), sel=tuple(desc["sel"]), rcut=desc["rcut"],
                         rcut_smth=desc["rcut_smth"], embedding_neurons=tuple(desc["neuron"]),
                         axis_neuron=desc["axis_neuron"], type_one_side=desc.get("type_one_side", True),
                         fitting_neurons=tuple(fit["neuron"]), fitting_resnet_dt=fit.get("resnet_dt", True))
    pos, cell, types = water_frame()
    davg, dstd = descriptor_stats(config, [(pos[None], cell[None], types)])
    stats = {"davg": davg, "dstd": dstd, "type_bias": np.array([-93.6, -187.2]) / 3}
    return Model(config, init_params(config, jax.random.PRNGKey(2024)), stats)


def water_frame():
    d = WATER / "data_0"
    types = np.loadtxt(d / "type.raw", dtype=int)
    pos = np.load(d / "set.000" / "coord.npy")[0].reshape(-1, 3)
    cell = np.load(d / "set.000" / "box.npy")[0].reshape(3, 3)
    return pos, cell, types


def replicate(pos, cell, types, n):
    shifts = [np.array([i, j, k]) @ cell for i in range(n) for j in range(n) for k in range(n)]
    return np.concatenate([pos + s for s in shifts]), cell * n, np.tile(types, len(shifts))


def masses_of(types):
    return np.where(types == 0, 15.999, 1.008)


def time_cathodeml(model, pos, cell, types, steps, chunk=None):
    """(atom-steps/s, ns/day, compile+first-chunk seconds, energy of the start frame eV); chunk: atoms per
    chunk of the energy (None: md's default)."""
    import jax

    from cathodeml.md import integrators as integ
    from cathodeml.md.potentials import deeppot
    from cathodeml.md.runner import RunSettings, Simulation

    pot = deeppot(model, types, chunk=chunk)
    m = masses_of(types)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(0), m, T_K)
    warm = 5
    sim = Simulation(pot, cell, m, RunSettings(dt_fs=DT_FS, n_steps=warm, stride=warm, temperature_K=T_K,
                                               tdamp_fs=100.0, skin=2.0, min_distance=0.3))
    t0 = time.perf_counter()
    state = sim.initial_state(pos, v)
    e0 = float(state.potential_energy)
    state = sim.run(state, emit_first_frame=False).state  # compiles
    compile_s = time.perf_counter() - t0
    sim = Simulation(pot, cell, m, RunSettings(dt_fs=DT_FS, n_steps=warm + steps, stride=steps, temperature_K=T_K,
                                               tdamp_fs=100.0, skin=2.0, min_distance=0.3))
    sim.neighbors, sim.reference_positions = None, None
    state = sim.initial_state(state.positions, state.velocities, warm, state.chain)
    t0 = time.perf_counter()
    res = sim.run(state, emit_first_frame=False)
    wall = time.perf_counter() - t0
    done = res.steps_done
    per_s = done / wall
    return {"atom_steps_per_s": per_s * len(types), "ns_per_day_at_1fs": per_s * 86400 / 1e6, "steps": done,
            "wall_s": wall, "compile_s": compile_s, "energy_eV": e0, "neighbor_builds": res.neighbor_builds}


def peer_env(peers: Path) -> dict:
    """Environment for the peers venv's dp and lmp on a CPU machine: the CUDA runtime wheel on
    LD_LIBRARY_PATH, no GPU, and the cores for PyTorch's intra-op pool (one rank, as a user would run
    one node's worth of a small cell)."""
    env = dict(os.environ)
    libs = glob.glob(str(peers / "lib" / "python3*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = f"{peers / 'bin'}:{env['PATH']}"
    env["CUDA_VISIBLE_DEVICES"] = ""
    env["OMP_NUM_THREADS"] = env["DP_INTRA_OP_PARALLELISM_THREADS"] = str(os.cpu_count())
    env["DP_INTER_OP_PARALLELISM_THREADS"] = "1"
    return env


def convert_to_pth(model, workdir: Path, env=None) -> Path:
    from cathodeml.model import export_deepmd

    dp_path, pth_path = workdir / "water.dp", workdir / "water.pth"
    export_deepmd(dp_path, model)
    subprocess.run(["dp", "--pt", "convert-backend", str(dp_path), str(pth_path)], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pth_path


def compress_pth(pth: Path, workdir: Path, env) -> Path:
    """`dp --pt compress` (stride 0.01, extrapolate 5); the training input only points DeePMD-kit at the
    water data, from which it takes the minimum neighbour distance."""
    spec = json.loads((WATER / "input_torch.json").read_text())
    spec["training"]["training_data"]["systems"] = [str(WATER / "data_0")]
    spec["training"].pop("validation_data", None)
    (workdir / "input.json").write_text(json.dumps(spec))
    out = workdir / "water-compressed.pth"
    subprocess.run(["dp", "--pt", "compress", "-i", str(pth), "-o", str(out), "-s", "0.01", "-e", "5", "-t",
                    str(workdir / "input.json")], check=True, env=env, cwd=workdir, capture_output=True)
    return out


def time_lammps(pth: Path, pos, cell, types, steps, env, workdir: Path, ranks: int = 1) -> dict:
    """LAMMPS + DeePMD-kit NVT on the same cell on `ranks` MPI ranks sharing the cores (threads per rank
    = cores / ranks): atom-steps/s from LAMMPS's "Loop time" line (the setup force evaluation excluded)
    and the potential energy of the start frame (eV)."""
    from cathodeml.io.lammps import DeckSettings, input_script, write_data

    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    env = dict(env, OMP_NUM_THREADS=threads, DP_INTRA_OP_PARALLELISM_THREADS=threads)
    deck = workdir / f"lmp_{pth.stem}_{len(types)}_np{ranks}"
    deck.mkdir()
    write_data(deck / "conf.data", pos, cell, types, ["O", "H"], [15.999, 1.008])
    settings = DeckSettings(temperature_K=T_K, n_steps=steps, dt_fs=DT_FS, stride=steps, seed=1,
                            restart_every=10 * steps)
    script = input_script(settings, ["O", "H"], model=str(pth)).replace("thermo_modify   format float %.10f",
                                                                        "thermo_modify   format float %.12f")
    (deck / "in.lammps").write_text(script)
    t0 = time.perf_counter()
    mpi = ["mpirun", "-np", str(ranks)] if ranks > 1 else []
    proc = subprocess.run(mpi + ["lmp", "-in", "in.lammps", "-log", "log.lammps"], cwd=deck, env=env,
                          capture_output=True, text=True)
    wall_total = time.perf_counter() - t0
    if proc.returncode:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1][:200]}
    loop = re.search(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps", proc.stdout)
    lines = proc.stdout.splitlines()
    head = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["Step", "Time"])
    wall, done = float(loop.group(1)), int(loop.group(3))
    per_s = done / wall
    return {"atom_steps_per_s": per_s * len(types), "ns_per_day_at_1fs": per_s * 86400 / 1e6, "steps": done,
            "wall_s": wall, "process_wall_s": wall_total, "ranks": ranks, "threads_per_rank": int(threads),
            "energy_eV": float(lines[head + 1].split()[3])}


def time_deepmd_ase(pth: Path, pos, cell, types, steps):
    """DeePMD-kit's ASE calculator under ASE's NoseHooverChainNVT: (atom-steps/s, ns/day, energy)."""
    from ase import Atoms, units
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from deepmd.calculator import DP

    atoms = Atoms(symbols=["O" if t == 0 else "H" for t in types], positions=pos, cell=cell, pbc=True)
    atoms.calc = DP(model=str(pth))
    e0 = atoms.get_potential_energy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=T_K, rng=np.random.default_rng(0))
    dyn = NoseHooverChainNVT(atoms, timestep=DT_FS * units.fs, temperature_K=T_K, tdamp=100 * units.fs)
    dyn.run(1)  # warm-up
    t0 = time.perf_counter()
    dyn.run(steps)
    wall = time.perf_counter() - t0
    per_s = steps / wall
    return {"atom_steps_per_s": per_s * len(types), "ns_per_day_at_1fs": per_s * 86400 / 1e6, "steps": steps,
            "wall_s": wall, "energy_eV": float(e0)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4], help="replicas per axis of the 192-atom frame")
    ap.add_argument("--steps", type=int, default=40, help="timed cathodeml steps")
    ap.add_argument("--peers", type=Path, help="venv with deepmd-kit[torch,lmp] (requirements-lammps.txt)")
    ap.add_argument("--lammps-steps", type=int, nargs="+", default=[20],
                    help="LAMMPS steps (the loop is timed), one value or one per size")
    ap.add_argument("--lammps-ranks", type=int, nargs="+", default=[1, os.cpu_count() or 1],
                    help="MPI rank counts to time (the cores are shared out as threads); the best is compared")
    ap.add_argument("--compressed", action="store_true", help="also time cathodeml's compressed model")
    ap.add_argument("--compressed-chunk", type=int, default=None, help="atoms per chunk for the compressed model")
    ap.add_argument("--peer-steps", type=int, default=3, help="timed DeePMD-kit+ASE steps (when deepmd imports)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    model = water_model()
    base = water_frame()
    compressed = None
    if args.compressed:
        from cathodeml.model.compress import compress_model, min_neighbor_distance

        d = WATER / "data_0"
        coords = np.load(d / "set.000" / "coord.npy").reshape(-1, len(base[2]), 3)
        boxes = np.load(d / "set.000" / "box.npy").reshape(-1, 3, 3)
        compressed = compress_model(model, min_neighbor_distance([(coords, boxes, base[2])]))
    env = peer_env(args.peers.resolve()) if args.peers else None
    has_ase_peer = importlib.util.find_spec("deepmd") is not None
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        pth = convert_to_pth(model, tmp, env) if env or has_ase_peer else None
        pth_c = compress_pth(pth, tmp, env) if env else None
        for i, n in enumerate(args.sizes):
            pos, cell, types = replicate(*base, n)
            lammps_steps = args.lammps_steps[min(i, len(args.lammps_steps) - 1)]
            row = {"atoms": len(types), "cathodeml": time_cathodeml(model, pos, cell, types, args.steps)}
            if compressed is not None:
                row["cathodeml_compressed"] = time_cathodeml(compressed, pos, cell, types, args.steps,
                                                             args.compressed_chunk)
            if env:
                for key, model_file in (("lammps", pth), ("lammps_compressed", pth_c)):
                    runs = [time_lammps(model_file, pos, cell, types, lammps_steps, env, tmp, ranks)
                            for ranks in sorted(set(args.lammps_ranks))]
                    row[f"{key}_runs"] = runs
                    row[key] = max(runs, key=lambda r: r.get("atom_steps_per_s", 0.0))  # the peer at its best
            if has_ase_peer:
                try:
                    row["deepmd_ase"] = time_deepmd_ase(pth, pos, cell, types, args.peer_steps)
                except (RuntimeError, MemoryError) as exc:  # DeePMD-kit's python path tiles nloc × nall
                    row["deepmd_ase"] = {"error": str(exc).strip().splitlines()[-1][:200]}
            for peer in ("lammps", "lammps_compressed", "deepmd_ase"):
                if "energy_eV" in row.get(peer, {}):
                    row[f"energy_difference_vs_{peer}_eV"] = abs(row["cathodeml"]["energy_eV"] - row[peer]["energy_eV"])
            results.append(row)
            print(json.dumps(row), flush=True)
    cols = [("cathodeml", "cathodeml"), ("cathodeml_compressed", "cml compr."), ("lammps", "LAMMPS"),
            ("lammps_compressed", "LAMMPS compr."), ("deepmd_ase", "DeePMD+ASE")]
    cols = [(k, label) for k, label in cols if any("atom_steps_per_s" in r.get(k, {}) for r in results)]
    print(f"atom-steps/s ({os.cpu_count()} cores; LAMMPS: the best of {sorted(set(args.lammps_ranks))} MPI ranks); "
          "ratio = best cathodeml / LAMMPS compressed")
    print(f"{'atoms':>7} " + " ".join(f"{label:>14}" for _, label in cols) + f" {'ratio':>6}")
    for r in results:
        rate = {k: r.get(k, {}).get("atom_steps_per_s", float("nan")) for k, _ in cols}
        best = np.nanmax([rate.get("cathodeml", np.nan), rate.get("cathodeml_compressed", np.nan)])
        r["speedup_vs_lammps_compressed"] = best / rate.get("lammps_compressed", np.nan)
        print(f"{r['atoms']:>7} " + " ".join(f"{rate[k]:>14.0f}" for k, _ in cols)
              + f" {r['speedup_vs_lammps_compressed']:>6.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
