"""Ensembles of models and their model deviation: where a potential can be trusted.

Models trained on the same data from different initialisations agree where the data taught them
and disagree away from it; the spread of their forces is the estimate of the error that DP-GEN's
active-learning loop selects new DFT frames by.  Definitions are DeePMD-kit's (`dp model-devi`,
and the LAMMPS pair style with several models), so files written here read in DP-GEN tools:

- force deviation of atom i: ε_F,i = sqrt(⟨‖F_i,k − ⟨F_i⟩‖²⟩_k) (eV/Å); per frame its maximum,
  minimum and mean over the atoms;
- virial deviation: the standard deviation over models of each of the 9 virial components divided
  by the atom count (eV/atom); per frame the maximum, minimum and the norm of the 9 divided by 3;
- energy deviation: the standard deviation over models of the energy per atom (eV/atom).

`model_devi.out` columns: step, max_devi_v, min_devi_v, avg_devi_v, max_devi_f, min_devi_f,
avg_devi_f, devi_e.  Averages ⟨·⟩_k are over the K models, standard deviations population ones
(ddof = 0).  With `sites` (spin models) positions and forces are the real atoms'.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import CathodemlError

COLUMNS = ("step", "max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f", "devi_e")


def force_deviation(forces) -> np.ndarray:
    """ε_F per atom [..., N] (eV/Å) from forces [K, ..., N, 3] of K models."""
    forces = np.asarray(forces, dtype=np.float64)
    return np.sqrt(np.mean(np.sum((forces - forces.mean(axis=0)) ** 2, axis=-1), axis=0))


def model_deviation(energies, forces, virials, n_atoms: int, steps=None) -> np.ndarray:
    """[F, 8] rows of model_devi.out from K models' energies [K, F] eV, forces [K, F, N, 3] eV/Å and
    virials [K, F, 3, 3] eV (None: the virial columns are 0); steps [F] (default 0..F-1)."""
    energies = np.asarray(energies, dtype=np.float64)
    k, n_frames = energies.shape
    if k < 2:
        raise CathodemlError(f"a model deviation needs at least 2 models, got {k}")
    eps_f = force_deviation(forces)
    if virials is None:
        v = np.zeros((n_frames, 9))
    else:
        v = np.std(np.asarray(virials, dtype=np.float64).reshape(k, n_frames, 9) / n_atoms, axis=0)
    steps = np.arange(n_frames) if steps is None else np.asarray(steps)
    return np.column_stack([steps, v.max(axis=1), v.min(axis=1), np.linalg.norm(v, axis=1) / 3,
                            eps_f.max(axis=1), eps_f.min(axis=1), eps_f.mean(axis=1),
                            np.std(energies / n_atoms, axis=0)])


def format_rows(devi: np.ndarray) -> str:
    """model_devi.out lines (no header) in DeePMD-kit's fixed widths."""
    return "".join(f"{int(r[0]):12d}" + "".join(f"{x:19.6e}" for x in r[1:]) + "\n" for r in np.atleast_2d(devi))


def header(comment: str = "") -> str:
    """The header line(s) DeePMD-kit writes above the columns (a comment, then the column names)."""
    names = f"{'step':>10s}" + "".join(f"{c:>19s}" for c in COLUMNS[1:])
    return (f"# {comment}\n" if comment else "") + f"# {names}\n"


def write_model_devi(path: Path, devi: np.ndarray, comment: str = "") -> None:
    """Write a whole model_devi.out atomically (temporary file, then rename)."""
    from cathodeml.io.atomic import atomic_output

    with atomic_output(Path(path)) as tmp:
        Path(tmp).write_text(header(comment) + format_rows(devi))


def read_model_devi(path: Path) -> np.ndarray:
    """[F, 8] rows of a model_devi.out (ours or DeePMD-kit's / LAMMPS's)."""
    path = Path(path)
    if not path.exists():
        raise CathodemlError(f"{path}: no such model-deviation file")
    try:
        devi = np.loadtxt(path, ndmin=2, comments="#")
    except ValueError as exc:
        raise CathodemlError(f"{path}: not a model_devi.out ({exc})") from None
    if devi.size and devi.shape[1] < 8:
        raise CathodemlError(f"{path}: {devi.shape[1]} columns; model_devi.out has 8 ({', '.join(COLUMNS)})")
    return devi.reshape(-1, 8) if devi.size == 0 else devi[:, :8]


# ----------------------------------------------------------------------------- evaluating an ensemble


def check_compatible(models: Sequence, names: Sequence[str]) -> None:
    """Models of one ensemble differ in their parameters only (as `train --ensemble` makes them):
    one type map, one architecture and cutoff, one spin setting."""
    first = models[0]
    for m, name in zip(models[1:], names[1:]):
        if list(m.config.type_map) != list(first.config.type_map):
            raise CathodemlError(f"{name} has type map {','.join(m.config.type_map)} but {names[0]} has "
                                 f"{','.join(first.config.type_map)}; an ensemble's models must share one")
        if m.config != first.config:
            raise CathodemlError(f"{name} and {names[0]} differ in architecture, cutoff or sel; an ensemble's "
                                 "models differ only in their parameters (train them with `train --ensemble K`)")
        if (m.spin or None) != (first.spin or None):
            raise CathodemlError(f"{name} and {names[0]} have different spin settings; an ensemble's models "
                                 "must place the same virtual atoms")


