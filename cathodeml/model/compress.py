"""Tabulated embedding nets ("model compression"), DeePMD-kit's scheme in JAX.

Why.  The embedding net G(s) of se_e2_a maps one number, the normalised radial input s of a
neighbour slot, to M features, and it is evaluated for every slot of every atom: for the water
architecture (25-50-100, Σsel 138) that is ~60 % of the floating-point work of a step.  Being a
function of one variable, it can be replaced by a table.  DeePMD-kit's `dp compress` does this
with piecewise fifth-order polynomials on a uniform grid, each interval's coefficients fixed by
G, G' and G'' at both ends (a quintic Hermite interpolant, C² across the knots).  This module
builds the same tables with the same ranges and strides, so a compressed cathodeml model matches
DeePMD-kit's compressed model, not only its own uncompressed one.

Ranges (deepmd/utils/tabulate.py `_get_env_mat_range`, `build`).  With min_nbor_dist the shortest
pair distance in the training data and w the cutoff switch, per centre type t the table spans
lower_t = floor(min_k −davg[t,0,k]/dstd[t,0,k]) to upper_t = ceil(max_k (w(d_min)/d_min −
davg[t,0,k])/dstd[t,0,k]) over the four columns k of the first slot (DeePMD-kit takes the extremes
over all four, which widens the range; we do the same so that the grids coincide).  A net shared
by all centre types (type_one_side) spans the union over centre types t with sel[t] > 0.  The grid
is stride0 (default 0.01) from lower to upper, then stride1 = 10·stride0 up to extrapolate·upper
(default 5); inputs past the end take the last knot's value.

Evaluation.  `tabulated_embedding` finds each input's interval exactly as DeePMD-kit's
`locate_xx_se_a` does and evaluates the polynomial by Horner's rule, the value and its derivative
in one pass (a custom VJP), so reverse mode stores one [slots, M] derivative instead of six
gathered coefficient planes.  On CPU, `descriptor` uses the fused kernel of `table_kernel`
instead (the same numbers, no [slots, M] arrays at all); this is the path on other backends.  Reverse mode only: the tables are for md and inference, not for
training through them (second derivatives would need the curvature, which is not kept).  Outside the table the value is constant and its derivative 0 (the
energy stays conservative there; DeePMD-kit's force kernel uses the end interval's slope).

Storage.  The tables are fixed arrays derived from the weights, so they live in `stats["tables"]`
(one [nspline, 6, M] array per embedding net, float64) and the grid of each net in the static
`ModelConfig.tables` (lower, upper, max, stride0, stride1).  A compressed model still carries its
weights: `uncompress` drops the tables, `export` writes the exact net, training refuses it.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.model.config import ModelConfig
from cathodeml.model.nn import embedding_net

DEFAULT_STRIDE = 0.01
DEFAULT_EXTRAPOLATE = 5.0


def _switch(r: float, rcut_smth: float, rcut: float) -> float:
    if r < rcut_smth:
        return 1.0
    if r >= rcut:
        return 0.0
    u = (r - rcut_smth) / (rcut - rcut_smth)
    return u ** 3 * (-6.0 * u * u + 15.0 * u - 10.0) + 1.0


def table_ranges(config: ModelConfig, stats: dict, min_nbor_dist: float) -> list[tuple[float, float]]:
    """(lower, upper) of the normalised input s of each embedding net (integers, as floats)."""
    if not min_nbor_dist > 0:
        raise CathodemlError(f"compress: the minimum neighbour distance must be positive, got {min_nbor_dist}")
    davg0 = np.asarray(stats["davg"], np.float64)[:, 0, :]
    dstd0 = np.asarray(stats["dstd"], np.float64)[:, 0, :]
    s_max = _switch(min_nbor_dist, config.rcut_smth, config.rcut) / min_nbor_dist
    lower = np.floor(np.min(-davg0 / dstd0, axis=1))
    upper = np.ceil(np.max((s_max - davg0) / dstd0, axis=1))
    ranges = []
    for net in range(config.n_embedding_nets):
        if config.type_one_side:
            centres = [t for t in range(config.ntypes) if config.sel[t] > 0]
        else:
            centres = [net % config.ntypes]  # embedding_index(c, n) = c + n·ntypes
        ranges.append((float(np.min(lower[centres])), float(np.max(upper[centres]))))
    return ranges


def _grid(lower: float, upper: float, stride0: float, stride1: float, extrapolate: float):
    """Knots of one table and its number of intervals, built as DeePMD-kit builds them (np.arange)."""
    xx = np.concatenate([np.arange(lower, upper, stride0), np.arange(upper, extrapolate * upper, stride1),
                         [extrapolate * upper]])
    nspline = int((upper - lower) / stride0 + (extrapolate * upper - upper) / stride1)
    return xx, nspline


def _value_and_derivatives(net: list, x: np.ndarray, activation: str):
    """G, dG/ds, d²G/ds² [len(x), M] of one embedding net at the inputs x (float64)."""
    def g(s):
        return embedding_net(net, s.reshape(1, 1), activation)[0]

    def dg(s):
        return jax.jvp(g, (s,), (jnp.ones_like(s),))

    def d2g(s):
        (v, d), (_, dd) = jax.jvp(dg, (s,), (jnp.ones_like(s),))
        return v, d, dd

    net = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), net)
    v, d, dd = jax.jit(jax.vmap(d2g))(jnp.asarray(x, jnp.float64))
    return np.asarray(v), np.asarray(d), np.asarray(dd)


def quintic_coefficients(v, d, d2, h):
    """[n, 6, M] coefficients a0..a5 of the quintic on each interval of width h [n, 1] that takes
    value v, slope d and curvature d2 ([n+1, M]) at both of its ends (Hermite interpolation)."""
    dv = v[1:] - v[:-1]
    a3 = (20 * dv - (8 * d[1:] + 12 * d[:-1]) * h - (3 * d2[:-1] - d2[1:]) * h ** 2) / (2 * h ** 3)
    a4 = (-30 * dv + (14 * d[1:] + 16 * d[:-1]) * h + (3 * d2[:-1] - 2 * d2[1:]) * h ** 2) / (2 * h ** 4)
    a5 = (12 * dv - 6 * (d[1:] + d[:-1]) * h + (d2[1:] - d2[:-1]) * h ** 2) / (2 * h ** 5)
    return np.stack([v[:-1], d[:-1], 0.5 * d2[:-1], a3, a4, a5], axis=1)


def build_tables(config: ModelConfig, params: dict, stats: dict, min_nbor_dist: float,
                 stride: float = DEFAULT_STRIDE, extrapolate: float = DEFAULT_EXTRAPOLATE):
    """(grids, tables): per embedding net its grid (lower, upper, max, stride0, stride1) and its
    coefficients [nspline, 6, M] (float64), DeePMD-kit's tables for `dp compress -s stride -e extrapolate`."""
    if not stride > 0 or not extrapolate > 1:
        raise CathodemlError(f"compress: need stride > 0 and extrapolate > 1, got {stride} and {extrapolate}")
    stride0, stride1 = float(stride), 10.0 * float(stride)
    grids, tables = [], []
    for net, (lower, upper) in zip(params["embedding"], table_ranges(config, stats, min_nbor_dist)):
        if upper <= 0:
            raise CathodemlError(f"compress: the table range [{lower}, {upper}] is empty; the descriptor "
                                 "statistics or the minimum neighbour distance are wrong")
        xx, nspline = _grid(lower, upper, stride0, stride1, extrapolate)
        v, d, d2 = _value_and_derivatives(net, xx[:nspline + 1], config.activation)
        h = np.full((nspline, 1), stride1)
        h[:int((upper - lower) / stride0)] = stride0
        tables.append(quintic_coefficients(v, d, d2, h))
        grids.append((lower, upper, float(extrapolate * upper), stride0, stride1))
    return tuple(grids), tables


