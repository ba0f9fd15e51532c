"""Run NVT (Nosé–Hoover chain) or NVE molecular dynamics with a trained model; writes an H5MD trajectory."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError, TypeMapError
from cathodeml.units import FS_PER_NS, SECONDS_PER_DAY


def md(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="model.h5 from `cathodeml train` (or a DeePMD-kit .dp file)."),
    structure: str = typer.Argument(..., help="POSCAR/CONTCAR, cif, extxyz, or a dataset frame data.h5:SYSTEM:FRAME."),
    output: Path = typer.Option(Path("traj.h5"), "-o", "--output", help="H5MD trajectory to write."),
    temperature: float = typer.Option(300.0, "--temperature", "-T", help="Target (NVT) or initial (NVE) temperature, K."),
    steps: int = typer.Option(1000, "--steps", help="Total number of steps (with --restart: the new total)."),
    dt: float = typer.Option(1.0, "--dt", help="Time step, fs."),
    tdamp: float = typer.Option(100.0, "--tdamp", help="Thermostat time constant τ, fs."),
    ensemble: str = typer.Option("nvt", "--ensemble", help="nvt (Nosé–Hoover chain) or nve (velocity Verlet)."),
    chain: int = typer.Option(3, "--chain", help="Nosé–Hoover chain length."),
    stride: int = typer.Option(100, "--stride", help="Write a frame every this many steps."),
    supercell: str = typer.Option(None, "--supercell", help="Replicate the structure, e.g. 4x4x2."),
    minimize: bool = typer.Option(False, "--minimize", help="FIRE-relax the positions before the run."),
    fmax: float = typer.Option(0.05, "--fmax", help="Force tolerance of --minimize, eV/Å."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Maxwell–Boltzmann start velocities."),
    restart: bool = typer.Option(False, "--restart", help="Continue OUTPUT from its checkpoint OUTPUT.ckpt."),
    magmom: str = typer.Option(None, "--magmom", help="Moments for spin models: Ni=1.0,Mn=3.0 or a per-atom file (μB)."),
    spin_search: str = typer.Option(None, "--spin-search", help="Spin models: re-optimise the spin states every N steps (a multiple of --stride), e.g. every=100 or every=100,keep-counts,sweeps=20; changes go to OUTPUT.spin.log and the moments into the trajectory."),
    states: list[str] = typer.Option(None, "--states", help="With --spin-search: spin states of an element in μB, e.g. Fe=-4.2,4.2 (default: the model's catalogue)."),
    models: list[Path] = typer.Option(None, "--models", help="Further models of an ensemble with MODEL (repeat the option): each frame's model deviation goes to OUTPUT.model_devi.out (DeePMD-kit's columns); MODEL drives the run."),
    trust_hi: float = typer.Option(None, "--trust-hi", help="With --models: flag frames whose max force deviation exceeds this, eV/Å."),
    trust_stop: bool = typer.Option(False, "--trust-stop", help="With --trust-hi: stop after the first flagged frame (the frames so far stay valid)."),
    velocities: bool = typer.Option(False, "--velocities", help="Also store velocities in the trajectory."),
    checkpoint_every: int = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints (default ≈10,000)."),
    skin: float = typer.Option(2.0, "--skin", help="Neighbour-list skin, Å."),
    chunk: int = typer.Option(None, "--chunk", min=0, help="Atoms per chunk of the energy evaluation: memory stays that of one chunk whatever the cell (default on CPU 512, or 1024 for a compressed model; 16384 on GPU; 0: the whole cell at once)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUTPUT instead of refusing."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Run NVT (Nosé–Hoover chain) or NVE molecular dynamics with a trained model; writes an H5MD trajectory."""
    from cathodeml.io.structure import parse_magmom, parse_supercell, read_structure, supercell as replicate
    from cathodeml.md.minimize import FireSettings, minimize as fire
    from cathodeml import spin
    from cathodeml.md.potentials import deeppot
    from cathodeml.md.runner import RunSettings
    from cathodeml.signals import stop_on_signals
    from cathodeml.md.session import MDSystem, checkpoint_path, log_path, run_md

    console = Console(quiet=quiet or as_json)
    every = checkpoint_every if checkpoint_every is not None else max(stride, 10000 // max(stride, 1) * stride)
    settings = RunSettings(dt_fs=dt, n_steps=steps, stride=stride, ensemble=ensemble.lower(), temperature_K=temperature,
                           tdamp_fs=tdamp, chain_length=chain, skin=skin, checkpoint_every=every)
    settings.validate()

    model = _load_model(model_path)
    struct = replicate(read_structure(structure), parse_supercell(supercell))
    if magmom is not None:
        struct = struct.with_moments(parse_magmom(magmom, struct.symbols))
    real_map = spin.model_real_type_map(model.type_map, model.spin)
    types = structure_types(struct.symbols, real_map, model_path)
    schedule_settings = None
    if spin_search is not None:
        from cathodeml.md.respin import SpinSearchSettings

        schedule_settings = SpinSearchSettings.parse(spin_search)
        if schedule_settings.every % stride:
            raise CathodemlError(f"--spin-search every={schedule_settings.every} must be a multiple of --stride ({stride})")
        if not model.spin:
            raise CathodemlError(f"--spin-search needs a spin model; {model_path} has no virtual spin atoms")
    elif states:
        raise CathodemlError("--states is read by --spin-search only; add --spin-search every=N")
    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    if sites is not None and struct.moments is None and schedule_settings is not None:
        struct = struct.with_moments(_catalogue_start(model, types, sites, states))
    potential = deeppot(model, types, struct.moments, chunk=chunk)
    host_moments = None if sites is None else spin.host_moments(sites, struct.moments)
    schedule = None
    if schedule_settings is not None:
        from cathodeml.md.respin import SpinSearchSchedule
        from cathodeml.spin_search import parse_states

        schedule = SpinSearchSchedule(model, potential, types, struct.cell, schedule_settings, seed=seed,
                                      catalogue=parse_states(states or []))
    deviation = None
    if models:
        from cathodeml.ensemble import Ensemble, MDDeviation

        ensemble_models = Ensemble.of([model] + [_load_model(p) for p in models], [str(model_path)] + [str(p) for p in models])
        deviation = MDDeviation(ensemble_models, potential, struct.cell, sites, trust_hi, stop=trust_stop)
    elif trust_hi is not None or trust_stop:
        raise CathodemlError("--trust-hi and --trust-stop read the model deviation of an ensemble; add --models m2.h5 ...")
    if trust_stop and trust_hi is None:
        raise CathodemlError("--trust-stop needs a threshold: add --trust-hi (eV/Å), e.g. --trust-hi 0.25")
    fingerprint = {"model_sha256": _sha256(model_path), "structure": structure, "supercell": list(parse_supercell(supercell))}
    if models:
        fingerprint["ensemble_sha256"] = [_sha256(p) for p in models]
    if schedule_settings is not None:
        fingerprint["spin_search"] = {**schedule_settings.to_dict(), "states": sorted(states or [])}
    system = MDSystem(positions=struct.positions, cell=struct.cell, masses=element_masses(struct.symbols), species=types,
                      type_map=real_map, fingerprint=fingerprint)

    relax = None
    if minimize and not restart:
        with console.status("FIRE minimisation …"):
            positions, relax = fire(potential, struct.positions, struct.cell, FireSettings(fmax=fmax))
        system = MDSystem(**{**system.__dict__, "positions": positions})
        console.print(f"minimised in {relax['steps']} steps: E {relax['energy_initial']:.4f} → {relax['energy_final']:.4f} eV, "
                      f"max |F| {relax['fmax_initial']:.3f} → {relax['fmax_final']:.4f} eV/Å"
                      + ("" if relax["converged"] else " [yellow](not converged)[/yellow]"))

    parameters = {"model": str(model_path), "structure": structure, "supercell": supercell, "spin": model.spin,
                  "moments": None if host_moments is None else host_moments.tolist(), "minimized": relax,
                  "spin_search": None if schedule_settings is None else schedule_settings.to_dict()}
    console.print(f"{potential.name}; {len(types)} atoms ({_formula(struct.symbols)}), {settings.ensemble.upper()} "
                  f"at {temperature:g} K, dt {dt:g} fs, {steps} steps → {output}")
    progress = Progress(TextColumn("[bold]md[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
                        TextColumn("{task.fields[thermo]}"), TimeRemainingColumn(), console=console, disable=quiet or as_json)
    clock = {}
    with progress, stop_on_signals() as stop_requested:
        task = progress.add_task("md", total=steps, rate="", thermo="")

        def on_start(step):
            progress.update(task, completed=step)

        def on_progress(step):
            now = time.perf_counter()
            if "t0" not in clock:  # the first call includes compilation: measure speed after it
                clock.update(t0=now, s0=step)
            elif now > clock["t0"]:
                per_s = (step - clock["s0"]) / (now - clock["t0"])
                progress.update(task, rate=f"{per_s * dt / FS_PER_NS * SECONDS_PER_DAY:.3g} ns/day")
            progress.update(task, completed=step)

        def on_frame(frame):
            progress.update(task, thermo=f"T {frame.temperature:.0f} K  PE {frame.potential_energy:.3f} eV")

        result, summary = run_md(potential, system, settings, output, seed=seed, restart=restart, overwrite=overwrite,
                                 write_velocities=velocities, parameters=parameters, should_stop=stop_requested,
                                 on_progress=on_progress, on_frame=on_frame, on_start=on_start, spin_search=schedule,
                                 deviation=deviation)
    if "t0" in clock and result.steps_done:
        steady = time.perf_counter() - clock["t0"]
        done = int(result.state.step) - clock["s0"]
        if steady > 0 and done > 0:
            summary["steps_per_s"] = done / steady
            summary["ns_per_day"] = done / steady * dt / FS_PER_NS * SECONDS_PER_DAY
    summary["atom_steps_per_s"] = summary["steps_per_s"] * len(types)
    summary.update(output=str(output), checkpoint=str(checkpoint_path(output)), thermo_log=str(log_path(output)),
                   n_atoms=len(types), minimize=relax)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=float))
    else:
        _render(console, summary, settings)
    devi = summary.get("model_deviation")
    if devi and devi["stopped_at_trust_hi"]:
        typer.echo(f"stopped at step {summary['final_step']}: max force deviation above --trust-hi {trust_hi:g} eV/Å "
                   f"first at step {devi['first_above_step']}; the {summary['frames']} frames so far are valid "
                   f"({devi['file']})", err=True)
        return
    if result.stopped:
        typer.echo(f"stopped at step {summary['final_step']} on request; checkpoint {checkpoint_path(output)} written: "
                   "continue with --restart", err=True)
        raise typer.Exit(130)


