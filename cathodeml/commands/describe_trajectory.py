"""`cathodeml info` for trajectories (H5MD, LAMMPS dumps): atoms, frames, time span, temperature, observables,
and for an `md --spin-search` run how the spin states evolved."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np

from cathodeml.io.trajectory import open_trajectory


def spin_state_summary(symbols, moments) -> dict:
    """How per-atom spin states evolve in [F, N] moments (μB; 0 for non-magnetic atoms): per element,
    the states (moments to 0.01 μB) and how many atoms hold each in the first and last frame, and the
    number of state changes between consecutive frames (total, and frames with any)."""
    moments = np.round(np.asarray(moments, dtype=np.float64), 2)
    symbols = np.asarray(symbols)
    changed = moments[1:] != moments[:-1]
    per_element = {}
    for element in dict.fromkeys(symbols[np.any(moments != 0, axis=0)]):
        column = moments[:, symbols == element]
        states = np.unique(column)
        per_element[str(element)] = {
            "states_muB": states.tolist(),
            "first": [int(np.sum(column[0] == s)) for s in states],
            "last": [int(np.sum(column[-1] == s)) for s in states]}
    return {"frames": int(moments.shape[0]), "changes": int(changed.sum()),
            "frames_with_changes": int(np.any(changed, axis=1).sum()), "elements": per_element}


def describe_trajectory(path):
    """Summary dict and a render(console) function for a trajectory (times fs, T K, energies eV);
    observables only from H5MD files (a LAMMPS run keeps its thermo in log.lammps)."""
    with open_trajectory(path) as traj:
        h = traj.header
        first = next(traj.chunks(chunk_bytes=1), None)
        cell = first.cells[0] if first is not None else np.full((3, 3), np.nan)
    observables, spin_states = {}, None
    if h.format == "h5md":
        with h5py.File(path, "r", locking=False) as f:  # may be a running md's trajectory
            for name, g in f.get("observables", {}).items():
                if isinstance(g, h5py.Group) and "value" in g and g["value"].shape[0]:
                    v = g["value"][()]
                    if name == "spin_moments":  # per atom: a mean over atoms and frames says nothing
                        spin_states = spin_state_summary(h.symbols, v)
                        continue
                    observables[name] = {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                         "unit": g["value"].attrs.get("unit", "")}
    span = float(h.time_fs[-1] - h.time_fs[0]) if h.time_fs is not None and h.n_frames else 0.0
    summary = {"path": str(path), "kind": "trajectory", "format": h.format, "n_atoms": h.n_atoms,
               "n_frames": h.n_frames, "composition": dict(Counter(h.symbols)), "timestep_fs": h.timestep_fs,
               "duration_ps": span / 1000.0, "temperature_K": h.temperature_K, "has_images": h.has_images,
               "cell_A": np.asarray(cell).tolist(), "volume_A3": float(abs(np.linalg.det(cell))),
               "observables": observables, "spin_states": spin_states, "parameters": h.parameters}

    def render(console):
        comp = " ".join(f"{k}{v}" for k, v in summary["composition"].items())
        console.print(f"[bold]{path}[/bold]: {'H5MD' if h.format == 'h5md' else 'LAMMPS dump'} trajectory, {h.n_atoms} atoms ({comp}), {h.n_frames} frames "
                      f"every {h.timestep_fs or float('nan'):g} fs ({summary['duration_ps']:g} ps), "
                      f"T = {h.temperature_K if h.temperature_K is not None else '?'} K, "
                      f"V = {summary['volume_A3']:.1f} Å³")
        for name, o in observables.items():
            unit = o["unit"].decode() if isinstance(o["unit"], bytes) else o["unit"]
            console.print(f"  {name}: {o['mean']:.6g} ± {o['std']:.3g} {unit}")
        if spin_states is not None:
            console.print(f"  spin states: {spin_states['changes']} changes in {spin_states['frames_with_changes']} "
                          f"of {spin_states['frames'] - 1} frame intervals")
            for element, e in spin_states["elements"].items():
                held = ", ".join(f"{m:+g} μB: {a} → {b}" for m, a, b in zip(e["states_muB"], e["first"], e["last"]))
                console.print(f"    {element} (atoms per state, first → last frame): {held}")

    return summary, render
