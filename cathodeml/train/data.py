"""Training data: labelled systems, the validation split, batches, sel and energy-bias statistics.

Training draws each batch from one system (all frames of a system share the atom count, so a
batch has a static shape and the jitted step compiles once per system), choosing the system with
probability proportional to its number of batches, i.e. to its frame count, and walking through
a shuffled permutation of its frames, as DeePMD-kit does.  Everything random comes from one numpy
PCG64 generator whose state, with the permutations and cursors, is part of a checkpoint, so a
restarted run draws exactly the batches the uninterrupted run would have.  Labels are kept for
*real* atoms only: virtual spin atoms (types `<El>_spin`, appended after the real atoms) are
inputs of the model, never targets.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.train.config import auto_batch_size, parse_auto

@dataclasses.dataclass
class LabelledSystem:
    """Frames of one system prepared for training or testing, real atoms only.

    atom_types [N] (indices into the model's type map); coords [nf, N, 3] Å; cells [nf, 3, 3] Å
    (rows = lattice vectors); energies [nf] eV; forces [nf, N, 3] eV/Å or None when the data has
    no force labels (energy-only frames: the force loss is off for them); virials [nf, 3, 3] eV or
    None; moments [nf, N] μB (the signed moment a spin state is judged by,
    `cathodeml.spin.state_moments`; NaN where unknown) or None, for the error breakdown.  A spin
    system also has `sites` (its virtual atoms, `cathodeml.spin.VirtualSites`) and `spin_moments`
    [nf, M] or [nf, M, 3] μB (the host moments that place them): the virtual atoms are not stored
    but placed inside the energy (`cathodeml.model.energy_forces_virial`).
    `neighbours` is filled by the trainer with the model's neighbour lists over real + virtual atoms.
    """

    name: str
    atom_types: np.ndarray
    coords: np.ndarray
    cells: np.ndarray
    energies: np.ndarray
    forces: np.ndarray | None
    virials: np.ndarray | None
    moments: np.ndarray | None
    nopbc: bool = False
    sites: object = None
    spin_moments: np.ndarray | None = None
    batch_size: int = 1
    neighbours: object = None

    @property
    def n_frames(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_real(self) -> int:
        """Number of (real) atoms, the count energies are normalised by."""
        return int(self.atom_types.shape[0])

    def all_types(self) -> np.ndarray:
        """Types of the real atoms followed by those of the virtual atoms (what the model sees)."""
        return self.atom_types if self.sites is None else self.sites.all_types(self.atom_types)

    def all_coords(self) -> np.ndarray:
        """Positions [nf, N + M, 3] Å of real and virtual atoms (for neighbour lists and statistics)."""
        return self.coords if self.sites is None else self.sites.place(self.coords, self.spin_moments)

    def select(self, frames: np.ndarray) -> "LabelledSystem":
        """The same system restricted to `frames` (index array)."""
        pick = lambda a: None if a is None else a[frames]  # noqa: E731
        return dataclasses.replace(
            self, coords=self.coords[frames], cells=self.cells[frames], energies=self.energies[frames],
            forces=pick(self.forces), virials=pick(self.virials), moments=pick(self.moments),
            spin_moments=pick(self.spin_moments), neighbours=None,
        )


def labelled_systems(dataset, where: str, need_labels: bool = True) -> list[LabelledSystem]:
    """Turn a Dataset into LabelledSystems (systems without energies are an error).

    Virtual atoms of an augmented dataset become the system's `sites` (from the augment-spin
    record; `<El>_spin` atoms without one are an error rather than a guess).  A system without
    force labels (no force.npy, e.g. single points that printed none) is kept with forces None:
    it trains and tests on energies only, never on made-up zero forces.
    """
    from cathodeml import spin

    out = []
    for s in dataset.systems:
        if s.n_frames == 0:
            continue
        if need_labels and s.energies is None:
            raise CathodemlError(f"{where}: system {s.name} has no energy labels; "
                                 "train and test need them (ingest VASP runs that finished)")
        layout = spin.read_spin_layout(s, dataset.type_map)
        if layout is None and any(spin.is_virtual_type(dataset.type_map[t]) for t in np.unique(s.atom_types)):
            raise CathodemlError(f"system {s.name} has virtual spin atoms but no augment-spin record; "
                                 "make spin datasets with `cathodeml augment-spin`")
        n_real = s.n_atoms if layout is None else layout.n_real
        bad = ~np.isfinite(s.energies)
        if s.forces is not None:
            bad |= ~np.isfinite(s.forces[:, :n_real]).all(axis=(1, 2))
        if bad.any():
            raise CathodemlError(f"{where}: system {s.name} frame {int(np.flatnonzero(bad)[0])} has a non-finite "
                                 "energy or force label; remove it (e.g. re-ingest without unconverged runs)")
        out.append(LabelledSystem(
            name=s.name, atom_types=np.asarray(s.atom_types[:n_real], dtype=np.int64),
            coords=np.asarray(s.coords[:, :n_real], dtype=np.float64),
            cells=np.asarray(s.cells, dtype=np.float64), energies=np.asarray(s.energies, dtype=np.float64),
            forces=None if s.forces is None else np.asarray(s.forces[:, :n_real], dtype=np.float64),
            virials=None if s.virials is None else np.asarray(s.virials, dtype=np.float64),
            moments=_state_moments(s, n_real), nopbc=bool(s.nopbc),
            sites=None if layout is None else layout.sites,
            spin_moments=None if layout is None else layout.moments,
        ))
    if not out:
        raise CathodemlError(f"{where}: no frames to use")
    return out


def _state_moments(system, n_real: int) -> np.ndarray | None:
    """The real atoms' spin-state moments [nf, n_real] μB (`spin.state_moments`), or None."""
    from cathodeml.spin import state_moments

    m = state_moments(system.frame_data)
    return None if m is None else m[:, :n_real]


