"""The spin paper's (η, d) scan: one model per grid point, same settings and seed, tested on held-out frames.

Why it is built this way.  The virtual length η (Å/μB) and offset d (Å) of collinear DeePSPIN are
chosen by trying them (the spin paper's Fig. S1 scans both over 0.1–0.5 and marks the pairs whose
virtual atoms run into a neighbour).  A fair scan changes nothing but the virtual atoms: every
point trains from the same initial seed, on the same frames, with the same batches, and -- so that
also the network is the same size -- with one `sel` and one neighbour-list capacity for the whole
grid (the largest any point needs).  That also means every point has the same array shapes and
the jitted train step compiles once for the whole scan instead of once per point.  A pair whose
virtual atoms come closer than `min_distance` to another atom (or `min_host_distance` to their own
host) is not trained but recorded as an overlap, using augment-spin's own geometry check
(`spin.contact_distances`, minimum image, any triclinic cell).  Validation frames are the given
held-out data (augmented with each point's settings) or else the config's validation fraction,
the same frames at every point.  Energies in meV/atom, forces in meV/Å.  No printing here; the
command passes a `progress` hook.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError

MEV = 1000.0
CSV_COLUMNS = ("eta_A_per_muB", "d_A", "energy_rmse_meV_per_atom", "force_rmse_meV_per_A", "overlap", "seconds",
               "note")


def parse_grid(text: str, what: str) -> np.ndarray:
    """Grid values from "start:stop:count" (inclusive, evenly spaced), "a,b,c" or one number."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError
            values = np.linspace(start, stop, count)
        else:
            values = np.array([float(x) for x in text.split(",") if x.strip()])
    except ValueError:
        raise CathodemlError(f"{what} {text!r}: give start:stop:count (e.g. 0.1:0.5:5), a list 0.1,0.3 or one value") from None
    if values.size == 0 or not np.all(np.isfinite(values)):
        raise CathodemlError(f"{what} {text!r} gives no finite values")
    return np.round(values, 10)


@dataclasses.dataclass
class ScanPoint:
    """One (η, d): energy RMSE (meV/atom) and force RMSE (meV/Å, NaN without force labels) on the
    held-out frames, or overlap True (then both NaN) with the reason in `note`; wall seconds."""

    eta: float
    d: float
    energy_rmse: float = math.nan
    force_rmse: float = math.nan
    overlap: bool = False
    seconds: float = 0.0
    note: str = ""

    def row(self) -> dict:
        return {"eta_A_per_muB": self.eta, "d_A": self.d, "energy_rmse_meV_per_atom": self.energy_rmse,
                "force_rmse_meV_per_A": self.force_rmse, "overlap": int(self.overlap), "seconds": self.seconds,
                "note": self.note}


