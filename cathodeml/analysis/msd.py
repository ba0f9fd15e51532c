"""Unwrapping and mean-squared displacements: small pure numpy functions over position arrays.

The MSD over all time origins is computed with the FFT algorithm (Kneller et al., nMoldyn;
Calandrini et al. 2011): MSD(m) = S1(m) − 2·S2(m), where S2 is the position autocorrelation from
a zero-padded FFT and S1 a running sum of squares.  That is O(N·T log T) instead of O(N·T²),
exact (not sampled origins), and keeps per-axis components for free.  Ions are processed in
blocks so that the complex FFT buffers stay bounded whatever the trajectory size.  Positions
are centred in time before the FFT: the MSD does not change, and float64 round-off stays at the
scale of the displacements, not of the absolute coordinates.

Unwrapping lives here too because it is physics, not file format: from image counts when the
trajectory has them, else from minimum-image steps in *fractional* coordinates (right for
triclinic cells), refusing steps so large that the minimum image is ambiguous.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

from cathodeml import geometry
from cathodeml.errors import CathodemlError

# A minimum-image step this close to half a cell is ambiguous (the ion may have gone the other way).
MAX_FRACTIONAL_STEP = 0.4


def minimum_image_steps(frac: np.ndarray, previous: np.ndarray | None = None) -> np.ndarray:
    """Fractional displacements between consecutive frames, folded into [−½, ½).

    frac [nf, N, 3] fractional coordinates (dimensionless); `previous` [N, 3] the frame before
    frac[0] (then the result has nf rows, else nf − 1).  Raises CathodemlError when any step
    reaches MAX_FRACTIONAL_STEP of a cell vector: frames are then too far apart to unwrap.
    """
    if previous is not None:
        frac = np.concatenate([previous[None], frac], axis=0)
    steps = geometry.fold_fractional(np.diff(frac, axis=0))[0]
    if steps.size:
        worst = np.abs(steps).max()
        if worst >= MAX_FRACTIONAL_STEP:
            f, i, _ = np.unravel_index(np.argmax(np.abs(steps)), steps.shape)
            raise CathodemlError(
                f"atom {i} moves {worst:.2f} of a cell vector between stored frames {f} and {f + 1}: jumps near or "
                "beyond half a cell cannot be unwrapped; store frames more often or give image counts (H5MD)")
    return steps


def unwrap_with_images(positions: np.ndarray, images: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Continuous positions [nf, N, 3] Å from positions, image counts [nf, N, 3] and cells [nf, 3, 3] Å.

    Works whether the stored positions are wrapped (plain H5MD convention: add images) or already
    unwrapped with the image counts of their wrapped copies (cathodeml's writer).  The atoms with
    a non-zero image count tell which: unwrapped storage puts them outside the cell.
    """
    moved = np.any(images != 0, axis=-1)
    if not moved.any():
        return positions
    f, n = np.nonzero(moved)
    f, n = f[:4096], n[:4096]
    frac = geometry.fractional(positions[f, n], cells[f])  # one cell per sampled atom
    if np.any((frac < -1e-6) | (frac > 1 + 1e-6)):
        return positions
    return positions + geometry.cartesian(images, cells)


