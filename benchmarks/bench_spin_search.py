"""Spin ground-state search time against the number of magnetic atoms (12, 96, 768 Fe in hematite).

The structure is the afm1 hematite cell (the DFT ground state of automag's 91 orderings) repeated
1×1×1, 2×2×2 and 4×4×4; the model is the spin model of tests/data/spin/hematite_orderings (trained
on 73 orderings by examples/hematite/Makefile).  Each search keeps the 50/50 up/down counts
(`keep_counts`) and starts from a random permutation of the tiled afm1 states, so the tiled afm1
energy is a reference the search should reach (it is the exact keep-counts minimum of the 12-Fe
cell; for the supercells it is the best known assignment, not a proof).

The peer is what a script around any ML calculator does: a full energy evaluation per proposed
flip.  cathodeml's annealing updates only the energies of the atoms within rcut of the moved
virtual atom; the ratio "full E / move" is the speed-up of that, measured in the same run.

    python benchmarks/bench_spin_search.py                         # 1, 2, 4 → 12, 96, 768 Fe
    python benchmarks/bench_spin_search.py --reps 1,2 --sweeps 20
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cathodeml import spin
from cathodeml import spin_search as S
from cathodeml.io.automag import read_automag
from cathodeml.model import load_model

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "spin" / "hematite_orderings"


def tiled(system, frame: int, n: int):
    """(positions, cell, types, moments) of one frame repeated n×n×n."""
    shifts = np.array(np.meshgrid(*[np.arange(n)] * 3, indexing="ij")).reshape(3, -1).T @ system.cells[frame]
    positions = (system.coords[frame][None] + shifts[:, None]).reshape(-1, 3)
    tile = shifts.shape[0]
    return (positions, system.cells[frame] * n, np.tile(system.atom_types, tile),
            np.tile(system.frame_data["magmom"][frame], tile))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reps", default="1,2,4", help="cell repeats n (n×n×n), comma separated")
    p.add_argument("--sweeps", type=int, default=20, help="annealing moves per Fe and chain")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    model = load_model(DATA / "model_spin.h5")
    system = read_automag(DATA / "Fe12O18_singlepoint.txt", type_map=["Fe", "O"]).dataset.systems[0]
    afm1 = list(system.frame_data["ordering"]).index("afm1")
    rows = []
    for n in (int(x) for x in args.reps.split(",")):
        positions, cell, types, moments = tiled(system, afm1, n)
        t0 = time.perf_counter()
        problem = S.build_problem(model, positions, cell, types)
        t_build = time.perf_counter() - t0
        reference = problem.states_of(spin.host_moments(problem.sites, moments))
        e_ref = S.assignment_energies(problem, problem.moments(reference)[None])[0]
        t0 = time.perf_counter()
        S.assignment_energies(problem, problem.moments(reference)[None])
        t_full = time.perf_counter() - t0
        start = np.random.default_rng(args.seed).permutation(reference)
        timings = []
        for _ in range(2):  # the first includes compilation
            result = S.search(problem, initial_states=start, keep_counts=True, seed=args.seed,
                              replicas=args.replicas, sweeps=args.sweeps, gradient_start=False, n_best=1)
            timings.append(result.seconds)
        n_atoms = len(types)
        per_move = timings[1] / result.evaluations
        rows.append({"Fe": problem.n_sites, "atoms": n_atoms, "method": result.method, "build_s": t_build,
                     "first_s": timings[0], "warm_s": timings[1], "energies": result.evaluations,
                     "move_ms": per_move * 1e3, "full_ms": t_full * 1e3, "ratio": t_full / per_move,
                     "above_meV": (result.energy - e_ref) / n_atoms * 1e3,
                     "start_meV": (result.initial_energy - e_ref) / n_atoms * 1e3})
        r = rows[-1]
        print(f"{r['Fe']:4d} Fe {r['atoms']:5d} atoms {r['method']:10s} build {r['build_s']:.2f} s, search "
              f"{r['first_s']:.1f} s first / {r['warm_s']:.1f} s warm, {r['energies']} energies "
              f"({r['move_ms']:.3f} ms each; full E {r['full_ms']:.1f} ms, {r['ratio']:.0f}x), "
              f"E − E(afm1 tiled): start {r['start_meV']:+.2f}, found {r['above_meV']:+.3f} meV/atom", flush=True)
    print("\n| Fe | atoms | method | search first / warm (s) | energies evaluated | per energy (ms) | full E (ms) "
          "| full ÷ per energy | start − E(afm1) (meV/atom) | found − E(afm1) (meV/atom) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['Fe']} | {r['atoms']} | {r['method']} | {r['first_s']:.1f} / {r['warm_s']:.1f} | {r['energies']} "
              f"| {r['move_ms']:.3f} | {r['full_ms']:.1f} | {r['ratio']:.0f} | {r['start_meV']:+.2f} "
              f"| {r['above_meV']:+.3f} |")


if __name__ == "__main__":
    main()
