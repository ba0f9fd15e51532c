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

with C = ∂L/∂T.  The kernels are numba-compiled (threaded over centres) and called by XLA as
typed-FFI custom calls (numba C callbacks that read XLA's call frame), so they sit inside the
jitted MD step with no Python and no copies; on other backends (a GPU) the XLA path in `compress`
is used instead, where large batches keep the device busy anyway.  First order only, like
`compress._tabulated` (compressed models are not trained).  Same interval search and the same
polynomial as `compress._locate` / `_polynomial`: results agree with the XLA path to rounding
(tests/test_compress.py).  1,536 water atoms, 2 cores: energy + forces 100-115 ms against
160-250 ms for the XLA tables (benchmarks/BENCHMARKS.md "compress").
"""

from __future__ import annotations

import ctypes
import functools

import jax
import jax.numpy as jnp
import numba
import numba.extending
import numpy as np

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


@numba.njit(inline="always", cache=True)
def _bounds(grid):
    # the grid (lower, upper, top, stride0, stride1) and its first coarse and last interval
    lower, upper, top, stride0, stride1 = grid[0], grid[1], grid[2], grid[3], grid[4]
    first = int((upper - lower) / stride0)
    return lower, upper, top, stride0, stride1, first, first + int((top - upper) / stride1) - 1


def _forward(table, grid, env, out):
    """out [n, 4, M] = Σ_s G(env[n, s, 0]) ⊗ env[n, s, :]; table [nspline, 6, M], grid float64
    (lower, upper, top, stride0, stride1), env [n, w, 4]."""
    lower, upper, top, stride0, stride1, first, last = _bounds(grid)
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
    lower, upper, top, stride0, stride1, first, last = _bounds(grid)
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
_PARALLEL_KERNELS = (numba.njit(parallel=True, cache=True, nogil=True)(_forward),
                     numba.njit(parallel=True, cache=True, nogil=True, fastmath=_FASTMATH)(_backward))
_SERIAL_KERNELS = (numba.njit(cache=True, nogil=True)(_forward),
                   numba.njit(cache=True, nogil=True, fastmath=_FASTMATH)(_backward))


# --- XLA FFI handlers -------------------------------------------------------------------------------
# The kernels are called by XLA directly, as typed-FFI custom calls (xla/ffi/api/c_api.h, API 0.3):
# a handler receives an XLA_FFI_CallFrame* and reads its buffers' data pointers and shapes from it.
# A Python callback (jax.pure_callback) did the same work but copied every result back to a device
# buffer, a quarter of the step.  Byte offsets of the C structs on a 64-bit machine:
#   XLA_FFI_CallFrame: extension_start 8, args.args 72 (void**), rets.rets 112 (void**)
#   XLA_FFI_Buffer: data 24, rank 32, dims 40 (int64*)
#   XLA_FFI_Extension_Base: type 8 (1 = metadata); XLA_FFI_Metadata_Extension: metadata 24
#   XLA_FFI_Metadata: api_version {struct_size 8, extension_start 16, major 24, minor 28}, traits 32
_FFI_API_VERSION = (0, 3)


@numba.extending.intrinsic
def _pointer(typingctx, address):
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(numba.types.voidptr))
    return numba.types.voidptr(numba.types.int64), codegen


@numba.extending.intrinsic
def _address(typingctx, pointer):
    def codegen(context, builder, signature, args):
        return builder.ptrtoint(args[0], context.get_value_type(numba.types.int64))
    return numba.types.int64(numba.types.voidptr), codegen


@numba.njit(inline="always", cache=True)
def _word(address):
    return numba.carray(_pointer(address), (1,), np.int64)[0]


@numba.njit(inline="always", cache=True)
def _is_metadata_query(frame):
    """True (after filling in the handler's API version and traits) when XLA asks for metadata."""
    extension = _word(frame + 8)
    if extension == 0 or numba.carray(_pointer(extension + 8), (1,), np.int32)[0] != 1:
        return False
    metadata = _word(extension + 24)
    words = numba.carray(_pointer(metadata + 8), (2,), np.int64)
    words[0], words[1] = 24, 0  # XLA_FFI_Api_Version struct_size, extension_start
    ints = numba.carray(_pointer(metadata + 24), (3,), np.int32)
    ints[0], ints[1], ints[2] = _FFI_API_VERSION[0], _FFI_API_VERSION[1], 0
    return True


@numba.njit(inline="always", cache=True)
def _buffer(pointers, i):
    """(data address, rank, dims address) of the i-th buffer of an args/rets pointer array."""
    buffer = _word(pointers + 8 * i)
    return _word(buffer + 24), _word(buffer + 32), _word(buffer + 40)


@numba.njit(inline="always", cache=True)
def _lead(rank, dims, core, k, size):
    """Extent of leading (batch) axis k of a buffer with `core` trailing axes; 1 where it has fewer
    batch axes than the output (vmap_method="expand_dims" gives every argument the batch axes)."""
    offset = size - (rank - core)
    return 1 if k < offset else _word(dims + 8 * (k - offset))


@numba.njit(inline="always", cache=True)
def _offsets(b, size, o_dims, t_rank, t_dims, e_rank, e_dims, c_rank, c_dims):
    """Flat batch-element offsets in table, env and ct of output batch element b (stride 0 along
    their size-1 batch axes)."""
    t_off = e_off = c_off = 0
    t_stride = e_stride = c_stride = 1
    rest = b
    for k in range(size - 1, -1, -1):
        extent = _word(o_dims + 8 * k)
        index = rest % extent
        rest //= extent
        t_ext = _lead(t_rank, t_dims, 3, k, size)
        e_ext = _lead(e_rank, e_dims, 3, k, size)
        c_ext = _lead(c_rank, c_dims, 3, k, size)
        t_off += (index if t_ext > 1 else 0) * t_stride
        e_off += (index if e_ext > 1 else 0) * e_stride
        c_off += (index if c_ext > 1 else 0) * c_stride
        t_stride *= t_ext
        e_stride *= e_ext
        c_stride *= c_ext
    return t_off, e_off, c_off


@numba.njit(inline="always", cache=True)
def _run_kernel(backward, parallel, table, grid, env, ct, out_address, n, w, m_dim, dtype):
    if backward:
        out = numba.carray(_pointer(out_address), (n, w, 4), dtype)
        if parallel:
            _PARALLEL_KERNELS[1](table, grid, env, ct, out)
        else:
            _SERIAL_KERNELS[1](table, grid, env, ct, out)
    else:
        out = numba.carray(_pointer(out_address), (n, 4, m_dim), dtype)
        if parallel:
            _PARALLEL_KERNELS[0](table, grid, env, out)
        else:
            _SERIAL_KERNELS[0](table, grid, env, out)


@numba.njit(inline="always", cache=True)
def _execute_typed(frame, backward, dtype, item):
    args, rets = _word(frame + 72), _word(frame + 112)
    t_data, t_rank, t_dims = _buffer(args, 0)
    g_data, _, _ = _buffer(args, 1)
    e_data, e_rank, e_dims = _buffer(args, 2)
    o_data, o_rank, o_dims = _buffer(rets, 0)
    c_data, c_rank, c_dims = _buffer(args, 3) if backward else (e_data, e_rank, e_dims)
    ns, m_dim = _word(t_dims + 8 * (t_rank - 3)), _word(t_dims + 8 * (t_rank - 1))
    n, w = _word(e_dims + 8 * (e_rank - 3)), _word(e_dims + 8 * (e_rank - 2))
    grid = numba.carray(_pointer(g_data), (6,), np.float64)  # the grid, then 1.0 to run in parallel
    size = o_rank - 3
    batch = 1
    for k in range(size):
        batch *= _word(o_dims + 8 * k)
    for b in range(batch):
        t_off, e_off, c_off = _offsets(b, size, o_dims, t_rank, t_dims, e_rank, e_dims, c_rank, c_dims)
        table = numba.carray(_pointer(t_data + t_off * ns * 6 * m_dim * item), (ns, 6, m_dim), dtype)
        env = numba.carray(_pointer(e_data + e_off * n * w * 4 * item), (n, w, 4), dtype)
        ct = numba.carray(_pointer(c_data + c_off * n * 4 * m_dim * item), (n, 4, m_dim), dtype) if backward else \
            numba.carray(_pointer(e_data), (1, 4, 1), dtype)
        out_size = n * w * 4 if backward else n * 4 * m_dim
        _run_kernel(backward, grid[5] > 0, table, grid[:5], env, ct, o_data + b * out_size * item, n, w, m_dim,
                    dtype)


@numba.njit(cache=True)
def _execute(frame, backward):
    """Body of both FFI handlers: arguments table [..., nspline, 6, M], grid [..., 6] (float64: the
    table grid, then 1.0 to run threaded), env [..., n, w, 4] (and ct [..., n, 4, M]); result
    out [..., n, 4, M] (or d_env [..., n, w, 4]); float32 or float64, read from env's buffer.
    Batch axes broadcast: one kernel call per batch element, each parallel over its n centres."""
    if _is_metadata_query(frame):
        return
    env_dtype = numba.carray(_pointer(_word(_word(frame + 72) + 16) + 16), (1,), np.int32)[0]
    if env_dtype == 11:  # XLA_FFI_DataType_F32
        _execute_typed(frame, backward, np.float32, 4)
    else:  # F64 (embed_contract admits no other)
        _execute_typed(frame, backward, np.float64, 8)


@functools.cache
def _handlers():
    """The two C-callable handlers (forward, backward), compiled on first use, cached by numba (and
    kept alive here as long as XLA may call them)."""
    @numba.cfunc(numba.types.voidptr(numba.types.voidptr), cache=True)
    def forward(frame):
        _execute(_address(frame), False)
        return _pointer(0)

    @numba.cfunc(numba.types.voidptr(numba.types.voidptr), cache=True)
    def backward(frame):
        _execute(_address(frame), True)
        return _pointer(0)

    return forward, backward


@functools.cache
def _run_parallel() -> bool:
    """Whether numba can run the threaded kernels (a thread-safe layer loads); else they run serially."""
    try:
        _PARALLEL_KERNELS[0](np.zeros((1, 6, 1)), np.array([0.0, 1.0, 5.0, 0.5, 1.0]), np.zeros((2, 1, 4)),
                             np.empty((2, 4, 1)))
        return True
    except ValueError as error:  # "No threading layer could be loaded"
        if "threading layer" not in str(error):
            raise
        return False


@functools.cache
def _target(backward: bool) -> str:
    """Name of the registered FFI target of one kernel (compiled and registered on first use)."""
    new_capsule = ctypes.pythonapi.PyCapsule_New
    new_capsule.restype = ctypes.py_object
    new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
    name = f"cathodeml_table_{'backward' if backward else 'forward'}"
    handler = _handlers()[int(backward)]
    jax.ffi.register_ffi_target(name, new_capsule(handler.address, None, None), platform="cpu")
    return name


def embed_contract(table, grid: tuple, env):
    """Σ_slots G(R̃[..., 0])ᵀ·R̃ → [n, M, 4] for normalised rows env [n, w, 4], G from the table
    [nspline, 6, M] on `grid` (the same numbers as `descriptor._embed_block` with the XLA table)."""
    if env.dtype not in (jnp.float32, jnp.float64) or table.dtype != env.dtype:
        raise TypeError(f"table kernel: float32 or float64 table and rows of one dtype, got {table.dtype}, {env.dtype}")
    # the grid stays float64 (as the Python floats of compress._locate), whatever the model precision
    grid_array = jnp.asarray(np.array([*grid, 1.0 if _run_parallel() else 0.0], np.float64))
    return jnp.swapaxes(_fused(jax.lax.stop_gradient(table), grid_array, env), -1, -2)


@jax.custom_vjp
def _fused(table, grid, env):
    shape = jax.ShapeDtypeStruct(env.shape[:-2] + (4, table.shape[-1]), env.dtype)
    return jax.ffi.ffi_call(_target(False), shape, vmap_method="expand_dims")(table, grid, env)


def _fused_forward(table, grid, env):
    return _fused(table, grid, env), (table, grid, env)


def _fused_backward(residuals, ct):
    table, grid, env = residuals
    shape = jax.ShapeDtypeStruct(env.shape, env.dtype)
    d_env = jax.ffi.ffi_call(_target(True), shape, vmap_method="expand_dims")(table, grid, env, ct)
    return jnp.zeros_like(table), jnp.zeros_like(grid), d_env


_fused.defvjp(_fused_forward, _fused_backward)