def _catalogue_start(model, types, sites, states) -> np.ndarray:
    """Per-atom moments to start a --spin-search run from when none are given: each magnetic atom
    in its element's highest catalogue state (the search at step 0 then picks the states)."""
    from cathodeml import spin
    from cathodeml.spin_search import model_catalogue, parse_states

    catalogue = {**model_catalogue(model), **parse_states(states or [])}
    real = spin.model_real_type_map(model.type_map, model.spin)
    out = np.zeros(len(types))
    for i in sites.host_index:
        el = real[types[i]]
        if el not in catalogue:
            raise CathodemlError(f"the model stores no spin states for {el}; give them, e.g. --states {el}=-4.2,4.2")
        out[i] = max(catalogue[el])
    return out


def _load_model(path: Path):
    from cathodeml.model.store import load_model  # model.h5 or DeePMD-kit .dp, told apart by content

    return load_model(path)


def structure_types(symbols, type_map: list[str], model_path: Path) -> np.ndarray:
    missing = sorted(set(symbols) - set(type_map))
    if missing:
        raise TypeMapError(f"the structure contains {', '.join(missing)}, which {model_path} does not know "
                           f"(its type map is {', '.join(type_map)})")
    return np.array([type_map.index(s) for s in symbols], dtype=np.int64)


