"""Fused tabulated embedding + slot contraction on CPU: T = Σ_slots G(s)ᵀ·R̃ in one pass.

Why.  With the embedding nets tabulated (`compress`), what is left of the descriptor is memory
traffic: XLA gathers six coefficient planes [slots, M] per slot, evaluates the polynomial, keeps
G′ [slots, M] for the backward pass and contracts with the environment rows, each step writing
and reading arrays of slots × M (1,536 water atoms: 212,000 slots × 100 features, 170 MB per
array in float64).  On CPU that only ran fast in 16-atom chunks that stay in cache, and then the
fitting net ran at half speed.  Here one loop per centre does it all with nothing bigger than one
slot's M features: locate the interval, Horner's rule for G (and G′ when needed), accumulate
T[m, f] += G_m·R̃_f.  The backward pass recomputes G and G′ per slot from the table (cheaper than
storing them) and returns the cotangent of the environment rows:

    ∂L/∂R̃[s, f] = Σ_m G_m(s)·C[m, f]  +  δ_{f0}·Σ_m G′_m(s)·Σ_f' R̃[s, f']·C[m, f']

with C = ∂L/∂T.  The kernels are numba-compiled (parallel over centres) and reached through
`jax.pure_callback`, so they sit inside the jitted MD step; on other backends (a GPU) the XLA path
in `compress` is used instead, where large batches keep the device busy anyway.  First order
only, like `compress._tabulated` (compressed models are not trained).  Same interval search and
the same polynomial as `compress._locate` / `_polynomial`: results agree with the XLA path to
rounding (tests/test_compress.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import numba

# numba's parallel loops are launched from XLA's threads, possibly two at once: only the thread-safe
# layers (OpenMP, TBB) allow that; the default could pick the workqueue layer, which aborts on it
if numba.config.THREADING_LAYER == "default":
    numba.config.THREADING_LAYER = "threadsafe"


def available() -> bool:
    """True when the fused kernel is used: on the CPU backend (on a GPU the XLA path stays on the device)."""
    return jax.default_backend() == "cpu"


@numba.njit(inline="always", cache=True)
def _locate(x, lower, upper, top, stride0, stride1, first, last):
    # compress._locate for one input: (interval, offset in it, inside the table)
    if x < lower:
        return 0, 0.0, False
    if x < upper:
        fine = np.floor((x - lower) / stride0)
        return int(fine), x - (fine * stride0 + lower), True
    if x < top:
        coarse = np.floor((x - upper) / stride1)
        return first + int(coarse), x - (coarse * stride1 + upper), True
    return last, 0.0, False


def _forward(table, grid, env, out):
    """out [n, 4, M] = Σ_s G(env[n, s, 0]) ⊗ env[n, s, :]; table [nspline, 6, M], grid float64
    (lower, upper, top, stride0, stride1), env [n, w, 4]."""
    lower, upper, top, stride0, stride1 = grid[0], grid[1], grid[2], grid[3], grid[4]
    first = int((upper - lower) / stride0)
    last = first + int((top - upper) / stride1) - 1
    n, w, _ = env.shape
    m_dim = table.shape[2]
    for i in numba.prange(n):
        acc = np.zeros((4, m_dim), env.dtype)
        for s in range(w):
            k, t, _ = _locate(env[i, s, 0], lower, upper, top, stride0, stride1, first, last)
            r0, r1, r2, r3 = env[i, s, 0], env[i, s, 1], env[i, s, 2], env[i, s, 3]
            for m in range(m_dim):  # vectorised over m: the coefficient planes are contiguous in m
                g = table[k, 0, m] + t * (table[k, 1, m] + t * (table[k, 2, m] + t * (
                    table[k, 3, m] + t * (table[k, 4, m] + t * table[k, 5, m]))))
                acc[0, m] += g * r0
                acc[1, m] += g * r1
                acc[2, m] += g * r2
                acc[3, m] += g * r3
        out[i] = acc


def _backward(table, grid, env, ct, out):
    """out [n, w, 4] = ∂L/∂env from ct [n, 4, M] = ∂L/∂out of `_forward` (G and G′ recomputed)."""
    lower, upper, top, stride0, stride1 = grid[0], grid[1], grid[2], grid[3], grid[4]
    first = int((upper - lower) / stride0)
    last = first + int((top - upper) / stride1) - 1
    n, w, _ = env.shape
    m_dim = table.shape[2]
    for i in numba.prange(n):
        for s in range(w):
            k, t, inside = _locate(env[i, s, 0], lower, upper, top, stride0, stride1, first, last)
            r0, r1, r2, r3 = env[i, s, 0], env[i, s, 1], env[i, s, 2], env[i, s, 3]
            d0 = d1 = d2 = d3 = ds = 0.0
            for m in range(m_dim):
                a0, a1, a2 = table[k, 0, m], table[k, 1, m], table[k, 2, m]
                a3, a4, a5 = table[k, 3, m], table[k, 4, m], table[k, 5, m]
                g = a0 + t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))
                c0, c1, c2, c3 = ct[i, 0, m], ct[i, 1, m], ct[i, 2, m], ct[i, 3, m]
                d0 += g * c0
                d1 += g * c1
                d2 += g * c2
                d3 += g * c3
                slope = a1 + t * (2 * a2 + t * (3 * a3 + t * (4 * a4 + t * 5 * a5)))
                ds += slope * (r0 * c0 + r1 * c1 + r2 * c2 + r3 * c3)
            out[i, s, 0] = d0 + (ds if inside else 0.0)  # outside the table G′ = 0 (compress._polynomial)
            out[i, s, 1] = d1
            out[i, s, 2] = d2
            out[i, s, 3] = d3


# reassociation lets LLVM vectorise the backward sums over m (4x faster); they then differ from a
# left-to-right sum in the last bits only
_FASTMATH = {"reassoc", "contract"}
_KERNELS = {
    True: (numba.njit(parallel=True, cache=True, nogil=True)(_forward),
           numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)(_backward)),
    False: (numba.njit(cache=True, nogil=True)(_forward),
            numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_backward)),
}
_PARALLEL = [True]


def _run(which: int, *arrays):
    """Run kernel `which` (0 forward, 1 backward), threaded over centres where numba has a
    thread-safe layer, serially where it does not (the results are the same)."""
    if _PARALLEL[0]:
        try:
            return _KERNELS[True][which](*arrays)
        except ValueError as error:  # "No threading layer could be loaded"
            if "threading layer" not in str(error):
                raise
            _PARALLEL[0] = False
    return _KERNELS[False][which](*arrays)


def _batched(table, grid, *arrays):
    """Numpy views of the callback's jax Arrays, batched for the kernels: (batch shape + (n,), grid,
    and per distinct table the table [nspline, 6, M] with the arrays [..., n, a, b] flattened to [k, a, b]).

    Under vmap (vmap_method="expand_dims") every argument gains the batch axes, of size 1 where it
    is not batched.  One table for the whole batch (frames, chunks) runs as one kernel call over all
    centres; a table batched too (an ensemble of compressed models) runs one call per member."""
    table, grid = np.asarray(table), np.asarray(grid, np.float64).reshape(-1)[:5]
    arrays = [np.asarray(a) for a in arrays]  # views, no copy on the CPU; reshaping a jax Array would not be
    lead = np.broadcast_shapes(table.shape[:-3], *(a.shape[:-3] for a in arrays))  # cores: [n, ., .]
    arrays = [np.broadcast_to(a, lead + a.shape[-3:]) for a in arrays]
    if np.prod(table.shape[:-3], dtype=int) == 1:
        groups = [(table.reshape(table.shape[-3:]), [a.reshape((-1,) + a.shape[-2:]) for a in arrays])]
    else:
        tables = np.broadcast_to(table, lead + table.shape[-3:]).reshape((-1,) + table.shape[-3:])
        flat = [a.reshape((len(tables), -1) + a.shape[-2:]) for a in arrays]
        groups = [(tables[b], [a[b] for a in flat]) for b in range(len(tables))]
    groups = [(np.ascontiguousarray(t), [np.ascontiguousarray(a) for a in group]) for t, group in groups]
    return lead + arrays[0].shape[-3:-2], np.ascontiguousarray(grid), groups


def _host_forward(table, grid, env):
    lead, grid, groups = _batched(table, grid, env)
    outs = []
    for tab, (rows,) in groups:
        outs.append(np.empty((rows.shape[0], 4, tab.shape[-1]), rows.dtype))
        _run(0, tab, grid, rows, outs[-1])
    out = np.concatenate(outs) if len(outs) > 1 else outs[0]
    return out.reshape(lead + out.shape[-2:])


def _host_backward(table, grid, env, ct):
    lead, grid, groups = _batched(table, grid, env, ct)
    outs = []
    for tab, (rows, cot) in groups:
        outs.append(np.empty(rows.shape, rows.dtype))
        _run(1, tab, grid, rows, cot, outs[-1])
    out = np.concatenate(outs) if len(outs) > 1 else outs[0]
    return out.reshape(lead + out.shape[-2:])


def embed_contract(table, grid: tuple, env):
    """Σ_slots G(R̃[..., 0])ᵀ·R̃ → [n, M, 4] for normalised rows env [n, w, 4], G from the table
    [nspline, 6, M] on `grid` (the same numbers as `descriptor._embed_block` with the XLA table)."""
    # the grid stays float64 (as the Python floats of compress._locate), whatever the model precision
    grid_array = jnp.asarray(np.asarray(grid, np.float64))
    return jnp.swapaxes(_fused(jax.lax.stop_gradient(table), grid_array, env), -1, -2)


@jax.custom_vjp
def _fused(table, grid, env):
    shape = jax.ShapeDtypeStruct(env.shape[:-2] + (4, table.shape[-1]), env.dtype)
    return jax.pure_callback(_host_forward, shape, table, grid, env, vmap_method="expand_dims")


def _fused_forward(table, grid, env):
    return _fused(table, grid, env), (table, grid, env)


def _fused_backward(residuals, ct):
    table, grid, env = residuals
    shape = jax.ShapeDtypeStruct(env.shape, env.dtype)
    d_env = jax.pure_callback(_host_backward, shape, table, grid, env, ct, vmap_method="expand_dims")
    return jnp.zeros_like(table), jnp.zeros_like(grid), d_env


_fused.defvjp(_fused_forward, _fused_backward)
