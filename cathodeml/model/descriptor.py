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

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.model.compress import tabulated_embedding
from cathodeml.model.config import ModelConfig
from cathodeml.model.neighbors import NeighborList
from cathodeml.model.nn import embedding_net


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


def neighbor_blocks(config: ModelConfig, positions, cell, nbr: NeighborList, centres, order_free=False):
    """Per neighbour type t, displacements (Å) [n, w_t, 3] and mask [n, w_t] of the neighbours
    DeePMD-kit keeps (of the Σsel nearest within rcut, the sel[t] nearest of type t), with
    w_t = min(sel[t], capacity[t]): slots beyond the capacity are empty by construction.

    positions [N, 3], cell [3, 3] (zeros if not periodic), centres [n] atom indices.
    order_free: a (traced) bool, True when the slots of each neighbour type are interchangeable
    (`slots_interchangeable`); the selection then skips sorting by distance whenever no centre
    has more than sel[t] neighbours of any type t within rcut (see `_kept_slots`).
    """
    idx = nbr.index[centres]
    valid = idx >= 0
    shift = nbr.shift[centres]
    if all(c <= s for c, s in zip(nbr.capacity, config.sel)):
        # every candidate fits its slot: nothing to select (training lists, built without a skin)
        diff = _displacements(positions, cell, idx, shift, centres)
        inside = valid & (jnp.sum(diff * diff, axis=-1) < config.rcut * config.rcut)
        offsets = np.concatenate([[0], np.cumsum(nbr.capacity)])
        return [(diff[:, a:b], inside[:, a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
    # which candidates are kept depends on distances only (no gradient); the displacements are then
    # computed for the kept slots alone, so the backward pass never touches the other candidates
    diff = jax.lax.stop_gradient(_displacements(positions, cell, idx, shift, centres))
    d2 = jnp.where(valid, jnp.sum(diff * diff, axis=-1), jnp.inf)
    blocks = []
    for pick, keep in _kept_slots(config, nbr.capacity, d2 < config.rcut * config.rcut, d2, order_free):
        j = jnp.take_along_axis(idx, pick, axis=1)
        s = jnp.take_along_axis(shift, pick[..., None], axis=1)
        block = _displacements(positions, cell, jnp.where(keep, j, 0), s, centres)
        blocks.append((jnp.where(keep[..., None], block, 1.0), keep))
    return blocks


def _displacements(positions, cell, index, shift, centres):
    """r_j + shift·cell − r_i [n, c, 3] (Å) of the listed neighbours of the centres (index ≥ 0)."""
    image = jnp.einsum("nck,kl->ncl", shift.astype(positions.dtype), cell)
    return positions[jnp.where(index >= 0, index, 0)] + image - positions[centres][:, None, :]


def _kept_slots(config: ModelConfig, capacity, inside, d2, order_free):
    """Per neighbour type, the candidate columns [n, w_t] DeePMD-kit keeps and whether each holds a
    neighbour [n, w_t]; inside [n, C] (within rcut) and d2 [n, C] (Å²) of every candidate.

    DeePMD-kit keeps the Σsel nearest of all types first, then the sel[t] nearest of each type among
    those (deepmd/dpmodel/utils/nlist.py), in order of distance.  When no centre has more than sel[t]
    neighbours of type t within rcut, that is simply every neighbour within rcut, and when the slots of a
    type are interchangeable (per-type davg/dstd, as DeePMD-kit and `descriptor_stats` make them; the
    descriptor is a sum over slots) their order does not matter: the neighbours are then packed in list
    order (a prefix sum), which costs a fraction of the sorts.  In MD, where the list holds every pair
    within rcut + skin and twice as many candidates as slots, the sorts were half of the step.
    """
    offsets = np.concatenate([[0], np.cumsum(capacity)])
    widths = [min(sel, int(cap)) for sel, cap in zip(config.sel, capacity)]
    n = inside.shape[0]

    def nearest():
        keep_all = inside
        if inside.shape[1] > config.nnei:
            ranked = jnp.sort(jnp.where(inside, d2, jnp.inf), axis=1)
            keep_all = inside & (d2 <= ranked[:, config.nnei - 1:config.nnei])
        picks = []
        for t, width in enumerate(widths):
            a, b = offsets[t], offsets[t + 1]
            if b - a > width:
                _, pick = jax.lax.top_k(jnp.where(keep_all[:, a:b], -d2[:, a:b], -jnp.inf), width)
            else:
                pick = jnp.broadcast_to(jnp.arange(b - a, dtype=jnp.int32), (n, b - a))
            picks.append((pick + a, jnp.take_along_axis(keep_all[:, a:b], pick, axis=1)))
        return picks

    def packed():
        picks = []
        for t, width in enumerate(widths):
            a, b = offsets[t], offsets[t + 1]
            block = inside[:, a:b]
            target = jnp.where(block, jnp.cumsum(block, axis=1) - 1, width)  # past the end: dropped
            rows = jnp.broadcast_to(jnp.arange(n)[:, None], block.shape)
            pick = jnp.full((n, width), -1, jnp.int32).at[rows, target].set(
                jnp.broadcast_to(jnp.arange(a, b, dtype=jnp.int32), block.shape), mode="drop")
            picks.append((jnp.maximum(pick, a), pick >= 0))
        return picks

    if order_free is False:
        return nearest()
    fits = jnp.all(jnp.stack([jnp.sum(inside[:, offsets[t]:offsets[t + 1]], axis=1) <= sel
                              for t, sel in enumerate(config.sel)]))
    return jax.lax.cond(order_free & fits, packed, nearest)


def slots_interchangeable(config: ModelConfig, stats: dict, centre_type: int):
    """True (traced) when davg/dstd of centre_type are the same on every slot of each neighbour type,
    so permuting a type's neighbours among its slots leaves the descriptor unchanged."""
    same = []
    for a, b in zip(config.sel_offsets[:-1], config.sel_offsets[1:]):
        for key in ("davg", "dstd"):
            block = stats[key][centre_type, a:b]
            same.append(jnp.all(block == block[:1]))
    return jnp.all(jnp.stack(same))


def select_neighbors(config: ModelConfig, positions, cell, nbr: NeighborList, centres):
    """`neighbor_blocks` padded to the full slot layout: diff [n, Σsel, 3] (Å), mask [n, Σsel]."""
    diffs, masks = [], []
    for (block_diff, block_in), sel in zip(neighbor_blocks(config, positions, cell, nbr, centres), config.sel):
        n, width = block_in.shape
        diffs += [block_diff, jnp.zeros((n, sel - width, 3), block_diff.dtype)]
        masks += [block_in, jnp.zeros((n, sel - width), bool)]
    return jnp.concatenate(diffs, axis=1), jnp.concatenate(masks, axis=1)


@jax.custom_vjp
def contract_slots(g, env):
    """T[n, m, f] = Σ_s g[n, s, m]·env[n, s, f] (the Gᵀ R̃ of se_e2_a, before the 1/Σsel).

    Same numbers as the einsum; the custom VJP only writes the cotangent of g as four
    broadcast products instead of a batched matmul with a contraction length of 4, which XLA on
    CPU runs several times slower.  Both rules are plain jnp, so higher-order reverse mode (the
    force term of the training loss) differentiates through them as usual.
    """
    return jnp.einsum("nsm,nsf->nmf", g, env)


def _contract_fwd(g, env):
    return contract_slots(g, env), (g, env)


def _contract_bwd(residuals, ct):
    g, env = residuals
    return _slot_cotangent(env, ct), jnp.einsum("nsm,nmf->nsf", g, ct)


@jax.custom_vjp
def _slot_cotangent(env, ct):
    """ct_g[n, s, m] = Σ_f env[n, s, f]·ct[n, m, f], written as four broadcast products (fast on CPU).

    Its own VJP keeps the second-order pass on batched matmuls that contract over the slots
    (length Σsel) or the embedding width, instead of materialising four [n, s, m] products.
    """
    return sum(env[..., f:f + 1] * ct[:, None, :, f] for f in range(env.shape[-1]))


def _slot_cotangent_fwd(env, ct):
    return _slot_cotangent(env, ct), (env, ct)


def _slot_cotangent_bwd(residuals, ct_g):
    env, ct = residuals
    return jnp.einsum("nsm,nmf->nsf", ct_g, ct), jnp.einsum("nsm,nsf->nmf", ct_g, env)


_slot_cotangent.defvjp(_slot_cotangent_fwd, _slot_cotangent_bwd)


contract_slots.defvjp(_contract_fwd, _contract_bwd)


def _embed_block(embed, env_block):
    """Σ_slots G(s)ᵀ·R̃ over a block of normalised rows [n, w, 4] → [n, M, 4]; embed: s [k, 1] → G [k, M]."""
    n, w, _ = env_block.shape
    g = embed(env_block[..., 0].reshape(n * w, 1))
    return contract_slots(g.reshape(n, w, -1), env_block)


def _embed_contract(config: ModelConfig, params: dict, stats: dict, index: int):
    """env_block [n, w, 4] → Σ_slots G(s)ᵀ·R̃ [n, M, 4] with embedding net `index`: the net itself,
    or in a compressed model its table (on CPU the fused kernel of `table_kernel`)."""
    if config.tables:
        from cathodeml.model import table_kernel  # numba, imported for compressed models only

        if table_kernel.available():
            return partial(table_kernel.embed_contract, stats["tables"][index], config.tables[index])
    if config.tables:
        embed = partial(tabulated_embedding, stats["tables"][index], config.tables[index])
    else:
        embed = partial(embedding_net, params["embedding"][index], activation=config.activation)
    return partial(_embed_block, embed)


def descriptor_of_centres(config: ModelConfig, params: dict, stats: dict, blocks, centre_type: int):
    """D [n, M·axis_neuron] of n centres of one type from their `neighbor_blocks`.

    Slots past a block's width hold no neighbour for any centre: their normalised row
    −davg/dstd is the same for every centre, so their embedding is evaluated once, not n times.
    """
    davg, dstd = stats["davg"][centre_type], stats["dstd"][centre_type]
    n = blocks[0][1].shape[0]
    gr = jnp.zeros((n, config.embedding_neurons[-1], 4), davg.dtype)
    offset = 0
    for t, ((diff, mask), sel) in enumerate(zip(blocks, config.sel)):
        width = mask.shape[1]
        embed_contract = _embed_contract(config, params, stats, config.embedding_index(centre_type, t))
        if width:
            env = environment_matrix(diff, mask, config.rcut_smth, config.rcut)
            env = (env - davg[offset:offset + width]) / dstd[offset:offset + width]
            gr = gr + embed_contract(env)
        if sel > width:
            empty = (-davg[offset + width:offset + sel] / dstd[offset + width:offset + sel])[None]
            gr = gr + embed_contract(empty)
        offset += sel
    gr = gr / config.nnei
    d = jnp.einsum("nmf,naf->nma", gr, gr[:, : config.axis_neuron, :])
    return d.reshape(d.shape[0], -1)


def raw_environment(config: ModelConfig, positions, cell, nbr: NeighborList):
    """Unnormalised environment rows [N, Σsel, 4] (1/Å) of every atom, empty slots zero."""
    centres = jnp.arange(positions.shape[0])
    diff, mask = select_neighbors(config, positions, cell, nbr, centres)
    return environment_matrix(diff, mask, config.rcut_smth, config.rcut)
