"""The se_e2_a (DeepPot-SE) descriptor, written to reproduce DeePMD-kit 3.2 number for number.

Definitions checked against deepmd/dpmodel (utils/env_mat.py, descriptor/se_e2_a.py,
utils/env_mat_stat.py): environment rows w(r)·[1/r, x/r², y/r², z/r²] with the quintic switch
w = u³(−6u²+15u−10)+1 between rcut_smth and rcut; `sel[t]` slots per neighbour type, nearest
first, extra neighbours dropped; every slot -- the empty ones too, which become −davg/dstd --
is normalised by the centre type's davg/dstd and fed through the embedding nets;
T = Gᵀ R̃ / Σsel and D = T · T[:axis_neuron]ᵀ flattened (embedding index major).  Work is done
per centre type (the layout in the neighbour list makes the groups static), so no atom runs a
net it does not need.  Lengths in Å; the descriptor is dimensionless.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml import enable_float64
from cathodeml.model.config import ModelConfig
from cathodeml.model.neighbors import NeighborList
from cathodeml.model.nn import embedding_net

enable_float64()


def switch_function(r, rcut_smth: float, rcut: float):
    """Smooth cutoff w(r) (dimensionless): 1 below rcut_smth, 0 from rcut (Å), C² in between."""
    u = jnp.clip((r - rcut_smth) / (rcut - rcut_smth), 0.0, 1.0)
    return u * u * u * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def environment_matrix(diff, mask, rcut_smth: float, rcut: float):
    """Raw environment rows w(r)·[1/r, x/r², y/r², z/r²] (1/Å) for displacements diff [..., 3] (Å).

    Rows where `mask` is False are exactly zero, with zero gradient (no 1/0 anywhere).
    """
    safe = jnp.where(mask[..., None], diff, 1.0)
    r = jnp.sqrt(jnp.sum(safe * safe, axis=-1, keepdims=True))
    w = switch_function(r, rcut_smth, rcut) * mask[..., None]
    return jnp.concatenate([1.0 / r, safe / (r * r)], axis=-1) * w


def select_neighbors(config: ModelConfig, positions, cell, nbr: NeighborList, centres):
    """Displacements (Å) to the neighbours DeePMD-kit keeps: of the Σsel nearest within rcut, the
    `sel[t]` nearest of each type t.

    positions [N, 3], cell [3, 3] (zeros if not periodic), centres [n] atom indices.  Returns
    diff [n, Σsel, 3] and mask [n, Σsel] (False for empty slots), slots grouped by type.
    """
    idx = nbr.index[centres]
    valid = idx >= 0
    neighbours = positions[jnp.where(valid, idx, 0)]
    image = jnp.einsum("nck,kl->ncl", nbr.shift[centres].astype(positions.dtype), cell)
    diff = neighbours + image - positions[centres][:, None, :]
    d2 = jnp.sum(diff * diff, axis=-1)
    inside = valid & (d2 < config.rcut * config.rcut)
    if diff.shape[1] > config.nnei:
        # DeePMD-kit keeps the Σsel nearest of all types first, then the sel[t] nearest of each type
        # among those (deepmd/dpmodel/utils/nlist.py): a neighbour beyond the Σsel nearest is dropped
        # even when its own type has free slots.
        ranked = jnp.sort(jax.lax.stop_gradient(jnp.where(inside, d2, jnp.inf)), axis=1)
        inside = inside & (d2 <= ranked[:, config.nnei - 1:config.nnei])
    offsets = np.concatenate([[0], np.cumsum(nbr.capacity)])
    diffs, masks = [], []
    for t, sel in enumerate(config.sel):
        if sel == 0:
            continue
        cap = int(nbr.capacity[t])
        block_diff, block_in = diff[:, offsets[t]:offsets[t + 1]], inside[:, offsets[t]:offsets[t + 1]]
        if cap > sel:
            key = jnp.where(block_in, -d2[:, offsets[t]:offsets[t + 1]], -jnp.inf)
            _, pick = jax.lax.top_k(jax.lax.stop_gradient(key), sel)
            block_diff = jnp.take_along_axis(block_diff, pick[..., None], axis=1)
            block_in = jnp.take_along_axis(block_in, pick, axis=1)
        elif cap < sel:
            n = block_diff.shape[0]
            block_diff = jnp.concatenate([block_diff, jnp.zeros((n, sel - cap, 3), diff.dtype)], axis=1)
            block_in = jnp.concatenate([block_in, jnp.zeros((n, sel - cap), bool)], axis=1)
        diffs.append(block_diff)
        masks.append(block_in)
    return jnp.concatenate(diffs, axis=1), jnp.concatenate(masks, axis=1)


def descriptor_from_env(config: ModelConfig, embedding_params: list, env_normalised, centre_type: int):
    """D [n, M·axis_neuron] from normalised environment rows [n, Σsel, 4] of centres of one type."""
    offsets = config.sel_offsets
    gr = 0.0
    for t in range(config.ntypes):
        if config.sel[t] == 0:
            continue
        block = env_normalised[:, offsets[t]:offsets[t + 1], :]
        g = embedding_net(embedding_params[config.embedding_index(centre_type, t)], block[..., :1],
                          config.activation)
        gr = gr + jnp.einsum("nsm,nsf->nmf", g, block)
    gr = gr / config.nnei
    d = jnp.einsum("nmf,naf->nma", gr, gr[:, : config.axis_neuron, :])
    return d.reshape(d.shape[0], -1)


def descriptors_by_type(config: ModelConfig, params: dict, stats: dict, positions, cell, nbr: NeighborList):
    """[(centres [n_t], D [n_t, dim_descriptor])] for each centre type present (static order)."""
    out = []
    start = 0
    for t, count in enumerate(nbr.type_counts):
        if count == 0:
            continue
        centres = nbr.order[start:start + count]
        start += count
        diff, mask = select_neighbors(config, positions, cell, nbr, centres)
        env = environment_matrix(diff, mask, config.rcut_smth, config.rcut)
        env = (env - stats["davg"][t]) / stats["dstd"][t]
        out.append((t, centres, descriptor_from_env(config, params["embedding"], env, t)))
    return out


def raw_environment(config: ModelConfig, positions, cell, nbr: NeighborList):
    """Unnormalised environment rows [N, Σsel, 4] (1/Å) of every atom, empty slots zero."""
    centres = jnp.arange(positions.shape[0])
    diff, mask = select_neighbors(config, positions, cell, nbr, centres)
    return environment_matrix(diff, mask, config.rcut_smth, config.rcut)