def framework_drift(unwrapped: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Centre-of-mass position [nf, 3] Å of atoms [nf, M, 3] Å with masses [M] amu."""
    return np.matmul(masses, unwrapped) / masses.sum()


def _per_particle_msd(x: np.ndarray, atoms_per_block: int, max_lag: int | None = None):
    """Yield (slice, MSD [n_block, d, L] Å²) per block of particles for lags 0..L−1 (L = T, or
    max_lag + 1); see `msd_fft`.  The FFTs run along the last, contiguous axis."""
    T, N, d = x.shape
    L = T if max_lag is None else min(T, max_lag + 1)
    n_fft = scipy.fft.next_fast_len(2 * T, real=True)
    counts = (T - np.arange(L)).astype(np.float64)
    for lo in range(0, N, atoms_per_block):
        block = np.ascontiguousarray(np.moveaxis(np.asarray(x[:, lo:lo + atoms_per_block, :], dtype=np.float64), 0, -1))
        block -= block.mean(axis=-1, keepdims=True)
        # S2: autocorrelation Σ_t x(t) x(t+m), via |FFT|² of the zero-padded series.
        spectrum = scipy.fft.rfft(block, n=n_fft, axis=-1, workers=-1)
        power = spectrum.real**2 + spectrum.imag**2
        del spectrum
        s2 = scipy.fft.irfft(power, n=n_fft, axis=-1, workers=-1)[..., :L]
        # S1: Σ_t x(t)² + x(t+m)² over valid origins, by removing one end point per extra lag.
        sq = block * block
        removed = np.zeros(block.shape[:-1] + (L,))
        removed[..., 1:] = np.cumsum(sq[..., : L - 1] + sq[..., ::-1][..., : L - 1], axis=-1)
        out = (2.0 * sq.sum(axis=-1, keepdims=True) - removed - 2.0 * s2) / counts
        out[..., 0] = 0.0
        yield slice(lo, lo + block.shape[0]), out


def msd_fft(x: np.ndarray, *, atoms_per_block: int = 256) -> np.ndarray:
    """Mean-squared displacement over all time origins, per axis, summed over particles.

    x [T, N, d] continuous positions (Å) of N particles, T frames evenly spaced in time.
    Returns [T, d] Å²: for lag m and axis a, Σ_i (1/(T−m)) Σ_t (x_ia(t+m) − x_ia(t))².  Divide
    by N for the per-particle (self) MSD.  Float64 throughout.
    """
    T, N, d = x.shape
    out = np.zeros((d, T))
    for _, block in _per_particle_msd(x, atoms_per_block):
        out += block.sum(axis=0)
    return out.T


def self_msd_and_particle_msd(x: np.ndarray, max_lag: int, *, atoms_per_block: int = 256,
                              on_block=None) -> tuple[np.ndarray, np.ndarray]:
    """In one FFT pass: MSD_self [T, d] Å² (per particle) and every particle's own MSD
    [N, d, max_lag + 1] Å² for lags up to max_lag (what the per-ion error bars need).
    `on_block(particles_done, N)` is called after each block of particles."""
    T, N, d = x.shape
    total = np.zeros((d, T))
    particles = np.empty((N, d, min(T, max_lag + 1)))
    for sl, block in _per_particle_msd(x, atoms_per_block):
        total += block.sum(axis=0)
        particles[sl] = block[..., : particles.shape[-1]]
        if on_block is not None:
            on_block(sl.stop, N)
    return total.T / N, particles


def particle_slopes(particle_msd: np.ndarray, time_fs: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Least-squares slope (Å²/fs) of each particle's MSD [N, d, L] (lag times time_fs[:L] fs)
    over the window: [N, d].  Their scatter measures how precisely one trajectory of one
    particle fixes D over this window, which sets the error bars of D_self and D_σ."""
    t = time_fs[: particle_msd.shape[-1]]
    sel = (t >= window[0]) & (t <= window[1])
    tw = t[sel]
    weights = (tw - tw.mean()) / np.sum((tw - tw.mean()) ** 2)
    return particle_msd[..., sel] @ weights


def msd_direct(x: np.ndarray) -> np.ndarray:
    """The O(N·T²) definition of `msd_fft` (same units and shape), for tests and tiny inputs."""
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    out = np.zeros((T, x.shape[2]))
    for m in range(1, T):
        out[m] = ((x[m:] - x[:-m]) ** 2).sum(axis=1).mean(axis=0)
    return out


def self_and_collective_msd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MSD_self [T, d] Å² (per ion) and MSD_total [T, d] Å² (of the summed displacement, per ion).

    x [T, N, d] continuous positions of the N mobile ions.  MSD_total(t) = ⟨|Σ_i Δr_i(t)|²⟩ / N,
    so that MSD_total = MSD_self for uncorrelated ions and MSD_distinct = MSD_total − MSD_self
    = (1/N) Σ_{i≠j} ⟨Δr_i·Δr_j⟩ measures correlation (negative: anti-correlated motion).
    """
    n = x.shape[1]
    self_msd = msd_fft(x) / n
    total_msd = msd_fft(x.sum(axis=1, keepdims=True)) / n
    return self_msd, total_msd
