"""Write a ready LAMMPS deck (DeePMD-kit plugin) for the NVT run `cathodeml md` would do: the model as .dp,
the data file, the input, a SLURM script; `cathodeml analyze` reads the dump it produces."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet


def export_lammps(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="model.h5 from `cathodeml train` (or a DeePMD-kit .dp file)."),
    structure: str = typer.Argument(..., help="POSCAR/CONTCAR, cif, extxyz, or a dataset frame data.h5:SYSTEM:FRAME."),
    output: Path = typer.Option(Path("lammps"), "-o", "--output", help="Folder to write the deck into."),
    temperature: float = typer.Option(300.0, "--temperature", "-T", help="NVT target temperature, K."),
    steps: int = typer.Option(1000, "--steps", help="Number of steps."),
    dt: float = typer.Option(1.0, "--dt", help="Time step, fs."),
    tdamp: float = typer.Option(100.0, "--tdamp", help="Thermostat time constant τ, fs."),
    chain: int = typer.Option(3, "--chain", help="Nosé–Hoover chain length."),
    stride: int = typer.Option(100, "--stride", help="Dump a frame and a thermo line every this many steps."),
    supercell: str = typer.Option(None, "--supercell", help="Replicate the structure, e.g. 4x4x2."),
    seed: int = typer.Option(1, "--seed", help="Seed of the start velocities (LAMMPS needs ≥ 1)."),
    magmom: str = typer.Option(None, "--magmom", help="Moments for spin models: Ni=1.0,Mn=3.0 or a per-atom file (μB)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT folder."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Write a LAMMPS deck for NVT with the model: OUTPUT/{model.dp, conf.data, in.lammps, job.slurm}.

    Run it with `dp --pt convert-backend model.dp model.pth && lmp -in in.lammps` (job.slurm does both);
    `cathodeml analyze OUTPUT/traj.lammpstrj` reads the result."""
    from cathodeml import spin
    from cathodeml.commands.md import element_masses, structure_types
    from cathodeml.errors import CathodemlError
    from cathodeml.io import lammps
    from cathodeml.io.atomic import atomic_directory
    from cathodeml.io.structure import parse_magmom, parse_supercell, read_structure, supercell as replicate
    from cathodeml.model.store import export_deepmd, load_model

    for name, value in (("--steps", steps), ("--stride", stride), ("--chain", chain)):
        if value < 1:
            raise CathodemlError(f"{name} must be ≥ 1")
    for name, value in (("--dt", dt), ("--tdamp", tdamp), ("--temperature", temperature)):
        if not value > 0:
            raise CathodemlError(f"{name} must be > 0")
    settings = lammps.DeckSettings(temperature_K=temperature, n_steps=steps, dt_fs=dt, tdamp_fs=tdamp,
                                   chain_length=chain, stride=stride, seed=seed,
                                   restart_every=max(stride, 10000 // stride * stride))
    model = load_model(model_path)
    struct = replicate(read_structure(structure), parse_supercell(supercell))
    if magmom is not None:
        struct = struct.with_moments(parse_magmom(magmom, struct.symbols))
    real_map = spin.model_real_type_map(model.type_map, model.spin)
    types = structure_types(struct.symbols, real_map, model_path)
    spins = None
    if model.spin:
        spins = lammps_spins(model, types, struct.moments)
    masses = [float(element_masses([name])[0]) for name in real_map]
    overflow = None if spins is None else sel_overflow(model, struct, types)
    # deepspin reaches a virtual atom through its host: the skin covers the longest offset |η·S + d|
    skin = 2.0 if spins is None else 2.0 + float(np.max(np.abs(spins * lammps_spin_scale(model, types))))
    script = lammps.input_script(settings, real_map, spin=model.spin is not None, skin=skin)

    with atomic_directory(output, overwrite=overwrite) as deck:
        export_deepmd(deck / "model.dp", model)
        rotation = lammps.write_data(deck / "conf.data", struct.positions, struct.cell, types, real_map, masses, spins)
        (deck / "in.lammps").write_text(script)
        (deck / "job.slurm").write_text(lammps.slurm_script(spin=model.spin is not None))
        lammps.write_dump_metadata(deck / "traj.lammpstrj", temperature_K=temperature, type_map=real_map, dt_fs=dt,
                                   model=str(model_path))
    summary = {"model": str(model_path), "structure": structure, "output": str(output), "n_atoms": len(types),
               "type_map": real_map, "spin": model.spin is not None, "temperature_K": temperature, "steps": steps,
               "dt_fs": dt, "files": ["model.dp", "conf.data", "in.lammps", "job.slurm", "traj.lammpstrj.json"],
               "rotated": not np.allclose(rotation, np.eye(3)), "sel_overflow": overflow,
               "run": f"cd {output} && dp --pt convert-backend model.dp model.pth && lmp -in in.lammps"}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        table = Table("deck", "atoms", "types", "NVT", "run it")
        table.add_row(str(output), str(len(types)), " ".join(real_map),
                      f"{temperature:g} K, {steps} × {dt:g} fs, τ {tdamp:g} fs, chain {chain}", summary["run"])
        Console().print(table)
        if overflow:
            Console(stderr=True).print(
                f"warning: {overflow}; DeePMD-kit then keeps fewer neighbours than cathodeml (it picks virtual "
                "neighbours among the partners of the sel nearest real ones, and counts placeholder twins against "
                "Σsel), so LAMMPS's energies differ slightly; give the model a larger sel for exact agreement")
        if summary["rotated"]:
            Console(stderr=True).print("note: LAMMPS holds the cell in its restricted (lower-triangular) form, so "
                                       "positions and forces in its files are rotated relative to the structure")


def lammps_spin_scale(model, types: np.ndarray) -> np.ndarray:
    """DeePMD-kit's virtual_scale (η, Å/μB) per atom, 0 for atoms without a virtual partner."""
    from cathodeml import spin

    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    out = np.zeros(len(types))
    out[sites.host_index] = sites.eta
    return out


def lammps_spins(model, types: np.ndarray, moments) -> np.ndarray:
    """Per-atom spin (μB along z) for `atom_style spin`: DeePMD-kit places a virtual atom at
    R + virtual_scale·S, cathodeml's collinear rule at z + η·S + d, so the file holds S + d/η."""
    from cathodeml import spin
    from cathodeml.errors import CathodemlError

    settings = spin.SpinSettings.from_dict(model.spin)
    if settings.mode != "collinear":
        raise CathodemlError("export-lammps writes collinear spin models only (vector mode: give the moment vectors "
                             "to LAMMPS's atom_style spin yourself)")
    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    m = spin.host_moments(sites, moments)
    out = np.zeros(len(types))
    out[sites.host_index] = m + sites.d / sites.eta
    return out


def sel_overflow(model, struct, types) -> str | None:
    """Where some atom of the structure (virtual atoms included) has more neighbours of a type within
    rcut than the model's sel, a one-line description; else None."""
    from cathodeml import spin
    from cathodeml.model import build_neighbor_list, count_within_cutoff

    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    full = sites.place(struct.positions, spin.host_moments(sites, struct.moments))
    full_types = sites.all_types(types)
    config = model.config
    nbr = build_neighbor_list(full, struct.cell, full_types, config.rcut, config.ntypes)
    counts = count_within_cutoff(nbr, full, struct.cell, config.rcut)
    over = counts.max(axis=0) > np.asarray(config.sel)
    problems = [f"{config.type_map[t]}: up to {counts[:, t].max()} neighbours within rcut, sel {config.sel[t]}"
                for t in np.flatnonzero(over)]
    # DeePMD-kit gives every non-magnetic atom a placeholder twin and keeps only the Σsel nearest
    # atoms of any type (twins included) before splitting them by type
    magnetic = {spin.host_element(t) for t in config.type_map if spin.is_virtual_type(t)}
    twins = [t for t, name in enumerate(config.type_map) if not spin.is_virtual_type(name) and name not in magnetic]
    total = counts.sum(axis=1) + counts[:, twins].sum(axis=1)
    if total.max() > config.nnei:
        problems.append(f"up to {total.max()} atoms within rcut counting DeePMD-kit's placeholder twins of the "
                        f"non-magnetic atoms, Σsel {config.nnei}")
    return ", ".join(problems) or None
