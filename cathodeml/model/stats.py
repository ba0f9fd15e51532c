"""Data statistics a model needs before training: descriptor davg/dstd and per-type energy bias.

Both follow DeePMD-kit (deepmd/dpmodel/utils/env_mat_stat.py, deepmd/utils/env_mat_stat.py,
out-stat least squares): the environment statistics are pooled per centre type over *all* slots,
the empty ones included (they count as zero rows), avg_r and std_r of the radial column, one
std_a over the three angular columns (their mean is not subtracted in davg but is in the std),
std clamped below at 1e-2, defaults 0 and 0.1 for a type never seen as a centre.  The raw rows
come from the same jitted selection the energy uses, so statistics and model cannot disagree
about which neighbours exist.  The energy bias is the least-squares fit E ≈ Σ_t n_t·b_t.
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.model.config import ModelConfig
from cathodeml.model.descriptor import raw_environment
from cathodeml.model.neighbors import build_neighbor_lists


_STD_FLOOR = 1e-2
_STD_DEFAULT = 1e-1


@partial(jax.jit, static_argnames="config")
def _batched_raw_environment(config, positions, cells, nbr):
    return jax.vmap(lambda p, c, n: raw_environment(config, p, c, n))(positions, cells, nbr)


def environment_sums(config: ModelConfig, positions, cells, types, chunk: int = 16) -> np.ndarray:
    """Per centre type [ntypes, 2, 3]: (count, sum, sum of squares) of the radial column (row 0) and
    of the pooled angular columns (row 1), over the frames of one system.

    positions [nf, N, 3] Å; cells [nf, 3, 3] Å or None (free); types [N].  Sums of several systems
    add up; `stats_from_sums` turns them into davg/dstd.
    """
    positions = np.asarray(positions, dtype=np.float64)
    types = np.asarray(types, dtype=np.int64).reshape(-1)
    nf = positions.shape[0]
    sums = np.zeros((config.ntypes, 2, 3))
    for start in range(0, nf, chunk):
        pos = positions[start:start + chunk]
        cel = None if cells is None else np.asarray(cells, dtype=np.float64)[start:start + chunk]
        nbr = build_neighbor_lists(pos, cel, types, config.rcut, config.ntypes)
        cel_arr = np.zeros((pos.shape[0], 3, 3)) if cel is None else cel
        env = np.asarray(_batched_raw_environment(config.replace(precision="float64"), pos, cel_arr, nbr))
        for t in range(config.ntypes):
            rows = env[:, types == t]
            if rows.size == 0:
                continue
            r, a = rows[..., 0], rows[..., 1:]
            sums[t, 0] += (r.size, r.sum(), np.square(r).sum())
            sums[t, 1] += (a.size, a.sum(), np.square(a).sum())
    return sums


def _std(count, total, squares):
    if count == 0:
        return _STD_DEFAULT
    val = np.sqrt(max(squares / count - (total / count) ** 2, 0.0))
    return max(val, _STD_FLOOR)


def stats_from_sums(config: ModelConfig, sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """davg, dstd [ntypes, Σsel, 4] (1/Å) from summed `environment_sums`."""
    davg = np.zeros((config.ntypes, config.nnei, 4))
    dstd = np.ones((config.ntypes, config.nnei, 4))
    for t in range(config.ntypes):
        (nr, sr, qr), (na, sa, qa) = sums[t]
        davg[t, :, 0] = sr / nr if nr else 0.0
        dstd[t, :, 0] = _std(nr, sr, qr)
        dstd[t, :, 1:] = _std(na, sa, qa)
    return davg, dstd


def descriptor_stats(config: ModelConfig, systems) -> tuple[np.ndarray, np.ndarray]:
    """davg, dstd [ntypes, Σsel, 4] (1/Å) from data: systems is an iterable of
    (positions [nf, N, 3] Å, cells [nf, 3, 3] Å or None, types [N]) in the model's type indices."""
    total = np.zeros((config.ntypes, 2, 3))
    for positions, cells, types in systems:
        total += environment_sums(config, positions, cells, types)
    if total[:, 0, 0].sum() == 0:
        raise CathodemlError("no atoms found to compute descriptor statistics; the training data is empty")
    return stats_from_sums(config, total)


def fit_type_bias(type_counts, energies, rcond: float | None = None) -> np.ndarray:
    """Per-type energy bias b (eV) minimising Σ_frames (E − Σ_t n_t b_t)²: type_counts [nf, ntypes],
    energies [nf] eV.  Types that always appear together share their bias (minimum-norm solution)."""
    a = np.asarray(type_counts, dtype=np.float64)
    e = np.asarray(energies, dtype=np.float64).reshape(-1)
    if a.shape[0] != e.size or a.shape[0] == 0:
        raise CathodemlError("fit_type_bias: need one row of type counts per frame and at least one frame")
    bias, *_ = np.linalg.lstsq(a, e, rcond=rcond)
    return bias
