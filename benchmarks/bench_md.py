"""MD throughput of `cathodeml md` against DeePMD-kit driving the same model through ASE.

The model has DeePMD-kit's reference water architecture (examples/water input_torch.json: se_e2_a,
rcut 6 Å, rcut_smth 0.5, sel 46/92, embedding 25-50-100, axis 16, fitting 240-240-240,
type_one_side, float64) with random weights and descriptor statistics from the real water data:
a trained water model costs exactly the same per step, and the water model had not been trained
when this was written.  cathodeml exports it as a .dp file and DeePMD-kit converts that to .pth
itself (`dp --pt convert-backend`), and the two energies of the starting frame are compared, so
both sides time the same model.  Systems: a real 192-atom water frame replicated 2×2×2 (1,536
atoms) and 4×4×4 (12,288 atoms).  Both run Nosé–Hoover chain NVT at 300 K with dt = 0.25 fs (the
cost of a step does not depend on dt; ns/day is quoted for the production 1 fs step); the
peer is ASE's NoseHooverChainNVT with DeePMD-kit's ASE calculator (PyTorch backend).  LAMMPS with
the DeePMD-kit plugin is not installed here; the issue quotes 452 atom-steps/s for 1,536 atoms on
this machine, which is printed alongside for reference.

    python benchmarks/bench_md.py [--sizes 2 4] [--steps 40] [--peer-steps 3] [--json out.json]
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
os.environ.setdefault("DP_INTRA_OP_PARALLELISM_THREADS", str(os.cpu_count()))
os.environ.setdefault("DP_INTER_OP_PARALLELISM_THREADS", "1")
WATER = Path(os.environ.get("CATHODEML_WATER", "/work/shared/data/deepmd/water"))
LAMMPS_ISSUE_ATOM_STEPS_PER_S = 452.0  # measured earlier: LAMMPS 2025 + DeePMD-kit 3.2 (uncompressed), 1,536 atoms, this machine
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


def time_cathodeml(model, pos, cell, types, steps):
    """(atom-steps/s, ns/day, compile+first-chunk seconds, energy of the start frame eV)."""
    import jax

    from cathodeml.md import integrators as integ
    from cathodeml.md.potentials import deeppot
    from cathodeml.md.runner import RunSettings, Simulation

    pot = deeppot(model, types)
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


def convert_to_pth(model, workdir: Path) -> Path:
    from cathodeml.model import export_deepmd

    dp_path, pth_path = workdir / "water.dp", workdir / "water.pth"
    export_deepmd(dp_path, model)
    subprocess.run(["dp", "--pt", "convert-backend", str(dp_path), str(pth_path)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pth_path


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
    ap.add_argument("--peer-steps", type=int, default=3, help="timed DeePMD-kit+ASE steps")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    model = water_model()
    base = water_frame()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        pth = None if args.no_peer else convert_to_pth(model, Path(tmp))
        for n in args.sizes:
            pos, cell, types = replicate(*base, n)
            row = {"atoms": len(types), "cathodeml": time_cathodeml(model, pos, cell, types, args.steps)}
            if pth is not None:
                try:
                    row["deepmd_ase"] = time_deepmd_ase(pth, pos, cell, types, args.peer_steps)
                except (RuntimeError, MemoryError) as exc:  # DeePMD-kit's python path tiles nloc × nall
                    row["deepmd_ase"] = {"error": str(exc).strip().splitlines()[-1][:200]}
                if "energy_eV" in row["deepmd_ase"]:
                    row["energy_difference_eV"] = abs(row["cathodeml"]["energy_eV"] - row["deepmd_ase"]["energy_eV"])
                    row["speedup_vs_deepmd_ase"] = (row["cathodeml"]["atom_steps_per_s"]
                                                    / row["deepmd_ase"]["atom_steps_per_s"])
            row["speedup_vs_lammps_issue_figure"] = row["cathodeml"]["atom_steps_per_s"] / LAMMPS_ISSUE_ATOM_STEPS_PER_S
            results.append(row)
            print(json.dumps(row), flush=True)
    print(f"{'atoms':>7} {'cathodeml atom-steps/s':>23} {'ns/day@1fs':>10} {'DeePMD-kit+ASE':>15} {'ratio':>6} {'vs LAMMPS(issue)':>17}")
    for r in results:
        peer = r.get("deepmd_ase", {})
        print(f"{r['atoms']:>7} {r['cathodeml']['atom_steps_per_s']:>23.0f} {r['cathodeml']['ns_per_day_at_1fs']:>10.4f} "
              f"{peer.get('atom_steps_per_s', float('nan')):>15.0f} {r.get('speedup_vs_deepmd_ase', float('nan')):>6.2f} "
              f"{r['speedup_vs_lammps_issue_figure']:>17.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
