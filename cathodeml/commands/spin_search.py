"""Find the lowest-energy spin states of a structure with a spin model: the assignment of the model's catalogue states (learned by `train` from the moments it saw, e.g. Fe ±4.2 μB) to the magnetic atoms.

Small problems (≤ 2^14 assignments, e.g. 12 Fe) are enumerated exactly; larger ones are annealed with vmapped Metropolis replicas of local single flips (or, with --keep-counts, exchanges that keep the number of atoms in each state, like a fixed NUPDOWN), one replica started from the spin-force (−∂E/∂S) guess. Writes the per-atom moments that `md --magmom` and `test` read (one value per line, through a temporary file) and prints the best distinct levels with their degeneracy; deterministic for a --seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def spin_search(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="Spin model.h5 from `cathodeml train` on augment-spin data."),
    structure: str = typer.Argument(..., help="POSCAR/CONTCAR, cif, extxyz, or a dataset frame data.h5:SYSTEM:FRAME."),
    output: Path = typer.Option(Path("moments.txt"), "-o", "--output", help="Per-atom moments of the best assignment (μB), for md --magmom."),
    states: list[str] = typer.Option(None, "--states", help="Spin states of an element in μB, e.g. Fe=-4.2,4.2 (repeatable); default: the model's catalogue."),
    magmom: str = typer.Option(None, "--magmom", help="Start (and, with --keep-counts, the counts to keep): El=value pairs or a per-atom file; default: the structure's own moments, else the spin-force guess."),
    supercell: str = typer.Option(None, "--supercell", help="Replicate the structure first, e.g. 2x2x1."),
    keep_counts: bool = typer.Option(False, "--keep-counts", help="Keep how many atoms of each element are in each state (moves exchange states)."),
    method: str = typer.Option("auto", "--method", help="auto (exhaustive when ≤ 2^14 assignments, else annealing), exhaustive or annealing."),
    seed: int = typer.Option(0, "--seed", help="Seed of the annealing starts and moves."),
    replicas: int = typer.Option(8, "--replicas", help="Annealing chains run side by side (vmapped)."),
    sweeps: int = typer.Option(200, "--sweeps", help="Annealing moves per magnetic atom and chain."),
    best: int = typer.Option(5, "-n", "--best", help="How many distinct energy levels to report."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Lowest-energy assignment of catalogue spin states to the magnetic atoms; writes the moments file md --magmom reads."""
    from cathodeml import spin
    from cathodeml import spin_search as S
    from cathodeml.commands.md import structure_types
    from cathodeml.io.atomic import atomic_output
    from cathodeml.io.structure import parse_magmom, parse_supercell, read_structure, supercell as replicate
    from cathodeml.model.store import load_model

    if replicas < 1 or sweeps < 1 or best < 1:
        raise CathodemlError("--replicas, --sweeps and --best must be at least 1")
    model = load_model(model_path)
    struct = replicate(read_structure(structure), parse_supercell(supercell))
    if magmom is not None:
        struct = struct.with_moments(parse_magmom(magmom, struct.symbols))
    real_map = spin.model_real_type_map(model.type_map, model.spin)
    types = structure_types(struct.symbols, real_map, model_path)
    console = Console(stderr=True, quiet=quiet or as_json)
    with console.status("building the search …"):
        problem = S.build_problem(model, struct.positions, struct.cell, types, S.parse_states(states or []))
    start = None
    if struct.moments is not None:
        start = problem.states_of(spin.host_moments(problem.sites, struct.moments))
    elif keep_counts:
        raise CathodemlError("--keep-counts needs a start whose counts to keep: give --magmom or a structure with moments")
    what = ("exhaustive" if method == "auto" and problem.n_assignments <= 1 << 14 else method)
    with console.status(f"searching {problem.n_assignments:.3g} assignments of {problem.n_sites} magnetic atoms ({what}) …"):
        result = S.search(problem, initial_states=start, seed=seed, keep_counts=keep_counts, replicas=replicas,
                          sweeps=sweeps, n_best=best, method=method)

    base = struct.moments if struct.moments is not None and np.ndim(struct.moments) == 1 else None
    per_atom = S.per_atom_moments(problem, result.moments, base)
    header = (f"cathodeml spin-search: E = {result.energy:.6f} eV ({result.method}) with {model_path} on {structure}\n"
              f"one moment per atom (μB), in the structure's atom order")
    if output.parent and not output.parent.exists():
        raise CathodemlError(f"output directory {output.parent} does not exist")
    with atomic_output(output) as tmp:
        np.savetxt(tmp, per_atom, fmt="%.6f", header=header)

    n_atoms = len(types)
    summary = {
        "model": str(model_path), "structure": structure, "output": str(output), "method": result.method,
        "n_magnetic": problem.n_sites, "n_assignments": problem.n_assignments, "keep_counts": keep_counts,
        "seed": seed, "energy_eV": result.energy, "energy_per_atom_eV": result.energy / n_atoms,
        "initial_energy_eV": result.initial_energy, "evaluations": result.evaluations, "seconds": result.seconds,
        "local_minimum": result.local_minimum, "max_spin_force_eV_per_muB": float(np.max(np.abs(result.spin_forces))),
        "states": {el: [float(v) for v in problem.values[problem.element_of == i][0, :problem.n_states[
            problem.element_of == i][0]]] for i, el in enumerate(problem.elements) if np.any(problem.element_of == i)},
        "levels": [{"energy_eV": lv["energy_eV"], "above_best_meV_per_atom": (lv["energy_eV"] - result.energy) / n_atoms * 1e3,
                    "degeneracy": lv["degeneracy"], "host_moments": problem.moments(lv["states"]).tolist()}
                   for lv in result.ranked],
        "host_index": problem.sites.host_index.tolist(),
        "warnings": S.composition_warnings(problem, result.states),
    }
    for line in summary["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _render(Console(), summary)


def _render(console: Console, summary: dict) -> None:
    states = "; ".join(f"{el}: {', '.join(f'{v:+.2f}' for v in vals)} μB" for el, vals in summary["states"].items())
    table = Table("level", "E (eV)", "ΔE (meV/atom)", "degeneracy", "up / down",
                  title=f"spin-search: {summary['n_magnetic']} magnetic atoms, {summary['method']}, states {states}")
    for i, lv in enumerate(summary["levels"]):
        m = np.asarray(lv["host_moments"])
        table.add_row(str(i), f"{lv['energy_eV']:.6f}", f"{lv['above_best_meV_per_atom']:.3f}", str(lv["degeneracy"]),
                      f"{int(np.sum(m > 0))} / {int(np.sum(m < 0))}")
    console.print(table)
    local = {True: ", no single flip lowers it", False: ", a single flip still lowers it", None: ""}[summary["local_minimum"]]
    console.print(f"{summary['evaluations']} energies in {summary['seconds']:.1f} s{local}; start "
                  f"{summary['initial_energy_eV']:.6f} eV; max |∂E/∂S| {summary['max_spin_force_eV_per_muB']:.3g} eV/μB; "
                  f"wrote {summary['output']}", highlight=False)
