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

from cathodeml import enable_float64
from cathodeml.model.config import ModelConfig
from cathodeml.model.descriptor import descriptors_by_type
from cathodeml.model.neighbors import NeighborList
from cathodeml.model.nn import fitting_net, init_embedding_net, init_fitting_net

enable_float64()


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
    """Energy of each atom (eV), [N]: fitting net of its type on its descriptor + type_bias[type].

    positions [N, 3] Å (all atoms, virtual spin atoms included); cell [3, 3] Å rows = lattice
    vectors, or None / zeros for a free system; nbr from `build_neighbor_list` for these atoms.
    """
    params, stats = _cast(config, params), _cast(config, stats)
    positions = jnp.asarray(positions, config.dtype)
    cell = _cell(cell, config.dtype)
    e = jnp.zeros(positions.shape[0], config.dtype)
    for t, centres, d in descriptors_by_type(config, params, stats, positions, cell, nbr):
        e_t = fitting_net(params["fitting"][t], d, config.activation)[:, 0] + stats["type_bias"][t]
        e = e.at[centres].set(e_t)
    return e


def energy(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList):
    """Total potential energy (eV) of one frame; see `atomic_energies` for the arguments."""
    return jnp.sum(atomic_energies(config, params, stats, positions, cell, nbr))


@partial(jax.jit, static_argnames="config")
def energy_forces_virial(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList):
    """(E eV, forces [N, 3] eV/Å, virial [3, 3] eV) of one frame, jitted.

    forces = −∂E/∂r; virial W = −∂E/∂ε with r → r(1+ε), cell → cell(1+ε) (DeePMD-kit's sign:
    W = Σ r_ij ⊗ F_ij over pairs, stress σ = −W/V).  For virtual spin atoms the caller chains the
    forces back to the hosts (or differentiates through `spin.virtual_positions` itself).
    """
    dtype = config.dtype
    positions = jnp.asarray(positions, dtype)
    cell = _cell(cell, dtype)

    def strained(pos, strain):
        deform = jnp.eye(3, dtype=dtype) + strain
        return energy(config, params, stats, pos @ deform, cell @ deform, nbr)

    e, (dpos, dstrain) = jax.value_and_grad(strained, argnums=(0, 1))(positions, jnp.zeros((3, 3), dtype))
    return e, -dpos, -dstrain


@partial(jax.jit, static_argnames="config")
def evaluate(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList) -> dict:
    """Jitted {"energy" eV, "forces" [N,3] eV/Å, "virial" [3,3] eV, "atomic_energies" [N] eV} of one
    frame in one pass (same definitions as `energy_forces_virial`)."""
    dtype = config.dtype
    positions = jnp.asarray(positions, dtype)
    cell = _cell(cell, dtype)

    def strained(pos, strain):
        deform = jnp.eye(3, dtype=dtype) + strain
        ae = atomic_energies(config, params, stats, pos @ deform, cell @ deform, nbr)
        return jnp.sum(ae), ae

    (e, ae), (dpos, dstrain) = jax.value_and_grad(strained, argnums=(0, 1), has_aux=True)(
        positions, jnp.zeros((3, 3), dtype))
    return {"energy": e, "forces": -dpos, "virial": -dstrain, "atomic_energies": ae}