def split_validation(systems: list[LabelledSystem], fraction: float, rng: np.random.Generator):
    """Hold out ⌈fraction·nf⌉ random frames of each system with ≥ 2 frames; return (train, valid)."""
    train, valid = [], []
    for s in systems:
        n_valid = math.ceil(fraction * s.n_frames) if s.n_frames >= 2 and fraction > 0 else 0
        order = rng.permutation(s.n_frames)
        if n_valid:
            valid.append(s.select(np.sort(order[:n_valid])))
        train.append(s.select(np.sort(order[n_valid:])))
    return train, valid


def assign_batch_sizes(systems: list[LabelledSystem], spec: int | str) -> None:
    """Set each system's batch size from an int or 'auto[:n]' (≥ n atoms per batch)."""
    for s in systems:
        s.batch_size = min(auto_batch_size(spec, s.n_real), s.n_frames)


class FrameSampler:
    """Chooses (system, frames) for each step, reproducibly and restartably.

    A system is picked with probability ∝ its number of batches (frames / batch size); its frames
    are visited in a shuffled order, reshuffled when exhausted.  `state()` / `set_state()`
    capture everything, so a restarted run continues the same sequence.
    """

    def __init__(self, systems: list[LabelledSystem], seed: int):
        self.rng = np.random.Generator(np.random.PCG64(seed))
        n_batches = np.array([s.n_frames / s.batch_size for s in systems], dtype=np.float64)
        self.probabilities = n_batches / n_batches.sum()
        self.sizes = [s.n_frames for s in systems]
        self.batch_sizes = [s.batch_size for s in systems]
        self.cursors = [0] * len(systems)
        self.orders = [self._first_order(k) for k in range(len(systems))]

    def _first_order(self, k: int) -> np.ndarray:
        return self._next_order(k)

    def _next_order(self, k: int) -> np.ndarray:
        """The shuffle of system k once its current one is used up."""
        return self.rng.permutation(self.sizes[k])

    def next(self) -> tuple[int, np.ndarray]:
        """(system index, frame indices [batch_size]) for the next step."""
        k = int(self.rng.choice(len(self.sizes), p=self.probabilities)) if len(self.sizes) > 1 else 0
        take = []
        need = self.batch_sizes[k]
        while need:
            if self.cursors[k] >= self.sizes[k]:
                self.orders[k] = self._next_order(k)
                self.cursors[k] = 0
            chunk = self.orders[k][self.cursors[k]:self.cursors[k] + need]
            self.cursors[k] += len(chunk)
            need -= len(chunk)
            take.append(chunk)
        return k, np.concatenate(take)

    def state(self) -> dict:
        """JSON-able generator state plus permutations and cursors."""
        return {"rng": self.rng.bit_generator.state, "orders": [o.tolist() for o in self.orders],
                "cursors": list(self.cursors)}

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        self.orders = [np.asarray(o, dtype=np.int64) for o in state["orders"]]
        self.cursors = [int(c) for c in state["cursors"]]


def energy_bias(systems: list[LabelledSystem], n_types: int) -> np.ndarray:
    """Per-type energy bias [n_types] (eV/atom) by least squares E_frame ≈ Σ_t n_t·b_t.

    Only real atoms count, and only types present among them are fitted; virtual spin types and
    absent types get 0.  With a single composition the minimum-norm solution spreads the energy
    over the types present (as DeePMD-kit's lstsq does); the network learns the rest.
    """
    from cathodeml.model.stats import fit_type_bias

    counts = np.concatenate([
        np.repeat(np.bincount(s.atom_types, minlength=n_types)[None].astype(np.float64), s.n_frames, axis=0)
        for s in systems])
    energies = np.concatenate([s.energies for s in systems])
    use = np.flatnonzero(counts.sum(axis=0) > 0)
    bias = np.zeros(n_types)
    bias[use] = fit_type_bias(counts[:, use], energies)
    return bias


def max_neighbour_counts(systems: list[LabelledSystem], rcut: float, n_types: int, max_frames: int = 0) -> np.ndarray:
    """Largest number of neighbours of each type within `rcut` (Å) around any atom, over frames.

    Counts real and virtual atoms alike (virtual atoms are neighbours in the descriptor).
    `max_frames` > 0 limits the frames examined per system (evenly spaced).
    """
    from vesin import NeighborList

    finder = NeighborList(cutoff=rcut, full_list=True)
    best = np.zeros(n_types, dtype=np.int64)
    for s in systems:
        frames = np.arange(s.n_frames)
        if max_frames and s.n_frames > max_frames:
            frames = np.unique(np.linspace(0, s.n_frames - 1, max_frames).astype(int))
        coords, types = s.all_coords()[frames], s.all_types()
        for f, xyz in zip(frames, coords):
            box = np.zeros((3, 3)) if s.nopbc else s.cells[f]
            i, j = finder.compute(xyz, box, not s.nopbc, quantities="ij")
            counts = np.zeros((types.size, n_types), dtype=np.int64)
            np.add.at(counts, (i, types[j]), 1)
            best = np.maximum(best, counts.max(axis=0))
    return best


def auto_sel(systems: list[LabelledSystem], rcut: float, n_types: int, spec: str) -> list[int]:
    """sel from data: max neighbour count per type × factor, rounded up to a multiple of 4."""
    factor = parse_auto(spec, 1.1)
    counts = max_neighbour_counts(systems, rcut, n_types)
    return [max(4, 4 * ((int(c * factor) + 3) // 4)) for c in counts]