def _locate(x, grid):
    """Interval index and offset of each input in a table (DeePMD-kit's locate_xx_se_a), and
    whether the input lies inside it (outside: the first/last knot, offset 0)."""
    lower, upper, top, stride0, stride1 = grid
    first = int((upper - lower) / stride0)
    last = first + int((top - upper) / stride1) - 1
    fine = jnp.floor((x - lower) / stride0)
    coarse = jnp.floor((x - upper) / stride1)
    below, in_fine, in_coarse = x < lower, x < upper, x < top
    index = jnp.where(below, 0, jnp.where(in_fine, fine, jnp.where(in_coarse, first + coarse, last)))
    offset = jnp.where(in_fine, x - (fine * stride0 + lower), x - (coarse * stride1 + upper))
    inside = ~below & in_coarse
    return index.astype(jnp.int32), jnp.where(inside, offset, 0.0), inside


def _polynomial(table, grid, x):
    """(G, dG/ds) [n, M] at inputs x [n]: Horner's rule on the interval's coefficients, one gather
    per coefficient plane (on CPU faster than one gather of [n, 6, M])."""
    index, t, inside = _locate(x, grid)
    a = [table[:, k][index] for k in range(6)]
    t = t[:, None]
    value = a[0] + t * (a[1] + t * (a[2] + t * (a[3] + t * (a[4] + t * a[5]))))
    slope = a[1] + t * (2 * a[2] + t * (3 * a[3] + t * (4 * a[4] + t * 5 * a[5])))
    return value, jnp.where(inside[:, None], slope, 0.0)