def element_masses(symbols) -> np.ndarray:
    from ase.data import atomic_masses, atomic_numbers

    return np.array([atomic_masses[atomic_numbers[s]] for s in symbols])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _formula(symbols) -> str:
    counts: dict[str, int] = {}
    for s in symbols:
        counts[s] = counts.get(s, 0) + 1
    return "".join(f"{el}{n}" for el, n in counts.items())


def _render(console: Console, summary: dict, settings) -> None:
    table = Table(title="md summary", show_header=False)
    obs = summary["observables"]
    rows = [("steps run", f"{summary['steps_done']} (now at step {summary['final_step']})"),
            ("frames in trajectory", str(summary["frames"])),
            ("throughput", f"{summary['ns_per_day']:.3g} ns/day, {summary['atom_steps_per_s']:.3g} atom-steps/s"),
            ("wall time", f"{summary['wall_s']:.1f} s"),
            ("neighbour-list builds", str(summary["neighbor_builds"]))]
    if "temperature_K" in obs:
        t = obs["temperature_K"]
        rows.append(("temperature", f"{t['mean']:.1f} ± {t['std']:.1f} K (target {settings.temperature_K:g} K)"))
        pe = obs["potential_energy_eV"]
        rows.append(("potential energy", f"{pe['mean']:.4f} ± {pe['std']:.4f} eV"))
    if "conserved_energy_drift_eV" in obs:
        rows.append(("conserved-energy drift", f"{obs['conserved_energy_drift_eV']:.3g} eV"))
    if "spin_search" in summary:
        sp = summary["spin_search"]
        rows.append(("spin searches", f"{sp['searches']} ({sp['search_seconds']:.1f} s), {sp['changes']} changed the "
                                      f"states ({sp['atoms_changed']} atom moves), ΣΔE {sp['energy_jumps_eV']:.4f} eV"))
    if "model_deviation" in summary:
        d = summary["model_deviation"]
        rows.append(("model deviation", f"{d['models']} models, max_devi_f {d['max_devi_f_mean']:.4f} mean, "
                                        f"{d['max_devi_f_max']:.4f} largest eV/Å"
                     + (f"; {d['frames_above_trust_hi']} frames above {d['trust_hi']:g}" if d["trust_hi"] is not None else "")))
    rows.append(("files", f"{summary['output']}, {summary['thermo_log']}, {summary['checkpoint']}"
                 + (f", {summary['spin_search']['log']}" if "spin_search" in summary else "")
                 + (f", {summary['model_deviation']['file']}" if "model_deviation" in summary else "")))
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
