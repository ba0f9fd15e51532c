"""Diffusion coefficients, Haven ratio and Nernst–Einstein conductivity from MSD curves.

D = slope/(2·dim) from an ordinary least-squares line with a free intercept (the intercept
absorbs the ballistic/caged start and vibrational offsets) over a fit window that by default
starts where the MSD turns linear — the log–log slope settles at ≈1, but not before 1 ps — and
ends at half the run.  Error bars take the larger of two estimates, because each misses
something the other sees.  (1) Block averaging: the run is cut into contiguous blocks, each
analysed alone (its window clipped to the block), and the spread of the block values gives a
standard error; it sees slow drifts and time correlations but, with short blocks, only short
lags.  (2) Ion scatter: every ion's own MSD fitted over the run's window gives a per-ion D; the
standard error of their mean is the error of D_self, and their relative spread is the relative
error of *one* trajectory's D — which is what the collective displacement Σ Δr_i is — so,
times max(D_σ, D_self) (conservative: a D_σ that came out small by chance must not shrink its
own error bar), it sets the error of D_σ.  Several runs at one temperature (replicas) are combined as independent
samples.  Everything here is a pure function of arrays in Å, fs, K; conversion to cm²/s and
mS/cm happens through `units`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cathodeml import units
from cathodeml.errors import CathodemlError

MIN_FIT_START_FS = 1000.0
MIN_FIT_POINTS = 5
LINEAR_SLOPE_TOLERANCE = 0.2  # |d ln MSD / d ln t − 1| that counts as diffusive


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A number with its standard error and unit."""

    value: float
    err: float
    unit: str

    def to_dict(self) -> dict:
        return {"value": _finite(self.value), "err": _finite(self.err), "unit": self.unit}


def _finite(x):
    return float(x) if x is not None and math.isfinite(x) else None