def tabulated_embedding(table, grid: tuple, s):
    """G(s) [n, M] from a table [nspline, 6, M] on `grid` for normalised inputs s [n, 1]."""
    # the tables are constants (derived from the weights, never trained): no cotangent for them
    return _tabulated(grid, jax.lax.stop_gradient(table), s[:, 0])


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _tabulated(grid, table, x):
    return _polynomial(table, grid, x)[0]


def _tabulated_forward(grid, table, x):
    # value and slope leave one pass together (the barrier keeps XLA from re-gathering the
    # coefficients inside each consumer); the slope is the only residual
    value, slope = jax.lax.optimization_barrier(_polynomial(table, grid, x))
    return value, slope


def _tabulated_backward(grid, slope, cotangent):
    return None, jnp.sum(slope * cotangent, axis=-1)


_tabulated.defvjp(_tabulated_forward, _tabulated_backward)


def compress_model(model, min_nbor_dist: float, stride: float = DEFAULT_STRIDE,
                   extrapolate: float = DEFAULT_EXTRAPOLATE):
    """`model` with tabulated embedding nets (a new Model; weights kept, metadata records how)."""
    if model.config.tables:
        raise CathodemlError("compress: the model is already compressed")
    grids, tables = build_tables(model.config, model.params, model.stats, min_nbor_dist, stride, extrapolate)
    metadata = {**model.metadata, "compression": {"min_nbor_dist": float(min_nbor_dist), "stride": float(stride),
                                                  "extrapolate": float(extrapolate)}}
    return dataclasses.replace(model, config=model.config.replace(tables=grids),
                               stats={**model.stats, "tables": tables}, metadata=metadata)


def uncompress_model(model):
    """`model` evaluated with its embedding nets again (the tables dropped)."""
    stats = {k: v for k, v in model.stats.items() if k != "tables"}
    metadata = {k: v for k, v in model.metadata.items() if k != "compression"}
    return dataclasses.replace(model, config=model.config.replace(tables=()), stats=stats, metadata=metadata)


def min_neighbor_distance(systems) -> float:
    """Shortest distance (Å) between two atoms in any frame: systems is an iterable of
    (positions [nf, N, 3] Å, cells [nf, 3, 3] Å or None for free clusters, types [N])."""
    from vesin import NeighborList as VesinNeighborList

    best = np.inf
    for positions, cells, _ in systems:
        positions = np.asarray(positions, np.float64)
        for k, frame in enumerate(positions):
            periodic = cells is not None and np.any(np.asarray(cells)[k])
            box = np.asarray(cells, np.float64)[k] if periodic else np.zeros((3, 3))
            cutoff = 2.0
            while True:  # grow the search radius until some pair is found (sparse data)
                d = VesinNeighborList(cutoff=cutoff, full_list=False).compute(frame, box, bool(periodic), "d")
                d = np.atleast_1d(d[0] if isinstance(d, (tuple, list)) else d)
                if d.size or cutoff > 64 or len(frame) < 2 and not periodic:
                    break
                cutoff *= 2
            if d.size:
                best = min(best, float(d.min()))
    if not np.isfinite(best):
        raise CathodemlError("compress: no pair of atoms found in the data to set the table range")
    return best