def virtual_atom_overlap(augmented, min_distance: float, min_host_distance: float) -> str | None:
    """Why the virtual atoms of an augmented dataset overlap (a sentence), or None when they do not.

    Same criteria as `augment-spin`: a virtual atom closer than `min_distance` (Å) to any atom but
    its own host (minimum image), or closer than `min_host_distance` (Å) to its host.
    """
    from cathodeml import spin

    for system in augmented.systems:
        layout = spin.read_spin_layout(system, augmented.type_map)
        if layout is None or layout.host_index.size == 0:
            continue
        n = layout.n_real
        shift = np.linalg.norm(system.coords[:, n:] - system.coords[:, layout.host_index], axis=-1)
        if shift.min() < min_host_distance:
            f, k = np.unravel_index(int(np.argmin(shift)), shift.shape)
            return (f"frame {int(f)}: the virtual atom of atom {int(layout.host_index[k])} is {shift[f, k]:.3f} Å "
                    f"from its host (< {min_host_distance:g} Å)")
        if min_distance <= 0:
            continue
        chunk = max(1, int(1e6 // (layout.host_index.size * system.n_atoms * 27)))
        for start in range(0, system.n_frames, chunk):
            stop = min(system.n_frames, start + chunk)
            dist = spin.contact_distances(system.coords[start:stop], system.cells[start:stop], not system.nopbc, n,
                                          layout.host_index, min_distance)
            if np.isfinite(dist).any():
                f, k, b = np.unravel_index(int(np.argmin(dist)), dist.shape)
                other = f"real atom {int(b)}" if b < n else f"the virtual atom of atom {int(layout.host_index[b - n])}"
                return (f"frame {start + int(f)}: the virtual atom of atom {int(layout.host_index[k])} is "
                        f"{dist[f, k, b]:.3f} Å from {other} (< {min_distance:g} Å)")
    return None


def _labelled(dataset, type_map: list[str], where: str):
    from cathodeml.io.dataset import Dataset, remap_types
    from cathodeml.train.data import labelled_systems

    systems = [dataclasses.replace(s, atom_types=remap_types(s.atom_types, dataset.type_map, type_map, where=where))
               for s in dataset.systems]
    return labelled_systems(Dataset(type_map, systems, dataset.attrs), where)


@dataclasses.dataclass
class _Prepared:
    point: ScanPoint
    type_map: list[str]
    train: list
    valid: list


def _prepare(dataset, valid, settings, spin_settings, point, min_distance, min_host_distance) -> _Prepared | None:
    """Augment train (and held-out) data for one point and make labelled systems; None on overlap."""
    from cathodeml import spin
    from cathodeml.train.data import assign_batch_sizes, split_validation

    augmented, _ = spin.augment_dataset(dataset, spin_settings, min_distance=0.0, min_host_distance=0.0)
    reason = virtual_atom_overlap(augmented, min_distance, min_host_distance)
    aug_valid = None
    if reason is None and valid is not None:
        aug_valid, _ = spin.augment_dataset(valid, spin_settings, min_distance=0.0, min_host_distance=0.0)
        reason = virtual_atom_overlap(aug_valid, min_distance, min_host_distance)
        reason = None if reason is None else f"held-out data, {reason}"
    if reason is not None:
        point.overlap, point.note = True, reason
        return None
    requested = list(settings.model.type_map)
    type_map = (requested + [t for t in augmented.type_map if spin.is_virtual_type(t) and t not in requested]
                if requested else list(augmented.type_map))
    t = settings.training
    systems = _labelled(augmented, type_map, "training data")
    if aug_valid is not None:
        train, held_out = systems, _labelled(aug_valid, type_map, "held-out data")
    else:
        train, held_out = split_validation(systems, t.validation_fraction, np.random.Generator(np.random.PCG64(t.seed + 1)))
    if not held_out:
        raise CathodemlError("no held-out frames to test on: pass --valid HELD_OUT.h5 or set "
                             "training.validation_fraction > 0 in the config")
    assign_batch_sizes(train, t.batch_size)
    assign_batch_sizes(held_out, 1)
    return _Prepared(point, type_map, train, held_out)


def run_spin_scan(dataset, magnetic: list[str], etas, ds, settings, *, valid=None, mode: str = "collinear",
                  min_distance: float = 0.5, min_host_distance: float = 0.05, workdir: Path,
                  progress=None, should_stop=None) -> list[ScanPoint]:
    """Train and test one model per (η, d) on the grid; returns the points in (η, d) row order.

    dataset / valid: plain Datasets (with moments); valid None holds out training.validation_fraction.
    settings: the TrainConfig every point uses (same seed, steps, batches).  Pairs whose virtual atoms
    overlap (see `virtual_atom_overlap`) are returned with overlap True and no RMSE.  `workdir` gets
    each run's lcurve.out and checkpoint (overwritten point after point).  `progress(done, total,
    point)` is called as points finish; `should_stop()` true stops after the current point.
    """
    from cathodeml.model.neighbors import with_capacity
    from cathodeml.spin import SpinSettings
    from cathodeml.train.plan import initial_model, model_config_for, prepare_neighbours
    from cathodeml.train.trainer import new_run_state, train

    points = [ScanPoint(float(e), float(d)) for e in etas for d in ds]
    total = len(points)
    # Pass 1: overlap flags, and the largest sel and neighbour capacity any point needs.
    sel, capacity, done = None, None, 0
    for point in points:
        spin_settings = SpinSettings.create(magnetic, point.eta, point.d, mode)
        prep = _prepare(dataset, valid, settings, spin_settings, point, min_distance, min_host_distance)
        if prep is None:
            done += 1
            if progress is not None:
                progress(done, total, point)
            continue
        config = model_config_for(settings.model, prep.type_map, prep.train)
        prepare_neighbours(config, prep.train + prep.valid)
        caps = np.max([s.neighbours.capacity for s in prep.train + prep.valid], axis=0)
        sel = np.array(config.sel) if sel is None else np.maximum(sel, config.sel)
        capacity = caps if capacity is None else np.maximum(capacity, caps)
    # Pass 2: the same model shape everywhere (one compilation), trained point after point.
    for point in points:
        if point.overlap:
            continue
        if should_stop is not None and should_stop():
            break
        t0 = time.perf_counter()
        spin_settings = SpinSettings.create(magnetic, point.eta, point.d, mode)
        prep = _prepare(dataset, valid, settings, spin_settings, point, min_distance, min_host_distance)
        model = dataclasses.replace(settings.model, sel=tuple(int(s) for s in sel))
        config = model_config_for(model, prep.type_map, prep.train)
        prepare_neighbours(config, prep.train + prep.valid)
        for s in prep.train + prep.valid:
            s.neighbours = with_capacity(s.neighbours, tuple(int(c) for c in capacity))
        params, stats = initial_model(config, prep.train, settings.model.seed, settings.training.stat_frames)
        result = train(config, new_run_state(params, stats), prep.train, prep.valid, settings,
                       lcurve_path=workdir / "lcurve.out", checkpoint_path=workdir / "checkpoint.h5")
        final = result.final["valid"]
        point.energy_rmse = MEV * final["rmse_e"]
        point.force_rmse = MEV * final["rmse_f"] if math.isfinite(final["rmse_f"]) else math.nan
        point.seconds = time.perf_counter() - t0
        done += 1
        if progress is not None:
            progress(done, total, point)
    return points


# ----------------------------------------------------------------------------- outputs


def write_csv(path: Path, points: list[ScanPoint]) -> None:
    """spin_scan.csv, one row per point (NaN written as empty), through a temporary file."""
    import csv

    from cathodeml.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for p in points:
                row = p.row()
                for key in ("energy_rmse_meV_per_atom", "force_rmse_meV_per_A"):
                    row[key] = "" if not math.isfinite(row[key]) else f"{row[key]:.4f}"
                row["seconds"] = f"{row['seconds']:.1f}"
                writer.writerow(row)


def grid_of(points: list[ScanPoint], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(η values, d values, [nη, nd] array of `key` (NaN where not trained), [nη, nd] overlap mask)."""
    etas = np.array(sorted({p.eta for p in points}))
    ds = np.array(sorted({p.d for p in points}))
    values = np.full((etas.size, ds.size), np.nan)
    overlap = np.zeros((etas.size, ds.size), dtype=bool)
    for p in points:
        i, j = int(np.searchsorted(etas, p.eta)), int(np.searchsorted(ds, p.d))
        values[i, j] = getattr(p, key)
        overlap[i, j] = p.overlap
    return etas, ds, values, overlap


def heat_map(path: Path, points: list[ScanPoint], key: str, label: str) -> None:
    """A heat map of `key` over (d, η), each cell annotated; overlapping pairs grey, marked 0
    (as the spin paper's Fig. S1 marks them).  Written through a temporary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cathodeml.io.atomic import atomic_output

    etas, ds, values, overlap = grid_of(points, key)
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * ds.size, 0.8 + 0.8 * etas.size), dpi=150)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.85")
    finite = values[np.isfinite(values)]
    image = ax.imshow(np.ma.masked_invalid(values), origin="lower", cmap=cmap, aspect="auto",
                      vmin=finite.min() if finite.size else 0, vmax=finite.max() if finite.size else 1)
    for i in range(etas.size):
        for j in range(ds.size):
            if overlap[i, j]:
                text, color = "0", "k"
            elif np.isfinite(values[i, j]):
                text = f"{values[i, j]:.2f}" if values[i, j] < 10 else f"{values[i, j]:.1f}"
                color = "w" if finite.size and values[i, j] < finite.min() + 0.6 * np.ptp(finite) else "k"
            else:
                text, color = "–", "k"
            ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(ds.size), [f"{d:g}" for d in ds])
    ax.set_yticks(range(etas.size), [f"{e:g}" for e in etas])
    ax.set_xlabel("d (Å)")
    ax.set_ylabel("η (Å/μB)")
    fig.colorbar(image, ax=ax, label=label)
    ax.set_title("0 = virtual atoms overlap a neighbour", fontsize=7)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
