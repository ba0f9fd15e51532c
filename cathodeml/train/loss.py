"""The training objective: DeePMD-kit's learning-rate schedule, prefactors and energy/force/virial loss.

Schedule and prefactors are cheap scalar functions evaluated on the host each step and handed
to the jitted step as traced scalars, so the step compiles once whatever the learning rate.
The loss works on per-frame predictions that already count only the *real* atoms: virtual spin
atoms carry no labels, their forces are folded onto their hosts before the loss sees them, and
the per-atom normalisation uses the real-atom count N.  Every quantity is a per-batch mean, so a
batch split over several devices gives the same number as one device (up to summation order).
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class ExponentialDecay:
    """lr(t) = start_lr · decay_rate^⌊t/decay_steps⌋, floored at stop_lr (1/step units).

    decay_rate = (stop_lr/start_lr)^(decay_steps/steps), DeePMD-kit's "exp" schedule; when
    decay_steps ≥ steps DeePMD-kit shortens it (to 100, or steps//100 + 1 for short runs) and
    so do we, so the two agree step for step.
    """

    start_lr: float
    stop_lr: float
    decay_steps: int
    steps: int

    @property
    def effective_decay_steps(self) -> int:
        if self.decay_steps >= self.steps:
            return 100 if self.steps // 10 > 100 else self.steps // 100 + 1
        return self.decay_steps

    @property
    def decay_rate(self) -> float:
        if self.steps <= 0:
            return 1.0
        return math.exp(math.log(self.stop_lr / self.start_lr) / (self.steps / self.effective_decay_steps))

    def __call__(self, step: int) -> float:
        lr = self.start_lr * self.decay_rate ** (step // self.effective_decay_steps)
        return max(lr, self.stop_lr)


def prefactor(lr: float, start_lr: float, start: float, limit: float) -> float:
    """p(t) = limit + (start − limit)·lr(t)/start_lr (dimensionless weight)."""
    return limit + (start - limit) * lr / start_lr


def prefactors(loss_settings, lr: float, start_lr: float) -> np.ndarray:
    """[p_e, p_f, p_v] at learning rate `lr` for a LossSettings."""
    s = loss_settings
    return np.array([
        prefactor(lr, start_lr, s.start_pref_e, s.limit_pref_e),
        prefactor(lr, start_lr, s.start_pref_f, s.limit_pref_f),
        prefactor(lr, start_lr, s.start_pref_v, s.limit_pref_v),
    ])


def energy_force_virial_loss(pred, label, n_real: int, pref, has_virial: bool, has_force: bool = True):
    """DeePMD-kit's energy loss over a batch; returns (loss, metrics dict).

    pred/label: dicts with "energy" [B] eV, "force" [B, n_real, 3] eV/Å, "virial" [B, 3, 3] eV.
    loss = p_e·⟨ΔE²⟩/N + p_f·⟨ΔF²⟩ + p_v·⟨ΔW²⟩/N with N the real-atom count; metrics hold the
    mean squares "mse_e" (eV²), "mse_f" (eV²/Å²), "mse_v" (eV²) for RMSEs (E and W per atom
    are √mse/N).  Without force labels (`has_force` False, as DeePMD-kit does for data without
    force.npy) the force term is absent -- not a fit to zero forces -- and so is "mse_f".
    """
    inv_n = 1.0 / n_real
    mse_e = jnp.mean((pred["energy"] - label["energy"]) ** 2)
    loss = pref[0] * mse_e * inv_n
    metrics = {"mse_e": mse_e}
    if has_force:
        mse_f = jnp.mean((pred["force"] - label["force"]) ** 2)
        loss = loss + pref[1] * mse_f
        metrics["mse_f"] = mse_f
    if has_virial:
        mse_v = jnp.mean((pred["virial"] - label["virial"]) ** 2)
        loss = loss + pref[2] * mse_v * inv_n
        metrics["mse_v"] = mse_v
    return loss, metrics


# ----------------------------------------------------------------------------- lcurve.out

def lcurve_header(has_virial: bool) -> str:
    """DeePMD-kit's lcurve.out header (its 3.x layout): step, then per quantity (sorted: rmse =
    √loss, rmse_e, rmse_f, rmse_v) a validation and a training column, then lr."""
    keys = ["rmse", "rmse_e", "rmse_f"] + (["rmse_v"] if has_virial else [])
    text = "# {:5s}".format("step") + "".join("   %11s %11s" % (k + "_val", k + "_trn") for k in keys)
    text += "   {:8s}\n".format("lr")
    return text + "# If there is no available reference data, rmse_*_{val,trn} will print nan\n"


def lcurve_line(step: int, val: list[float], trn: list[float], lr: float) -> str:
    """One lcurve.out row: pairs (validation, training) of RMSEs -- total √loss, energy and
    virial per atom (eV), force (eV/Å) -- then the learning rate (1/step)."""
    text = f"{step:7d}" + "".join("   %11.2e %11.2e" % (v, t) for v, t in zip(val, trn))
    return text + f"   {lr:8.1e}\n"
