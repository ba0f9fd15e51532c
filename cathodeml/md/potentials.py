"""The small interface between MD and any force field, and the analytic force fields it is tested with.

MD needs two things from a force field: a host-side builder of neighbour data for the current
positions (cutoff + skin, static padded shapes so the jitted loop does not recompile) and a
jittable energy of positions, cell and that neighbour data; forces are −∂E/∂r by `jax.grad`.
Keeping it that small lets the integrators and the runner be tested on potentials whose answers
are known (harmonic wells, Lennard-Jones) and lets the DeepPot-SE model (with its virtual spin
atoms placed from the hosts inside the model's energy) plug in through one adapter (`deeppot`
below).  Pair lists come from vesin, which handles triclinic cells smaller
than twice the cutoff; pair vectors are rebuilt in JAX from the stored integer cell shifts.

Units: positions and cells Å (cell rows are lattice vectors), energies eV, forces eV/Å.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.geometry import wrap


@dataclasses.dataclass(frozen=True)
class Potential:
    """A force field for MD.

    energy(positions [N,3] Å, cell [3,3] Å, neighbors) -> eV, jittable and differentiable.
    build_neighbors(positions [N,3] Å numpy, cell [3,3] Å, skin Å, previous) -> neighbours pytree
    (host side; `previous` is the last list or None, so capacities only grow).
    cutoff: interaction range (Å); 0 when no neighbour data is needed.
    closest_distance(positions, cell, neighbors) -> Å: the shortest distance between two real
    atoms among the listed pairs (jittable), so the MD loop can stop the step atoms collide;
    None when the potential has no pairs (the check is then skipped).
    spin: for a spin model, the SpinState whose moments the next `build_neighbors` uses.
    """

    energy: Callable[[jax.Array, jax.Array, Any], jax.Array]
    build_neighbors: Callable[[np.ndarray, np.ndarray, float, Any], Any]
    cutoff: float
    name: str = ""
    closest_distance: Callable[[jax.Array, jax.Array, Any], jax.Array] | None = None
    spin: Any = None  # a spin DeepPot's SpinState (the host moments), else None


def energy_and_forces(potential: Potential, positions, cell, neighbors) -> tuple[jax.Array, jax.Array]:
    """(E in eV, F = −∂E/∂r [N,3] in eV/Å) at positions (Å) for a cell (Å) and neighbour data."""
    energy, grad = jax.value_and_grad(potential.energy)(positions, cell, neighbors)
    return energy, -grad


def _pytree(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@_pytree
@dataclasses.dataclass(frozen=True)
class PairList:
    """Half pair list padded to a fixed capacity: i, j [P] atom indices, shifts [P,3] integer cell
    shifts (as float) so that r_ij = x_j − x_i + shifts·cell; mask [P] True for real pairs."""

    i: jax.Array
    j: jax.Array
    shifts: jax.Array
    mask: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.i.shape[0])


def padded_capacity(n: int, margin: float = 1.25) -> int:
    """Slots for n entries: n·margin rounded up to m·2^k with 4 ≤ m ≤ 7 (steps of ≤ 25 %), at least 8.

    Coarse steps mean that a list which has to grow rarely grows again soon after (each new
    shape is one recompilation of the MD kernel).
    """
    need = max(int(np.ceil(n * margin)), 8)
    k = max(need.bit_length() - 3, 0)
    return -(-need // (1 << k)) * (1 << k)


def build_pair_list(positions, cell, cutoff: float, previous: PairList | None = None) -> PairList:
    """All pairs closer than `cutoff` (Å) under periodic boundaries, each once, for unwrapped
    positions [N,3] Å and cell [3,3] Å.  Capacity is the previous one when that suffices, else
    `padded_capacity` of the pair count, so a list never silently drops pairs."""
    from vesin import NeighborList

    positions = np.asarray(positions, dtype=float)
    cell = np.asarray(cell, dtype=float)
    wrapped, image = wrap(positions, cell)
    i, j, s = NeighborList(cutoff=cutoff, full_list=False).compute(
        points=wrapped, box=cell, periodic=True, quantities="ijS")
    # r_ij = w_j − w_i + S·cell = x_j − x_i + (S − n_j + n_i)·cell for unwrapped x = w + n·cell.
    shifts = s + image[i] - image[j]
    n_pairs = len(i)
    capacity = previous.capacity if previous is not None else 0
    if n_pairs > capacity:
        capacity = padded_capacity(n_pairs)
    pad = capacity - n_pairs
    return PairList(
        i=jnp.asarray(np.concatenate([i, np.zeros(pad, dtype=i.dtype)]).astype(np.int32)),
        j=jnp.asarray(np.concatenate([j, np.zeros(pad, dtype=j.dtype)]).astype(np.int32)),
        shifts=jnp.asarray(np.concatenate([shifts, np.zeros((pad, 3))]).astype(np.float64)),
        mask=jnp.asarray(np.concatenate([np.ones(n_pairs, bool), np.zeros(pad, bool)])),
    )


def pair_distances(positions: jax.Array, cell: jax.Array, pairs: PairList) -> jax.Array:
    """|r_ij| in Å for every slot of the pair list (padding slots give 1.0, never 0)."""
    d = positions[pairs.j] - positions[pairs.i] + pairs.shifts @ cell
    r2 = jnp.where(pairs.mask, jnp.sum(d * d, axis=-1), 1.0)
    return jnp.sqrt(r2)


def lennard_jones_pair_energy(r, epsilon: float, sigma: float, cutoff: float):
    """Shifted-force Lennard-Jones pair energy (eV) at distance r (Å): the 12-6 form minus its
    value and slope at the cutoff, so energy and force both go continuously to zero there."""

    def lj(x):
        sr6 = (sigma / x) ** 6
        return 4.0 * epsilon * (sr6 * sr6 - sr6)

    e_c = lj(cutoff)
    de_c = jax.grad(lj)(jnp.asarray(cutoff, dtype=jnp.float64))
    return jnp.where(r < cutoff, lj(r) - e_c - (r - cutoff) * de_c, 0.0)


def lennard_jones(epsilon: float, sigma: float, cutoff: float) -> Potential:
    """A one-species shifted-force Lennard-Jones potential: ε in eV, σ and cutoff in Å."""

    def energy(positions, cell, pairs):
        r = pair_distances(positions, cell, pairs)
        e = lennard_jones_pair_energy(r, epsilon, sigma, cutoff)
        return jnp.sum(jnp.where(pairs.mask, e, 0.0))

    def build(positions, cell, skin, previous):
        return build_pair_list(positions, cell, cutoff + skin, previous)

    def closest(positions, cell, pairs):
        return jnp.min(jnp.where(pairs.mask, pair_distances(positions, cell, pairs), jnp.inf))

    return Potential(energy=energy, build_neighbors=build, cutoff=cutoff, name=f"lennard-jones(ε={epsilon} eV, σ={sigma} Å)",
                     closest_distance=closest)


def harmonic_wells(centers, spring_constants) -> Potential:
    """Independent 3D harmonic wells E = Σ ½ k_i |x_i − c_i|²: centres [N,3] Å, k [N] eV/Å².
    Each atom is an isotropic oscillator with ω_i = sqrt(k_i/m_i); no neighbour data."""
    centers = jnp.asarray(centers, dtype=jnp.float64)
    k = jnp.asarray(spring_constants, dtype=jnp.float64)

    def energy(positions, cell, _neighbors):
        return 0.5 * jnp.sum(k[:, None] * (positions - centers) ** 2)

    return Potential(energy=energy, build_neighbors=lambda *args: None, cutoff=0.0, name="harmonic wells")


# ------------------------------------------------------------------------- DeepPot-SE adapter


_DEEPPOTS: dict = {}


def _digest(*arrays) -> str:
    import hashlib

    h = hashlib.sha256()
    for leaf in arrays:
        for x in jax.tree_util.tree_leaves(leaf):
            a = np.ascontiguousarray(np.asarray(x))
            h.update(str((a.dtype, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


@_pytree
@dataclasses.dataclass(frozen=True)
class SpinNeighbors:
    """A spin model's neighbour data: the list of real + virtual atoms and the host moments [M] μB
    it was built with.  The moments travel as data, not as a constant of the compiled energy, so
    changing them (`md --spin-search`) costs a list rebuild, not a recompilation."""

    nbr: Any
    moments: jax.Array

    @property
    def capacity(self):
        return self.nbr.capacity


class SpinState:
    """The host moments [M] μB a spin DeepPot places its virtual atoms with, changeable between MD
    segments (the next neighbour build uses them)."""

    def __init__(self, moments):
        self.moments = np.array(moments, dtype=np.float64)


def default_chunk(compressed: bool = False) -> int:
    """Atoms per chunk of the MD energy (`model.chunked_energy`) when the user does not say.  On CPU,
    512-atom chunks had the fastest energy + forces kernel we measured for the exact nets (12,288 water
    atoms: whole cell 5.0 GB peak and 4,900 atom-evaluations/s; 512-atom chunks 0.76 GB and 8,300/s;
    128-256 no faster, benchmarks/BENCHMARKS.md "md memory").  A compressed model on CPU runs its tables
    in the fused kernel (`model.table_kernel`), which holds no [slots, M] array, so its chunks only bound
    the fitting net's activations: 1,024 (1,536 water atoms: 512 about 10 % slower, 2,048 and the whole
    cell no faster, 16 many times slower: every chunk is a kernel call).  An accelerator wants larger chunks to stay busy (16,384: not measured)."""
    if jax.default_backend() != "cpu":
        return 16384
    return 1024 if compressed else 512


def deeppot(model, atom_types, moments=None, margin: float = 1.25, chunk: int | None = None) -> Potential:
    """A DeepPot-SE `cathodeml.model.Model` as an MD potential for real atoms of `atom_types` [N]
    (indices into the model's real type map, `spin.model_real_type_map`).  A spin model needs the
    atoms' `moments` ([N] μB, or [N, 3]): its virtual atoms are placed inside the model's energy
    (`cathodeml.model.energy`), so −∂E/∂R of a host includes its virtual atom's force.  The moments
    are held in `potential.spin` (a SpinState) and enter the energy through the neighbour data
    (SpinNeighbors), so they may change between segments of a run.  A plain model ignores `moments`.

    The same model and atoms give the same Potential object (its moments reset to the given ones),
    so a second run in one process (a restart, the tests, another --magmom) reuses the compiled
    MD kernels.  chunk: atoms per chunk of the energy evaluation (`model.chunked_energy`: bounded
    memory, forces in the same pass); None: `default_chunk(compressed)`; 0: the whole cell at once."""
    from cathodeml import spin

    sites = spin.model_virtual_sites(model.type_map, model.spin, atom_types)
    host_m = None if sites is None else spin.host_moments(sites, moments)
    spin_key = None if sites is None else _digest(sites.host_index, sites.types, sites.eta, sites.d) + sites.mode
    chunk = default_chunk(bool(model.config.tables)) if chunk is None else int(chunk)
    key = (model.config, _digest(model.params, model.stats), np.asarray(atom_types).tobytes(), spin_key, margin, chunk)
    if key not in _DEEPPOTS:
        if len(_DEEPPOTS) >= 4:
            _DEEPPOTS.pop(next(iter(_DEEPPOTS)))
        _DEEPPOTS[key] = _deeppot(model, atom_types, sites, host_m, margin, chunk)
    potential = _DEEPPOTS[key]
    if sites is not None:
        potential.spin.moments = np.array(host_m, dtype=np.float64)
    return potential


def _deeppot(model, atom_types, sites, host_m, margin: float, chunk: int) -> Potential:
    from cathodeml.model import build_neighbor_list, energy as model_energy, with_capacity
    from cathodeml.model.potential import chunked_energy

    config = model.config
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    stats = jax.tree_util.tree_map(jnp.asarray, model.stats)
    atom_types = np.asarray(atom_types, dtype=np.int64)
    n_real = atom_types.size
    all_types = atom_types if sites is None else sites.all_types(atom_types)
    sites_j = None if sites is None else jax.tree_util.tree_map(jnp.asarray, sites)
    state = None if sites is None else SpinState(host_m)
    whole = lambda *args, **kw: model_energy(config, params, stats, *args, **kw)  # noqa: E731
    evaluate = chunked_energy(config, params, stats, chunk) if chunk else whole

    def energy(positions, cell, nbr):
        if sites is None:
            e = evaluate(positions, cell, nbr)
        else:
            e = evaluate(positions, cell, nbr.nbr, moments=nbr.moments, sites=sites_j)
        return jnp.asarray(e, jnp.float64)

    def build(positions, cell, skin, previous):
        full = np.asarray(positions, dtype=np.float64)
        if sites is not None:
            full = sites.place(full, state.moments)
        nbr = build_neighbor_list(full, cell, all_types, config.rcut, config.ntypes, skin=skin,
                                  capacity=None if previous is None else previous.capacity, margin=margin)
        padded = tuple(padded_capacity(c, 1.0) for c in nbr.capacity)
        if padded != nbr.capacity:
            nbr = with_capacity(nbr, padded)
        nbr = jax.tree_util.tree_map(jnp.asarray, nbr)
        return nbr if sites is None else SpinNeighbors(nbr, jnp.asarray(state.moments))

    def closest(positions, cell, data):
        nbr = data if sites is None else data.nbr
        idx = nbr.index[:n_real]
        real = (idx >= 0) & (idx < n_real)
        diff = positions[jnp.where(real, idx, 0)] + jnp.einsum("nck,kl->ncl", nbr.shift[:n_real].astype(positions.dtype), cell) \
            - positions[:, None, :]
        return jnp.sqrt(jnp.min(jnp.where(real, jnp.sum(diff * diff, axis=-1), jnp.inf)))

    name = f"DeepPot-SE se_e2_a (rcut {config.rcut:g} Å{', spin' if sites is not None else ''})"
    return Potential(energy=energy, build_neighbors=build, cutoff=config.rcut, name=name, closest_distance=closest,
                     spin=state)
