"""Energy, forces and virial of an se_e2_a model: one pure function, everything else by autodiff.

`atomic_energies` is the only place the model is written down; the total energy is its sum,
forces are −∂E/∂r and the virial is −∂E/∂ε for a homogeneous strain r → r(1+ε), cell → cell(1+ε)
(the definition DeePMD-kit and LAMMPS use, valid for periodic and free systems alike), all by
`jax.grad`.  Every function takes the frozen `ModelConfig` first (static under jit), then the
trainable `params`, the fixed `stats`, positions, cell and a `NeighborList`, so it vmaps over
frames and differentiates w.r.t. weights, positions and strain without special cases.  The
evaluation dtype is config.precision: inputs are cast on entry.  Units: Å in, eV and eV/Å out.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.model.config import ModelConfig
from cathodeml.model.descriptor import descriptor_of_centres, neighbor_blocks, slots_interchangeable
from cathodeml.model.neighbors import NeighborList
from cathodeml.model.nn import fitting_net, init_embedding_net, init_fitting_net


def init_params(config: ModelConfig, key) -> dict:
    """Fresh trainable weights, initialised as DeePMD-kit does (see nn.init_layer).

    Returns {"embedding": [net]*n_embedding_nets, "fitting": [net]*ntypes}, a net being a list of
    layers {"w", "b"[, "idt"]}; params["embedding"][config.embedding_index(ti, tj)] is the net for
    centre type ti and neighbour type tj.  Stored in float64 whatever config.precision says.
    """
    k_emb, k_fit = jax.random.split(key)
    emb_keys = jax.random.split(k_emb, config.n_embedding_nets)
    fit_keys = jax.random.split(k_fit, config.ntypes)
    return {
        "embedding": [init_embedding_net(k, 1, config.embedding_neurons, config.embedding_resnet_dt)
                      for k in emb_keys],
        "fitting": [init_fitting_net(k, config.dim_descriptor, config.fitting_neurons, config.fitting_resnet_dt)
                    for k in fit_keys],
    }


def default_stats(config: ModelConfig) -> dict:
    """Neutral statistics: davg 0, dstd 1 ([ntypes, Σsel, 4]), type_bias 0 eV ([ntypes])."""
    return {
        "davg": np.zeros((config.ntypes, config.nnei, 4)),
        "dstd": np.ones((config.ntypes, config.nnei, 4)),
        "type_bias": np.zeros(config.ntypes),
    }


def _cast(config: ModelConfig, tree):
    dtype = config.dtype
    return jax.tree_util.tree_map(
        lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)


def _cell(cell, dtype):
    return jnp.zeros((3, 3), dtype) if cell is None else jnp.asarray(cell, dtype).reshape(3, 3)


def atomic_energies(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList):
    """Energy of each atom (eV), [N]: fitting net of its type on its descriptor + type_bias[type]
    (0 for atoms of config.atom_exclude_types, whose descriptors are not computed).

    positions [N, 3] Å (all atoms, virtual spin atoms included); cell [3, 3] Å rows = lattice
    vectors, or None / zeros for a free system; nbr from `build_neighbor_list` for these atoms.
    """
    params, stats = _cast(config, params), _cast(config, stats)
    positions = jnp.asarray(positions, config.dtype)
    cell = _cell(cell, config.dtype)
    e = jnp.zeros(positions.shape[0], config.dtype)
    start = 0
    for t, count in enumerate(nbr.type_counts):
        centres = nbr.order[start:start + count]
        start += count
        if count and t not in config.atom_exclude_types:
            e = e.at[centres].set(_centre_energies(config, params, stats, positions, cell, nbr, centres, t))
    return e


def centre_energies(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList, centres,
                    centre_type: int):
    """Energies (eV) [n] of the atoms `centres` [n] (indices into positions), all of `centre_type`:
    the same numbers `atomic_energies` gives them, without computing any other atom (a local energy
    change, e.g. of one spin flip, needs only the atoms it reaches).  0 for an excluded type."""
    if centre_type in config.atom_exclude_types:
        return jnp.zeros(jnp.shape(centres)[0], config.dtype)
    params, stats = _cast(config, params), _cast(config, stats)
    return _centre_energies(config, params, stats, jnp.asarray(positions, config.dtype), _cell(cell, config.dtype),
                            nbr, centres, centre_type)


def _centre_energies(config, params, stats, positions, cell, nbr, centres, t):
    # the sort-free selection pays off on MD lists (built with a skin: more candidates than slots); lists
    # for training and inference keep the sorted one, with no branch under vmap
    order_free = slots_interchangeable(config, stats, t) if nbr.skin > 0 else False
    blocks = neighbor_blocks(config, positions, cell, nbr, centres, order_free)
    d = descriptor_of_centres(config, params, stats, blocks, t)
    return fitting_net(params["fitting"][t], d, config.activation)[:, 0] + stats["type_bias"][t]


def energy(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList, *,
           moments=None, sites=None):
    """Total potential energy (eV) of one frame.

    Without `sites`: positions [N, 3] Å are all the atoms the list was built on.  With `sites`
    (a `cathodeml.spin.VirtualSites`, from `spin.model_virtual_sites`): positions are the N real
    atoms only and `moments` their hosts' moments ([M] or [M, 3] μB, `spin.host_moments`); the
    virtual atoms are placed here, from the real positions, so every derivative of this energy
    with respect to real positions already carries the virtual atoms' forces (∂R'/∂R_host = 1).
    The list is built on real + virtual atoms (`spin.VirtualSites.place`).
    """
    if sites is not None:
        positions = sites.place(jnp.asarray(positions), moments)
    return jnp.sum(atomic_energies(config, params, stats, positions, cell, nbr))


def _derivatives(config, params, stats, positions, cell, nbr, moments, sites, virial: bool):
    """The one strain derivative: (E, per-atom energies of the real atoms, F = −∂E/∂r, W = −∂E/∂ε).

    r → r(1+ε), cell → cell(1+ε) for the real atoms; the virtual atoms are placed from the
    strained real positions with an unstrained offset η·S + d (DeePMD-kit's spin virial).  Each
    virtual atom's energy is counted on its host, so the per-atom energies sum to E.
    """
    dtype = config.dtype
    positions = jnp.asarray(positions, dtype)
    cell = _cell(cell, dtype)
    n = positions.shape[0]

    def strained(pos, strain):
        deform = jnp.eye(3, dtype=dtype) + strain
        pos = pos @ deform
        if sites is not None:
            pos = sites.place(pos, moments)
        ae = atomic_energies(config, params, stats, pos, cell @ deform, nbr)
        if sites is not None:
            ae = ae[:n].at[sites.host_index].add(ae[n:])
        return jnp.sum(ae), ae

    zero = jnp.zeros((3, 3), dtype)
    if virial:
        (e, ae), (dpos, dstrain) = jax.value_and_grad(strained, argnums=(0, 1), has_aux=True)(positions, zero)
    else:
        (e, ae), dpos = jax.value_and_grad(strained, has_aux=True)(positions, zero)
        dstrain = zero
    return e, ae, -dpos, -dstrain


@partial(jax.jit, static_argnames=("config", "virial"))
def energy_forces_virial(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList, *,
                         moments=None, sites=None, virial: bool = True):
    """(E eV, forces [N, 3] eV/Å, virial [3, 3] eV) of one frame: the energy path of every command.

    forces = −∂E/∂r; virial W = −∂E/∂ε with r → r(1+ε), cell → cell(1+ε) (DeePMD-kit's sign:
    W = Σ r_ij ⊗ F_ij over pairs, stress σ = −W/V); zeros when `virial` is False (cheaper).
    With `sites` and `moments` (see `energy`) positions and forces are the real atoms'; the
    force on a magnetic atom includes its virtual atom's.  vmaps over frames.
    """
    e, _, f, w = _derivatives(config, params, stats, positions, cell, nbr, moments, sites, virial)
    return e, f, w


@partial(jax.jit, static_argnames="config")
def evaluate(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList, *,
             moments=None, sites=None) -> dict:
    """{"energy" eV, "forces" [N,3] eV/Å, "virial" [3,3] eV, "atomic_energies" [N] eV} of one
    frame in one pass, as `energy_forces_virial` (a virtual atom's energy counted on its host)."""
    e, ae, f, w = _derivatives(config, params, stats, positions, cell, nbr, moments, sites, True)
    return {"energy": e, "forces": f, "virial": w, "atomic_energies": ae}


def chunked_energy(config: ModelConfig, params: dict, stats: dict, chunk: int):
    """`energy` for large cells in bounded memory: a function (positions, cell, nbr, moments=None,
    sites=None) -> E (eV) whose gradient with respect to positions is −F.

    Why.  The energy of a whole cell holds every atom's embedding activations (and their
    derivatives) at once, ~0.4 MB per atom for the water-sized net in float64: 10 GB at 24,000
    atoms.  Here each centre type is evaluated `chunk` atoms at a time inside one `lax.scan`, and
    each chunk's forces are taken in the same pass (reverse mode per chunk, summed into [N, 3]), so
    peak memory is one chunk's activations whatever the cell size, and no activation is recomputed
    (a gradient-checkpointed map would evaluate every chunk twice).  The gradient is supplied as a
    custom VJP with respect to positions only: the cell, the neighbour list and the moments get zero
    cotangents, and the weights are closed over (differentiating through them is an error), so
    this is for MD and inference, not training or virials.  Same numbers as `energy` up to summation
    order (`tests/test_md_deeppot.py`).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of atoms, got {chunk}")
    params_c, stats_c = _cast(config, params), _cast(config, stats)

    def value_and_force_grad(positions, cell, nbr, moments, sites):
        positions = jnp.asarray(positions, config.dtype)
        cell = _cell(cell, config.dtype)
        place = (lambda p: p) if sites is None else (lambda p: sites.place(p, moments))  # noqa: E731
        total, grad = jnp.zeros((), config.dtype), jnp.zeros_like(positions)
        start = 0
        for t, count in enumerate(nbr.type_counts):
            centres = nbr.order[start:start + count]
            start += count
            if not count or t in config.atom_exclude_types:
                continue
            n_chunks = -(-count // chunk)
            width = min(chunk, count)
            padded = jnp.concatenate([centres, jnp.repeat(centres[:1], n_chunks * width - count)])
            valid = np.arange(n_chunks * width) < count

            def part(pos, idx, keep, t=t):
                e = _centre_energies(config, params_c, stats_c, place(pos), cell, nbr, idx, t)
                return jnp.sum(jnp.where(keep, e, 0.0))

            def body(carry, xs, part=part):
                e, g = jax.value_and_grad(part)(positions, *xs)
                return (carry[0] + e, carry[1] + g), None

            (total, grad), _ = jax.lax.scan(body, (total, grad), (padded.reshape(n_chunks, width),
                                                                   valid.reshape(n_chunks, width)))
        return total, grad

    @jax.custom_vjp
    def chunked(positions, cell, nbr, moments=None, sites=None):
        return value_and_force_grad(positions, cell, nbr, moments, sites)[0]

    def forward(positions, cell, nbr, moments=None, sites=None):
        e, grad = value_and_force_grad(positions, cell, nbr, moments, sites)
        return e, (grad, cell, nbr, moments, sites)

    def backward(saved, ct):
        grad, cell, nbr, moments, sites = saved
        zeros = lambda tree: jax.tree_util.tree_map(  # noqa: E731
            lambda x: jnp.zeros_like(x) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)
            else np.zeros(np.shape(x), jax.dtypes.float0), tree)
        return (ct * grad, zeros(cell), zeros(nbr), zeros(moments), zeros(sites))

    chunked.defvjp(forward, backward)
    return chunked
