"""The LAMMPS route end to end: `cathodeml export-lammps` → `dp --pt convert-backend` → `lmp` (DeePMD-kit plugin).

Checks, in one run:
  1. single point: LAMMPS `pair_style deepmd` energy and forces on the exported model against cathodeml's own
     energy path on the same (restricted-frame) structure, as relative errors (target ≤ 1e-10 in float64);
     an orthorhombic cell and a sheared, rotated (triclinic) copy of it; and a collinear spin model
     through `pair_style deepspin` (atom_style spin, the spins S + d/η that export-lammps writes);
  2. the deck itself: a short NVT run on 1 and on 2 MPI ranks gives the same thermo lines;
  3. `cathodeml analyze` reads the dump the deck wrote.

Peers: the `dp` and `lmp` of a separate venv (benchmarks/requirements.txt: deepmd-kit[torch,lmp]==3.2.0 and
nvidia-cuda-runtime-cu12; on CPU machines LD_LIBRARY_PATH must hold nvidia/cuda_runtime/lib, set here).

    python benchmarks/lammps_route.py --peers /path/to/peers-venv [--model M --structure S --steps 20]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def peer_env(peers: Path) -> dict:
    env = dict(os.environ)
    libs = glob.glob(str(peers / "lib" / "python3*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    env["PATH"] = f"{peers / 'bin'}:{env['PATH']}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def run(cmd, cwd, env, log):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    (Path(cwd) / log).write_text(proc.stdout + proc.stderr)
    if proc.returncode:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}); see {Path(cwd) / log}:\n{proc.stderr[-2000:]}")
    return proc.stdout, time.perf_counter() - t0


SINGLE_POINT = """units metal
boundary p p p
atom_style atomic
atom_modify map array
read_data conf.data
pair_style deepmd model.pth
pair_coeff * * {names}
thermo_style custom step pe
thermo_modify format float %.17g
dump f all custom 1 forces.dump id fx fy fz
dump_modify f sort id format float %.17g
run 0
"""


def lammps_single_point(deck: Path, names: str, env, spin: bool = False) -> tuple[float, np.ndarray]:
    script = SINGLE_POINT.format(names=names)
    if spin:
        script = script.replace("atom_style atomic", "atom_style spin").replace("pair_style deepmd", "pair_style deepspin")
    (deck / "in.single").write_text(script)
    out, _ = run(["lmp", "-in", "in.single", "-log", "log.single"], deck, env, "single.out")
    lines = out.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.split()[:2] == ["Step", "PotEng"])
    energy = float(lines[i + 1].split()[1])
    rows = (deck / "forces.dump").read_text().split("ITEM: ATOMS id fx fy fz\n")[1].split("\n")
    forces = np.array([[float(v) for v in r.split()[1:]] for r in rows if r.strip()])
    return energy, forces


def cathodeml_single_point(model, structure: str, moments=None):
    """cathodeml's energy and forces on the structure as given, the forces turned into LAMMPS's frame
    (F @ R, R the rotation of cathodeml.io.lammps): so the data file's positions, and for spin models
    the direction of the spins, are checked too."""
    import ase

    from cathodeml.calculator import CathodemlCalculator
    from cathodeml.io.lammps import lammps_cell
    from cathodeml.io.structure import read_structure

    s = read_structure(structure)
    _, rotation = lammps_cell(s.cell)
    atoms = ase.Atoms(s.symbols, positions=s.positions, cell=s.cell, pbc=True)
    atoms.calc = CathodemlCalculator(model, moments=moments)
    return atoms.get_potential_energy(), atoms.get_forces() @ rotation


def spin_case(out: Path) -> tuple[Path, Path, np.ndarray]:
    """A random-weight collinear spin model (Ni, η 0.3 Å/μB, d 0.2 Å, virtual atoms without energy of
    their own, block-constant descriptor statistics as DeePMD-kit computes them) and a rattled
    2×1×1 NiO cell with antiparallel Ni moments: (model.h5, POSCAR, moments)."""
    import ase.build
    import ase.io
    import jax

    from cathodeml import spin
    from cathodeml.model.config import ModelConfig
    from cathodeml.model.potential import default_stats, init_params
    from cathodeml.model.store import Model, save_model

    # sel covers every neighbour within rcut (see export-lammps's sel warning for why that matters)
    cfg = ModelConfig(type_map=("Li", "Ni", "O", "Ni_spin"), sel=(8, 24, 24, 24), rcut=4.5, rcut_smth=1.0,
                      embedding_neurons=(8, 16), axis_neuron=4, fitting_neurons=(16, 16), atom_exclude_types=(3,))
    rng = np.random.default_rng(0)
    stats = default_stats(cfg)
    off = cfg.sel_offsets
    for a in range(cfg.ntypes):
        for b in range(cfg.ntypes):
            stats["davg"][a, off[b]:off[b + 1]] = rng.normal(scale=0.05, size=4)
            stats["dstd"][a, off[b]:off[b + 1]] = 0.5 + rng.random(4)
    stats["type_bias"] = np.array([-2.0, -5.0, -4.0, 0.0])
    model = Model(config=cfg, params=init_params(cfg, jax.random.PRNGKey(3)), stats=stats,
                  spin=spin.SpinSettings.create(["Ni"], 0.3, 0.2).to_dict())
    save_model(out / "spin_model.h5", model)
    atoms = ase.build.bulk("NiO", "rocksalt", a=4.17, cubic=True).repeat((2, 1, 1))
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    is_ni = np.array(atoms.get_chemical_symbols()) == "Ni"
    moments = np.zeros(len(atoms))
    moments[is_ni] = np.resize([1.7, -1.6, 1.8, -1.7], is_ni.sum())
    ase.io.write(out / "POSCAR_NiO", atoms, format="vasp", direct=True)
    np.savetxt(out / "NiO_moments.txt", moments)
    return out / "spin_model.h5", out / "POSCAR_NiO", moments


def thermo_table(log: Path) -> np.ndarray:
    lines = log.read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.split()[:1] == ["Step"])
    rows = []
    for ln in lines[i + 1:]:
        if ln.startswith("Loop time"):
            break
        rows.append([float(v) for v in ln.split()])
    return np.array(rows)


def sheared(structure: str, out: Path) -> Path:
    """The structure under a shear strain and a rigid rotation: a triclinic cell that is not in LAMMPS's
    restricted form, so the export must rotate positions (and LAMMPS's forces come back rotated)."""
    import ase.io
    from scipy.spatial.transform import Rotation

    atoms = ase.io.read(structure)
    strain = np.array([[1.0, 0.04, -0.03], [0.0, 1.0, 0.05], [0.0, 0.0, 1.0]])
    rot = Rotation.from_euler("xyz", [17.0, -8.0, 31.0], degrees=True).as_matrix()
    atoms.set_cell(atoms.cell[:] @ strain @ rot, scale_atoms=True)
    ase.io.write(out, atoms, format="vasp", direct=True)
    return out


def export(model, structure, deck, steps, log, extra=()):
    run([sys.executable, "-m", "cathodeml", "export-lammps", str(model), str(structure), "-o", str(deck), "-T", "600",
         "--steps", str(steps), "--dt", "2", "--stride", "1", "--overwrite", "--quiet", *extra], ROOT, os.environ, log)


def compare(e_lmp, f_lmp, e_cml, f_cml) -> dict:
    return {"energy_lammps_eV": e_lmp, "energy_cathodeml_eV": e_cml, "energy_rel_err": abs(e_lmp - e_cml) / abs(e_cml),
            "force_max_abs_err_eV_A": float(np.max(np.abs(f_lmp - f_cml))),
            "force_rel_err": float(np.max(np.abs(f_lmp - f_cml)) / np.max(np.abs(f_cml)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers", type=Path, required=True, help="venv with deepmd-kit[torch,lmp]")
    ap.add_argument("--model", type=Path, default=ROOT / "examples/lgps/model.h5")
    ap.add_argument("--structure", default=str(ROOT / "examples/lgps/POSCAR_Li160Ge16P32S192"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("results/lammps_route"))
    args = ap.parse_args()
    env = peer_env(args.peers.resolve())
    if shutil.which("lmp", path=env["PATH"]) is None:
        sys.exit(f"no lmp in {args.peers}/bin: pip install 'deepmd-kit[torch,lmp]==3.2.0' nvidia-cuda-runtime-cu12")
    from cathodeml import load_model

    type_map = list(load_model(args.model).type_map)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"model": str(args.model), "structure": args.structure, "single_point": {}}
    structures = {"orthorhombic": args.structure, "triclinic": str(sheared(args.structure, args.out / "POSCAR_sheared"))}
    for label, structure in structures.items():
        deck = args.out / f"deck_{label}"
        export(args.model, structure, deck, args.steps, args.out / f"export_{label}.log")
        run(["dp", "--pt", "convert-backend", "model.dp", "model.pth"], deck, env, "convert.log")
        e_lmp, f_lmp = lammps_single_point(deck, " ".join(type_map), env)
        e_cml, f_cml = cathodeml_single_point(str(args.model), structure)
        report["single_point"][label] = compare(e_lmp, f_lmp, e_cml, f_cml)
    spin_model, spin_structure, moments = spin_case(args.out)
    deck = args.out / "deck_spin"
    export(spin_model, str(spin_structure), deck, args.steps, args.out / "export_spin.log",
           ["--magmom", str(args.out / "NiO_moments.txt")])
    run(["dp", "--pt", "convert-backend", "model.dp", "model.pth"], deck, env, "convert.log")
    e_lmp, f_lmp = lammps_single_point(deck, "Li Ni O", env, spin=True)
    e_cml, f_cml = cathodeml_single_point(str(spin_model), str(spin_structure), moments)
    report["single_point"]["spin (pair_style deepspin)"] = compare(e_lmp, f_lmp, e_cml, f_cml)
    deck = args.out / "deck_orthorhombic"
    _, t1 = run(["lmp", "-in", "in.lammps", "-log", "log.np1"], deck, env, "np1.out")
    shutil.copy(deck / "traj.lammpstrj", deck / "traj.np1.lammpstrj")
    _, t2 = run(["mpirun", "-np", "2", "lmp", "-in", "in.lammps", "-log", "log.np2"], deck, env, "np2.out")
    a, b = thermo_table(deck / "log.np1"), thermo_table(deck / "log.np2")
    cols = ["Step", "Time", "Temp", "PotEng", "KinEng", "TotEng", "Econserve"]
    report["mpi"] = {"steps": args.steps, "wall_s_np1": t1, "wall_s_np2": t2,
                     "max_abs_diff_np1_vs_np2": {c: float(np.max(np.abs(a[:, k] - b[:, k]))) for k, c in enumerate(cols)},
                     "econserve_drift_eV": float(a[-1, 6] - a[0, 6])}
    out, _ = run([sys.executable, "-m", "cathodeml", "analyze", str(deck / "traj.lammpstrj"), "--species", "Li", "--skip", "0", "--fit-window", "0.1T:0.5T", "--blocks", "1",
                  "-o", str(args.out / "analysis"), "--json"], ROOT, os.environ, args.out / "analyze.log")
    result = json.loads(out)
    report["analyze"] = {"frames": result["runs"][0].get("n_frames") if "runs" in result else None,
                         "keys": sorted(result)[:10]}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
