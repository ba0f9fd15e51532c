"""Host-side neighbour candidate lists with static, padded shapes for the jitted energy.

Finding neighbours is irregular work that XLA does badly, and the jitted energy must not change
shape from frame to frame.  So the list is built on the host (vesin's cell list, which handles
triclinic cells of any size, including cells narrower than 2·cutoff where an atom meets several
images of the same neighbour, and free clusters), once per frame for training and once per many
steps in MD: it holds every pair within `rcut + skin`, grouped by neighbour type into blocks of
fixed capacity, each pair as (neighbour index, integer image shift).  The energy then recomputes
the displacements from the current positions and cell (so gradients flow to both), keeps pairs
inside `rcut` and picks the `sel[t]` nearest of each type itself: the list stays valid while no
atom has moved more than skin/2 since it was built (`needs_rebuild`).  The capacity never
silently truncates: when atoms need more slots than asked for, the list grows (new shapes, one
recompilation), which the caller sees as a changed `capacity`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import CathodemlError


@partial(jax.tree_util.register_dataclass,
         data_fields=["types", "order", "index", "shift", "reference_positions"],
         meta_fields=["capacity", "type_counts", "cutoff", "skin"])
@dataclass(frozen=True)
class NeighborList:
    """Candidate neighbours of every atom, padded to static shapes (a JAX pytree).

    types               [N] int   type index of each atom
    order               [N] int   atom indices sorted by type (stable): centres are evaluated per type
    index               [N, C] int  neighbour atom index, -1 for an empty slot; C = Σ capacity, slots
                        grouped by neighbour type (block t has capacity[t] slots)
    shift               [N, C, 3] int  image of the neighbour: r_j + shift·cell − r_i is the displacement
    reference_positions [N, 3] Å  positions when built (for `needs_rebuild`)
    capacity            tuple[int] slots per neighbour type (static)
    type_counts         tuple[int] atoms of each type (static)
    cutoff, skin        Å, the list holds all pairs within cutoff = rcut + skin when built (static)

    Lists of several frames of one system (`build_neighbor_lists`) carry a leading frame axis on
    every array field, ready for `jax.vmap(..., in_axes=0)`.
    """

    types: np.ndarray
    order: np.ndarray
    index: np.ndarray
    shift: np.ndarray
    reference_positions: np.ndarray
    capacity: tuple
    type_counts: tuple
    cutoff: float
    skin: float

    @property
    def n_atoms(self) -> int:
        return int(self.index.shape[-2])


def _pairs(positions, cell, periodic: bool, cutoff: float):
    """All ordered pairs (i, j, shift, distance) with |r_j + shift·cell − r_i| < cutoff, i≠j or shift≠0."""
    from vesin import NeighborList as VesinNeighborList

    nl = VesinNeighborList(cutoff=float(cutoff), full_list=True)
    box = np.asarray(cell, dtype=np.float64) if periodic else np.zeros((3, 3))
    i, j, S, d = nl.compute(np.asarray(positions, dtype=np.float64), box, bool(periodic), "ijSd")
    return i.astype(np.int64), j.astype(np.int64), S.astype(np.int32), d


def _check_inputs(positions, cell, types, ntypes):
    positions = np.asarray(positions, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise CathodemlError(f"positions must have shape [n_atoms, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise CathodemlError("positions contain NaN or inf; check the structure or the MD run")
    types = np.asarray(types, dtype=np.int64).reshape(-1)
    if types.size != positions.shape[0]:
        raise CathodemlError(f"{types.size} atom types for {positions.shape[0]} atoms")
    if types.size and (types.min() < 0 or types.max() >= ntypes):
        raise CathodemlError(f"atom types must lie in 0..{ntypes - 1} (the model's type map), got "
                             f"{types.min()}..{types.max()}")
    periodic = cell is not None and np.any(np.asarray(cell) != 0)
    if periodic:
        cell = np.asarray(cell, dtype=np.float64).reshape(3, 3)
        if abs(np.linalg.det(cell)) < 1e-8:
            raise CathodemlError("the cell is singular (zero volume); give three independent lattice vectors "
                                 "or an all-zero cell for a non-periodic system")
    return positions, (cell if periodic else None), types


def _group_pairs(i, j, S, d, types, ntypes, n_atoms):
    """Sort pairs by (centre, neighbour type, distance); return them with per-(centre, type) counts and ranks."""
    tj = types[j]
    order = np.lexsort((d, tj, i))
    i, j, S, tj = i[order], j[order], S[order], tj[order]
    group = i * ntypes + tj
    counts = np.bincount(group, minlength=n_atoms * ntypes).reshape(n_atoms, ntypes)
    starts = np.concatenate([[0], np.cumsum(counts.ravel())[:-1]])
    rank = np.arange(i.size) - starts[group]
    return (i, j, S, tj, rank), counts


def _fill(grouped, capacity, n_atoms):
    i, j, S, tj, rank = grouped
    offsets = np.concatenate([[0], np.cumsum(capacity)])
    width = int(offsets[-1])
    index = np.full((n_atoms, width), -1, dtype=np.int32)
    shift = np.zeros((n_atoms, width, 3), dtype=np.int32)
    slot = offsets[tj] + rank
    index[i, slot] = j
    shift[i, slot] = S
    return index, shift


def _capacity(needed, capacity, margin):
    needed = np.asarray(needed, dtype=np.int64)
    if capacity is None:
        return tuple(int(np.ceil(n * margin)) for n in needed)
    capacity = tuple(int(c) for c in capacity)
    if len(capacity) != needed.size:
        raise CathodemlError(f"capacity has {len(capacity)} entries for {needed.size} types")
    return tuple(max(c, int(np.ceil(n * margin)) if n > c else c) for c, n in zip(capacity, needed))


def _type_layout(types, ntypes):
    order = np.argsort(types, kind="stable").astype(np.int32)
    counts = tuple(int(c) for c in np.bincount(types, minlength=ntypes))
    return order, counts


def build_neighbor_list(positions, cell, types, rcut: float, ntypes: int, *, skin: float = 0.0,
                        capacity=None, margin: float = 1.0) -> NeighborList:
    """Neighbour candidates of one frame within rcut + skin (Å).

    positions [N, 3] Å; cell [3, 3] Å with rows the lattice vectors, or None / all zeros for a
    non-periodic system; types [N] int in 0..ntypes-1.  `capacity` (slots per neighbour type)
    keeps the shapes of a previous list; it grows, never truncates, if the atoms need more.
    Without it the capacity is the largest count found × `margin` (use ~1.2 in MD).
    """
    positions, cell, types = _check_inputs(positions, cell, types, ntypes)
    cutoff = float(rcut) + float(skin)
    i, j, S, d = _pairs(positions, cell, cell is not None, cutoff)
    grouped, counts = _group_pairs(i, j, S, d, types, ntypes, positions.shape[0])
    cap = _capacity(counts.max(axis=0) if counts.size else np.zeros(ntypes, int), capacity, margin)
    index, shift = _fill(grouped, cap, positions.shape[0])
    order, type_counts = _type_layout(types, ntypes)
    return NeighborList(types=types.astype(np.int32), order=order, index=index, shift=shift,
                        reference_positions=positions, capacity=cap, type_counts=type_counts,
                        cutoff=cutoff, skin=float(skin))


def build_neighbor_lists(positions, cells, types, rcut: float, ntypes: int, *, skin: float = 0.0,
                         capacity=None, margin: float = 1.0) -> NeighborList:
    """Lists for a batch of frames of one system, stacked on a leading frame axis with one capacity.

    positions [nf, N, 3] Å; cells [nf, 3, 3] Å (or None / zeros for non-periodic); types [N].
    """
    positions = np.asarray(positions, dtype=np.float64)
    nf = positions.shape[0]
    cells = [None] * nf if cells is None else np.asarray(cells, dtype=np.float64).reshape(nf, 3, 3)
    grouped_all, needed = [], np.zeros(ntypes, dtype=np.int64)
    cutoff = float(rcut) + float(skin)
    checked_types = None
    for f in range(nf):
        pos, cell, checked_types = _check_inputs(positions[f], cells[f], types, ntypes)
        i, j, S, d = _pairs(pos, cell, cell is not None, cutoff)
        grouped, counts = _group_pairs(i, j, S, d, checked_types, ntypes, pos.shape[0])
        grouped_all.append(grouped)
        if counts.size:
            needed = np.maximum(needed, counts.max(axis=0))
    cap = _capacity(needed, capacity, margin)
    n_atoms = positions.shape[1]
    filled = [_fill(g, cap, n_atoms) for g in grouped_all]
    order, type_counts = _type_layout(checked_types, ntypes)
    return NeighborList(types=np.tile(checked_types.astype(np.int32), (nf, 1)), order=np.tile(order, (nf, 1)),
                        index=np.stack([f[0] for f in filled]), shift=np.stack([f[1] for f in filled]),
                        reference_positions=positions, capacity=cap, type_counts=type_counts,
                        cutoff=cutoff, skin=float(skin))


def needs_rebuild(nbr: NeighborList, positions):
    """True (a traced bool, jittable) once some atom moved more than skin/2 (Å) since the build.

    Positions must be continuous since the build (do not wrap them into the cell in between).
    """
    disp = positions - nbr.reference_positions
    return jnp.max(jnp.sum(disp * disp, axis=-1)) > (0.5 * nbr.skin) ** 2


def count_within_cutoff(nbr: NeighborList, positions, cell, rcut: float) -> np.ndarray:
    """Host helper: [N, ntypes] number of neighbours of each type within rcut (Å) now.

    Compare with `sel` to warn when DeePMD-style truncation drops neighbours.
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    idx = np.asarray(nbr.index)
    mask = idx >= 0
    disp = positions[np.where(mask, idx, 0)] + np.asarray(nbr.shift) @ cell - positions[:, None, :]
    inside = mask & (np.sum(disp * disp, axis=-1) < rcut * rcut)
    offsets = np.concatenate([[0], np.cumsum(nbr.capacity)])
    return np.stack([inside[:, a:b].sum(axis=1) for a, b in zip(offsets[:-1], offsets[1:])], axis=1)


def with_capacity(nbr: NeighborList, capacity) -> NeighborList:
    """The same list re-padded to a larger capacity per type (for batching lists built apart)."""
    capacity = tuple(int(c) for c in capacity)
    if any(c < o for c, o in zip(capacity, nbr.capacity)):
        raise ValueError("with_capacity can only grow a list")
    old = np.concatenate([[0], np.cumsum(nbr.capacity)])
    lead = nbr.index.shape[:-1]
    blocks_i, blocks_s = [], []
    for t, c in enumerate(capacity):
        bi = np.asarray(nbr.index)[..., old[t]:old[t + 1]]
        bs = np.asarray(nbr.shift)[..., old[t]:old[t + 1], :]
        pad = c - bi.shape[-1]
        blocks_i.append(np.concatenate([bi, np.full((*lead, pad), -1, np.int32)], axis=-1))
        blocks_s.append(np.concatenate([bs, np.zeros((*lead, pad, 3), np.int32)], axis=-2))
    return dataclasses.replace(nbr, index=np.concatenate(blocks_i, axis=-1),
                               shift=np.concatenate(blocks_s, axis=-2), capacity=capacity)
