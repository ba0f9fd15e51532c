"""Arrhenius fits: activation energy and extrapolation of D or σ to room temperature.

ln Q = ln Q₀ − Eₐ/(k_B T) is a straight line in 1/T, fitted by weighted least squares with
weights 1/σ²(ln Q) = (Q/δQ)² — the block-averaging errors of each run — so noisy high-T or
low-T points count less.  For conductivity the line is ln(σT) (the Nernst–Einstein prefactor
carries 1/T).  The parameter covariance is the textbook (AᵀWA)⁻¹ for absolute errors, inflated
by the reduced χ² when the points scatter more than their error bars say (never deflated), and
the extrapolated value's confidence interval follows from that covariance on the log scale
(Student t with n − 2 degrees of freedom when the errors are unknown and the fit is unweighted).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cathodeml import units
from cathodeml.errors import CathodemlError


@dataclasses.dataclass(frozen=True)
class ArrheniusFit:
    """ln Q = intercept + slope/T.  slope in K, activation energy Ea = −slope·k_B in eV;
    cov the 2×2 covariance of (intercept, slope); `times_T` whether Q is σT (not σ or D)."""

    intercept: float
    slope: float
    cov: np.ndarray
    n_points: int
    weighted: bool
    times_T: bool

    @property
    def activation_energy_eV(self) -> float:
        return -self.slope * units.BOLTZMANN_EV_PER_K

    @property
    def activation_energy_err_eV(self) -> float:
        return math.sqrt(self.cov[1, 1]) * units.BOLTZMANN_EV_PER_K

    @property
    def prefactor(self) -> tuple[float, float]:
        """Q₀ = exp(intercept) and its first-order error, in the units of Q (× K when σT)."""
        q0 = math.exp(self.intercept)
        return q0, q0 * math.sqrt(self.cov[0, 0])

    def critical_value(self, confidence: float) -> float:
        """Two-sided quantile: normal for absolute (weighted) errors, Student t otherwise."""
        import scipy.stats  # slow to import; only needed here

        p = 0.5 + 0.5 * confidence
        if self.weighted or self.n_points <= 2:
            return float(scipy.stats.norm.ppf(p))
        return float(scipy.stats.t.ppf(p, self.n_points - 2))

    def extrapolate(self, temperature_k: float, confidence: float = 0.95) -> dict:
        """Q at `temperature_k` (σ or D, units of the input, the 1/T of σT taken back out):
        {"value", "err" (first-order), "ci_low", "ci_high"}."""
        x = 1.0 / temperature_k
        y = self.intercept + self.slope * x
        var = self.cov[0, 0] + x * x * self.cov[1, 1] + 2 * x * self.cov[0, 1]
        sd = math.sqrt(max(var, 0.0))
        z = self.critical_value(confidence)
        scale = 1.0 / temperature_k if self.times_T else 1.0
        value = math.exp(y) * scale
        return {"value": value, "err": value * sd, "ci_low": math.exp(y - z * sd) * scale,
                "ci_high": math.exp(y + z * sd) * scale, "confidence": confidence}


def arrhenius_fit(temperature_k, values, errors=None, *, times_T: bool = False) -> ArrheniusFit:
    """Fit ln Q (Q = values, or values·T with `times_T`) against 1/T (K).

    errors are the standard errors of `values` (same units); when all are finite and positive
    the fit is weighted, otherwise unweighted with the covariance from the residuals.
    """
    t = np.asarray(temperature_k, dtype=float)
    q = np.asarray(values, dtype=float)
    if len(t) != len(q):
        raise ValueError("temperature and values must have the same length")
    if not np.all(np.isfinite(t) & (t > 0)):
        raise CathodemlError(f"temperatures must be positive, in K (got {', '.join(f'{x:g}' for x in t)})")
    if len(np.unique(t)) < 2:
        raise CathodemlError("an Arrhenius fit needs runs at two or more different temperatures")
    if np.any(q <= 0) or not np.all(np.isfinite(q)):
        bad = t[(q <= 0) | ~np.isfinite(q)]
        raise CathodemlError(f"non-positive or missing D/σ at T = {', '.join(f'{x:g}' for x in bad)} K: "
                             "no Arrhenius fit on a log scale; leave those points out (or lengthen those runs)")
    y = np.log(q * t) if times_T else np.log(q)
    a = np.column_stack([np.ones_like(t), 1.0 / t])
    err = None if errors is None else np.asarray(errors, dtype=float)
    weighted = err is not None and np.all(np.isfinite(err)) and np.all(err > 0)
    w = (q / err) ** 2 if weighted else np.ones_like(t)
    normal = a.T @ (w[:, None] * a)
    cov = np.linalg.inv(normal)
    beta = cov @ (a.T @ (w * y))
    dof = len(t) - 2
    chi2 = float(np.sum(w * (y - a @ beta) ** 2))
    if weighted:
        if dof > 0 and chi2 / dof > 1.0:
            cov = cov * (chi2 / dof)
    elif dof > 0:
        cov = cov * (chi2 / dof)
    else:
        cov = np.full((2, 2), np.nan)
    return ArrheniusFit(intercept=float(beta[0]), slope=float(beta[1]), cov=cov, n_points=len(t),
                        weighted=bool(weighted), times_T=times_T)
