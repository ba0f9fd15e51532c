"""Summaries for `cathodeml info`: each returns (summary dict, render(console) function).

A dataset summary is built for the question a user asks before training a spin model: what is
in here, and which spin states does each element visit?  So besides systems, frames, type map,
composition and the energy range, it histograms the moments of each element and, for the magnetic
ones, groups them into spin states (e.g. Ni at ~0, ~1 and ~1.7 μB) by the rule of `cathodeml.spin`
(signed moments, split at empty gaps), the same states `augment-spin` and `test` report.
"""

from __future__ import annotations

import numpy as np
from rich.markup import escape
from rich.table import Table

from cathodeml import spin
from cathodeml.io.dataset import read_dataset

HIST_BIN_UB = 0.1  # μB, histogram bin width
_SPARK = " ▁▂▃▄▅▆▇█"
_SHORT = {"energies": "E", "forces": "F", "virials": "V"}


def describe_dataset(path):
    """Systems, frames, type map, composition, energy range (eV/atom), moments and spin states (μB) per element."""
    ds = read_dataset(path)
    systems = []
    for s in ds.systems:
        entry = {"name": s.name, "frames": s.n_frames, "atoms": s.n_atoms,
                 "composition": {ds.type_map[t]: int(np.count_nonzero(s.atom_types == t)) for t in np.unique(s.atom_types)}}
        if s.energies is not None and s.n_frames:
            per_atom = s.energies / s.n_atoms
            entry["energy_per_atom_eV"] = [float(per_atom.min()), float(per_atom.max())]
        entry["labels"] = [k for k in ("energies", "forces", "virials") if getattr(s, k) is not None]
        fd = s.frame_data
        if "has_moments" in fd:
            entry["frames_with_moments"] = int(np.count_nonzero(fd["has_moments"]))
        elif "spin" in fd:
            entry["frames_with_moments"] = s.n_frames
        if "scf_converged" in fd:
            entry["frames_unconverged"] = int(np.count_nonzero(~np.asarray(fd["scf_converged"], dtype=bool)))
        if "ispin" in fd:
            entry["ispin"] = sorted(int(v) for v in np.unique(fd["ispin"]))
        if "noncollinear" in fd:
            entry["noncollinear"] = bool(np.asarray(fd["noncollinear"], dtype=bool).any())
        if "source_sha256" in fd:
            entry["sources"] = int(len(set(np.asarray(fd["source_sha256"]).tolist())))
        entry["extras"] = sorted(fd)
        systems.append(entry)
    moments = moment_histograms(ds)
    summary = {"path": str(path), "kind": "dataset", "type_map": ds.type_map, "n_systems": len(ds.systems),
               "n_frames": ds.n_frames, "atom_frames_by_element": _total_composition(systems), "systems": systems,
               "moment_histograms": moments}
    if ds.attrs.get("energy"):
        summary["energy_label"] = ds.attrs["energy"]

    def render(console):
        label = {"free": ", energies = TOTEN", "sigma0": ", energies = E(sigma→0)"}.get(ds.attrs.get("energy"), "")
        console.print(f"[bold]{path}[/bold]: dataset, {len(ds.systems)} systems, {ds.n_frames} frames, "
                      f"type map {','.join(ds.type_map)}{label}")
        table = Table("system", "frames", "atoms", "composition", "E/atom range (eV)", "labels", "with moments", "ISPIN")
        for e in systems:
            rng = e.get("energy_per_atom_eV")
            moments_txt = f"{e['frames_with_moments']}/{e['frames']}" if "frames_with_moments" in e else "-"
            table.add_row(e["name"], str(e["frames"]), str(e["atoms"]),
                          " ".join(f"{k}{v}" for k, v in e["composition"].items()),
                          f"{rng[0]:.4f} … {rng[1]:.4f}" if rng else "-", "".join(_SHORT[x] for x in e["labels"]),
                          moments_txt, "non-coll." if e.get("noncollinear") else ",".join(map(str, e.get("ispin", []))) or "-")
        console.print(table)
        if moments:
            mt = Table("element", "values")
            mt.add_column("moment histogram (μB)", no_wrap=True)
            mt.add_column(escape("spin states (μB): center [min–max] ×count"))
            for element, h in moments.items():
                states = "\n".join(f"{st['center']:.2f} [{st['min']:.2f}–{st['max']:.2f}] ×{st['count']}"
                                   for st in h["states"])
                mt.add_row(element, str(h["n"]), f"{h['edges'][0]:.1f} " + _sparkline(h["counts"]) + f" {h['edges'][-1]:.1f}",
                           escape(states or f"not magnetic (|m| ≤ {spin.MAGNETIC_MOMENT_MUB:g})"))
            console.print(mt)
        else:
            console.print("no per-atom magnetic moments in this dataset")

    return summary, render


def _total_composition(systems) -> dict:
    """Atoms of each element summed over all frames (how much training signal each element gets)."""
    total: dict[str, int] = {}
    for e in systems:
        for k, v in e["composition"].items():
            total[k] = total.get(k, 0) + v * e["frames"]
    return total


def moment_histograms(ds, bin_width: float = HIST_BIN_UB) -> dict:
    """Per element: histogram of the spin-state moments (μB, `spin.state_moments`: signed, |S| for
    non-collinear frames) over all frames with moments, and its spin states.

    Returns {element: {"n", "edges" [μB], "counts", "magnetic", "states": `spin.spin_states`}};
    "states" is empty for an element that is not magnetic (`spin.is_magnetic`).
    """
    values: dict[str, list[np.ndarray]] = {}
    for s in ds.systems:
        m = spin.state_moments(s.frame_data)
        if m is None:
            continue
        for t in np.unique(s.atom_types):
            col = m[:, s.atom_types == t].ravel()
            col = col[np.isfinite(col)]
            if col.size:
                values.setdefault(ds.type_map[t], []).append(col)
    states = spin.element_spin_states({el: np.concatenate(v) for el, v in values.items()})
    out = {}
    for element in [e for e in ds.type_map if e in values]:
        v = np.concatenate(values[element])
        lo = np.floor(v.min() / bin_width)
        n_bins = max(1, int(np.ceil(v.max() / bin_width - lo)))
        edges = (lo + np.arange(n_bins + 1)) * bin_width
        edges[0], edges[-1] = min(edges[0], v.min()), max(edges[-1], v.max())  # float rounding: keep every value in
        counts, edges = np.histogram(v, bins=edges)
        out[element] = {"n": int(v.size), "edges": edges.round(6).tolist(), "counts": counts.tolist(),
                        "magnetic": element in states, "states": states.get(element, [])}
    return out


def _sparkline(counts, width: int = 24) -> str:
    """One character per bin, neighbouring bins summed so that at most `width` characters remain."""
    counts = np.asarray(counts, dtype=float)
    group = -(-counts.size // width)
    counts = np.add.reduceat(counts, np.arange(0, counts.size, group))
    if counts.max() <= 0:
        return ""
    levels = np.ceil(counts / counts.max() * (len(_SPARK) - 1)).astype(int)
    return "".join(_SPARK[k] for k in levels)