@dataclasses.dataclass(frozen=True)
class Ensemble:
    """K models of one architecture evaluated together: their parameters stacked, so one vmapped,
    jitted program evaluates all K on one neighbour list."""

    config: object
    params: dict  # every leaf [K, ...]
    stats: dict

    @classmethod
    def of(cls, models: Sequence, names: Sequence[str] | None = None) -> "Ensemble":
        names = list(names) if names is not None else [f"model {i}" for i in range(len(models))]
        check_compatible(models, names)
        stack = lambda trees: jax.tree_util.tree_map(lambda *x: jnp.stack(x), *trees)  # noqa: E731
        return cls(models[0].config, stack([m.params for m in models]), stack([m.stats for m in models]))

    @property
    def size(self) -> int:
        return int(jax.tree_util.tree_leaves(self.params)[0].shape[0])

    def evaluate(self, positions, cell, nbr, moments=None, sites=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(energies [K] eV, forces [K, N, 3] eV/Å, virials [K, 3, 3] eV) of every model at one frame
        (real positions; `nbr` built on real + virtual atoms, as for one model)."""
        out = jax.device_get(_stacked_evaluate(self.config, self.params, self.stats, positions, cell, nbr, moments, sites))
        return np.asarray(out["energy"]), np.asarray(out["forces"]), np.asarray(out["virial"])


@partial(jax.jit, static_argnames="config")
def _stacked_evaluate(config, params, stats, positions, cell, nbr, moments, sites):
    from cathodeml.model import evaluate

    return jax.vmap(lambda p, s: evaluate(config, p, s, positions, cell, nbr, moments=moments, sites=sites))(params, stats)


class MDDeviation:
    """The model deviation of MD frames (`md --models`): the ensemble evaluated at each written
    frame on the neighbour data of the potential that drives the run (same cutoff and, for a spin
    model, the same current moments), as the DeePMD-kit LAMMPS pair style does every out_freq
    steps.  A frame whose max_devi_f exceeds `trust_hi` (eV/Å) is counted; with `stop` the run
    stops after it (the frames so far are valid)."""

    def __init__(self, ensemble: Ensemble, potential, cell, sites=None, trust_hi: float | None = None,
                 stop: bool = False):
        self.ensemble, self.potential, self.cell = ensemble, potential, np.asarray(cell, dtype=np.float64)
        self.sites = None if sites is None else jax.tree_util.tree_map(jnp.asarray, sites)
        self.trust_hi, self.stop = trust_hi, stop
        self.untrusted: list[int] = []  # steps of frames above trust_hi
        self._nbr = None

    def __call__(self, step: int, positions) -> np.ndarray:
        """The model_devi row [8] of the frame at `step` with real positions [N, 3] Å."""
        positions = np.asarray(positions, dtype=np.float64)
        self._nbr = self.potential.build_neighbors(positions, self.cell, 0.0, self._nbr)
        if self.sites is None:
            e, f, v = self.ensemble.evaluate(positions, self.cell, self._nbr)
        else:
            e, f, v = self.ensemble.evaluate(positions, self.cell, self._nbr.nbr, self._nbr.moments, self.sites)
        row = model_deviation(e[:, None], f[:, None], v[:, None], positions.shape[0], steps=[step])[0]
        if self.trust_hi is not None and row[4] > self.trust_hi:
            self.untrusted.append(int(step))
        return row

    @property
    def stop_now(self) -> bool:
        return self.stop and bool(self.untrusted)


# ----------------------------------------------------------------------------- candidate selection


def trust_levels(max_devi_f, lo: float, hi: float) -> np.ndarray:
    """Per frame 0 accurate (ε < lo), 1 candidate (lo ≤ ε < hi), 2 failed (ε ≥ hi), DP-GEN's split
    of max_devi_f (eV/Å): candidates go to DFT, failed frames are too far off to be trusted at all."""
    if not 0 <= lo < hi:
        raise CathodemlError(f"trust levels must satisfy 0 ≤ lo < hi, got lo {lo:g}, hi {hi:g}")
    eps = np.asarray(max_devi_f, dtype=np.float64)
    return (eps >= lo).astype(int) + (eps >= hi).astype(int)


def structure_fingerprints(positions, cells, species, n_types: int, rcut: float = 6.0, bins: int = 24) -> np.ndarray:
    """Per frame [F, P·bins] the pair-distance histograms of each species pair (i ≤ j) out to rcut (Å),
    per atom of the frame: a descriptor of local environments that needs no model, so frames
    that look alike to any potential are near each other in it."""
    from vesin import NeighborList

    pairs = [(a, b) for a in range(n_types) for b in range(a, n_types)]
    edges = np.linspace(0.0, rcut, bins + 1)
    species = np.asarray(species)
    out = np.zeros((len(positions), len(pairs) * bins))
    calc = NeighborList(cutoff=rcut, full_list=False)
    for f, (x, cell) in enumerate(zip(positions, cells)):
        i, j, d = calc.compute(np.asarray(x, np.float64), np.asarray(cell, np.float64), True, "ijd")
        ti, tj = np.minimum(species[i], species[j]), np.maximum(species[i], species[j])
        for p, (a, b) in enumerate(pairs):
            sel = (ti == a) & (tj == b)
            out[f, p * bins:(p + 1) * bins] = np.histogram(d[sel], bins=edges)[0] / len(x)
    return out


def farthest_point_selection(fingerprints, n: int, first: int = 0) -> list[int]:
    """n row indices of fingerprints [C, D], greedily each the farthest (Euclidean) from those
    already chosen, starting at row `first`: a diverse subset, deterministic."""
    fp = np.asarray(fingerprints, dtype=np.float64)
    n = min(n, fp.shape[0])
    if n <= 0:
        return []
    chosen = [int(first)]
    dist = np.linalg.norm(fp - fp[first], axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(fp - fp[nxt], axis=1))
    return chosen
