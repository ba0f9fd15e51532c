"""Summaries for `cathodeml info`: each returns (summary dict, render(console) function)."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from cathodeml.io.dataset import read_dataset


def describe_dataset(path):
    """Systems, frames, type map, composition, energy range and |moment| histograms per element."""
    ds = read_dataset(path)
    systems = []
    for s in ds.systems:
        entry = {"name": s.name, "frames": s.n_frames, "atoms": s.n_atoms,
                 "composition": {ds.type_map[t]: int(np.count_nonzero(s.atom_types == t)) for t in np.unique(s.atom_types)}}
        if s.energies is not None and s.n_frames:
            per_atom = s.energies / s.n_atoms
            entry["energy_per_atom_eV"] = [float(per_atom.min()), float(per_atom.max())]
        entry["labels"] = [k for k in ("energies", "forces", "virials") if getattr(s, k) is not None] + sorted(s.frame_data)
        systems.append(entry)
    moments = _moment_histograms(ds)
    summary = {"path": str(path), "kind": "dataset", "type_map": ds.type_map, "n_systems": len(ds.systems),
               "n_frames": ds.n_frames, "systems": systems, "moment_histograms": moments}

    def render(console):
        console.print(f"[bold]{path}[/bold]: dataset, {len(ds.systems)} systems, {ds.n_frames} frames, "
                      f"type map {','.join(ds.type_map)}")
        table = Table("system", "frames", "atoms", "E/atom range (eV)", "labels")
        for e in systems:
            rng = e.get("energy_per_atom_eV")
            table.add_row(e["name"], str(e["frames"]), str(e["atoms"]),
                          f"{rng[0]:.4f} … {rng[1]:.4f}" if rng else "-", ", ".join(e["labels"]))
        console.print(table)
        for element, h in moments.items():
            bars = "  ".join(f"{lo:.1f}-{hi:.1f}:{n}" for lo, hi, n in zip(h["edges"][:-1], h["edges"][1:], h["counts"]) if n)
            console.print(f"|m| {element} (μB): {bars}")

    return summary, render


def _moment_histograms(ds, bin_width: float = 0.25) -> dict:
    """Per element, a histogram of |moment| over all frames (bins of `bin_width` μB)."""
    values: dict[str, list[np.ndarray]] = {}
    for s in ds.systems:
        if "magmom" in s.frame_data:
            m = np.abs(np.asarray(s.frame_data["magmom"], dtype=float))
        elif "spin" in s.frame_data:
            m = np.linalg.norm(np.asarray(s.frame_data["spin"], dtype=float), axis=-1)
        else:
            continue
        for t in np.unique(s.atom_types):
            col = m[:, s.atom_types == t].ravel()
            col = col[np.isfinite(col)]
            if col.size:
                values.setdefault(ds.type_map[t], []).append(col)
    out = {}
    for element, chunks in values.items():
        v = np.concatenate(chunks)
        top = max(bin_width, np.ceil(v.max() / bin_width) * bin_width)
        counts, edges = np.histogram(v, bins=np.arange(0.0, top + bin_width, bin_width))
        out[element] = {"edges": edges.tolist(), "counts": counts.tolist()}
    return out
