"""`cathodeml info` for trajectories (H5MD, LAMMPS dumps): atoms, frames, time span, temperature, observables."""

from __future__ import annotations

from collections import Counter

import h5py
import numpy as np

from cathodeml.io.trajectory import open_trajectory


def describe_trajectory(path):
    """Summary dict and a render(console) function for a trajectory (times fs, T K, energies eV);
    observables only from H5MD files (a LAMMPS run keeps its thermo in log.lammps)."""
    with open_trajectory(path) as traj:
        h = traj.header
        first = next(traj.chunks(chunk_bytes=1), None)
        cell = first.cells[0] if first is not None else np.full((3, 3), np.nan)
    observables = {}
    if h.format == "h5md":
        with h5py.File(path, "r", locking=False) as f:  # may be a running md's trajectory
            for name, g in f.get("observables", {}).items():
                if isinstance(g, h5py.Group) and "value" in g and g["value"].shape[0]:
                    v = g["value"][()]
                    observables[name] = {"mean": float(np.mean(v)), "std": float(np.std(v)),
                                         "unit": g["value"].attrs.get("unit", "")}
    span = float(h.time_fs[-1] - h.time_fs[0]) if h.time_fs is not None and h.n_frames else 0.0
    summary = {"path": str(path), "kind": "trajectory", "format": h.format, "n_atoms": h.n_atoms,
               "n_frames": h.n_frames, "composition": dict(Counter(h.symbols)), "timestep_fs": h.timestep_fs,
               "duration_ps": span / 1000.0, "temperature_K": h.temperature_K, "has_images": h.has_images,
               "cell_A": np.asarray(cell).tolist(), "volume_A3": float(abs(np.linalg.det(cell))),
               "observables": observables, "parameters": h.parameters}

    def render(console):
        comp = " ".join(f"{k}{v}" for k, v in summary["composition"].items())
        console.print(f"[bold]{path}[/bold]: {'H5MD' if h.format == 'h5md' else 'LAMMPS dump'} trajectory, {h.n_atoms} atoms ({comp}), {h.n_frames} frames "
                      f"every {h.timestep_fs or float('nan'):g} fs ({summary['duration_ps']:g} ps), "
                      f"T = {h.temperature_K if h.temperature_K is not None else '?'} K, "
                      f"V = {summary['volume_A3']:.1f} Å³")
        for name, o in observables.items():
            unit = o["unit"].decode() if isinstance(o["unit"], bytes) else o["unit"]
            console.print(f"  {name}: {o['mean']:.6g} ± {o['std']:.3g} {unit}")

    return summary, render