def loglog_slope(time_fs: np.ndarray, msd: np.ndarray, points_per_decade: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Local slope d ln MSD / d ln t on a log-spaced grid: (times fs, slopes), from a
    least-squares line through the points within ±1/(2·points_per_decade) decade of each."""
    ok = (time_fs > 0) & (msd > 0)
    t, m = np.log10(time_fs[ok]), np.log10(msd[ok])
    if len(t) < 3:
        return np.array([]), np.array([])
    grid = np.arange(t[0], t[-1], 1.0 / points_per_decade)
    half = 1.0 / points_per_decade
    times, slopes = [], []
    for g in grid:
        sel = np.abs(t - g) <= half
        if np.count_nonzero(sel) >= 3:
            times.append(10**g)
            slopes.append(np.polyfit(t[sel], m[sel], 1)[0])
    return np.asarray(times), np.asarray(slopes)


def auto_fit_window(time_fs: np.ndarray, msd: np.ndarray, *, min_start_fs: float = MIN_FIT_START_FS) -> tuple[float, float]:
    """Default fit window (start, end) in fs: from where the log–log slope of the MSD stays within
    LINEAR_SLOPE_TOLERANCE of 1 for at least a factor two in time (but ≥ `min_start_fs`), to half
    the run.  When the MSD never turns linear before half the run, the start is `min_start_fs`."""
    end = 0.5 * float(time_fs[-1])
    times, slopes = loglog_slope(time_fs[time_fs <= end], msd[time_fs <= end])
    start = min_start_fs
    linear = np.abs(slopes - 1.0) <= LINEAR_SLOPE_TOLERANCE
    for k, t in enumerate(times):
        if t < min_start_fs:
            continue
        later = (times >= t) & (times <= 2 * t)
        if linear[k] and np.all(linear[later]):
            start = float(t)
            break
    return start, end


def linear_fit(time_fs: np.ndarray, y: np.ndarray, window: tuple[float, float]) -> tuple[float, float]:
    """(slope, intercept) of y against t (fs) by ordinary least squares over t in [start, end]."""
    sel = (time_fs >= window[0]) & (time_fs <= window[1])
    if np.count_nonzero(sel) < MIN_FIT_POINTS:
        raise CathodemlError(
            f"only {np.count_nonzero(sel)} stored frames fall in the fit window {window[0] / 1000:g}–{window[1] / 1000:g} ps "
            f"(at least {MIN_FIT_POINTS} needed): use a longer run, a wider --fit-window or fewer --blocks")
    slope, intercept = np.polyfit(time_fs[sel], y[sel], 1)
    return float(slope), float(intercept)


def diffusion_coefficient(time_fs: np.ndarray, msd: np.ndarray, window: tuple[float, float], dim: int = 3) -> float:
    """D in Å²/fs = slope/(2·dim) of MSD (Å², summed over `dim` axes) against time (fs) in the window."""
    return linear_fit(time_fs, msd, window)[0] / (2 * dim)


def block_error(values: np.ndarray) -> float:
    """Standard error of the mean of independent block estimates (NaN for fewer than two)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def ion_scatter_errors(per_ion_d: np.ndarray) -> tuple[float, float]:
    """From per-ion diffusion coefficients [N] (any unit): (standard error of their mean, in that
    unit; relative scatter of a single ion's estimate, dimensionless)."""
    per_ion_d = np.asarray(per_ion_d, dtype=float)
    if len(per_ion_d) < 2:
        return float("nan"), float("nan")
    sd = float(np.std(per_ion_d, ddof=1))
    return sd / math.sqrt(len(per_ion_d)), sd / abs(float(per_ion_d.mean()))


def larger_error(*errors: float) -> float:
    """The largest finite error of several estimates (NaN when none is finite)."""
    finite = [e for e in errors if e is not None and math.isfinite(e)]
    return max(finite) if finite else float("nan")


def block_window(window: tuple[float, float], block_duration_fs: float) -> tuple[float, float]:
    """The fit window (fs) used inside one block: the run's window with its end cut at half the
    block and its start at a quarter of the block, so every block has a usable linear range."""
    return min(window[0], 0.25 * block_duration_fs), min(window[1], 0.5 * block_duration_fs)


def haven_ratio(d_self: Estimate, d_sigma: Estimate) -> Estimate:
    """H_R = D_self / D_σ (dimensionless), with first-order propagated error."""
    h = d_self.value / d_sigma.value
    rel = math.hypot(d_self.err / d_self.value, d_sigma.err / d_sigma.value)
    return Estimate(h, abs(h) * rel, "")


def nernst_einstein_conductivity(d_a2_per_fs: float, n_ions: int, volume_a3: float, temperature_k: float,
                                 charge: float = 1.0, haven: float = 1.0) -> float:
    """σ = n e² Z² D / (H_R k_B T) in mS/cm, from D in Å²/fs, n = n_ions / volume (Å³), T in K.

    With H_R = 1 this is the tracer (uncorrelated) conductivity; with the Haven ratio it equals
    n e² Z² D_σ / (k_B T), the collective conductivity.
    """
    n = n_ions / volume_a3 * units.PER_A3_IN_PER_M3
    d = d_a2_per_fs * units.A2_PER_FS_IN_M2_PER_S
    q = charge * units.ELEMENTARY_CHARGE_C
    sigma_s_per_m = n * q * q * d / (haven * units.BOLTZMANN_J_PER_K * temperature_k)
    return sigma_s_per_m * units.S_PER_M_IN_MS_PER_CM


def combine_replicas(estimates: list[Estimate]) -> Estimate:
    """Mean of independent runs at one temperature; error = the larger of the replica spread's
    standard error and the propagated individual errors (so two nearly equal runs with large
    block errors do not claim a tiny uncertainty)."""
    values = np.array([e.value for e in estimates])
    errs = np.array([e.err for e in estimates])
    spread = block_error(values)
    propagated = float(np.sqrt(np.nansum(errs**2)) / len(errs))
    err = propagated if not math.isfinite(spread) else max(spread, propagated)
    return Estimate(float(values.mean()), err, estimates[0].unit)


def to_cm2_per_s(d_a2_per_fs: float) -> float:
    """Å²/fs → cm²/s."""
    return d_a2_per_fs * units.A2_PER_FS_IN_CM2_PER_S
