"""The training objective: DeePMD-kit's schedule and prefactors, loss over real atoms only."""

import jax.numpy as jnp
import numpy as np

from cathodeml.train.config import LossSettings
from cathodeml.train.loss import (ExponentialDecay, energy_force_virial_loss, lcurve_header,
                                  lcurve_line, prefactors)


def test_learning_rate_decays_stepwise_from_start_to_stop():
    lr = ExponentialDecay(1e-3, 3.51e-8, 5000, 1_000_000)
    assert lr(0) == 1e-3 and lr(4999) == 1e-3  # constant within a decay interval
    # lr(t) = start·(stop/start)^(⌊t/τ⌋·τ/steps): independent closed form
    for t in (5000, 123_456, 999_999):
        expected = 1e-3 * (3.51e-8 / 1e-3) ** ((t // 5000) * 5000 / 1_000_000)
        assert np.isclose(lr(t), expected, rtol=1e-12)
    assert np.isclose(lr(1_000_000), 3.51e-8, rtol=1e-12)  # reaches stop_lr at the last step


def test_decay_steps_longer_than_the_run_are_shortened_as_in_deepmd_kit():
    lr = ExponentialDecay(1e-3, 1e-5, 5000, 300)
    assert lr.effective_decay_steps == 4  # 300 // 100 + 1
    assert np.isclose(lr(300), 1e-5, rtol=0.02) and lr(300) >= 1e-5


def test_prefactors_move_from_start_to_limit_with_the_learning_rate():
    s = LossSettings(start_pref_e=0.02, limit_pref_e=1.0, start_pref_f=1000.0, limit_pref_f=1.0)
    assert np.allclose(prefactors(s, 1e-3, 1e-3), [0.02, 1000.0, 0.0])
    assert np.allclose(prefactors(s, 0.0, 1e-3), [1.0, 1.0, 0.0])
    assert np.allclose(prefactors(s, 5e-4, 1e-3), [0.51, 500.5, 0.0])


def test_loss_is_deepmd_kits_energy_per_atom_and_force_mean_square():
    rng = np.random.default_rng(0)
    n = 5
    pred = {"energy": jnp.array([1.0, 2.0]), "force": jnp.asarray(rng.normal(size=(2, n, 3))),
            "virial": jnp.asarray(rng.normal(size=(2, 3, 3)))}
    label = {"energy": jnp.array([1.5, 1.0]), "force": jnp.zeros((2, n, 3)), "virial": jnp.zeros((2, 3, 3))}
    loss, m = energy_force_virial_loss(pred, label, n, jnp.array([2.0, 3.0, 4.0]), has_virial=True)
    de2 = (0.5 ** 2 + 1.0 ** 2) / 2
    df2 = np.mean(np.asarray(pred["force"]) ** 2)
    dv2 = np.mean(np.asarray(pred["virial"]) ** 2)
    assert np.isclose(loss, 2.0 * de2 / n + 3.0 * df2 + 4.0 * dv2 / n)
    assert np.isclose(m["mse_e"], de2) and np.isclose(m["mse_f"], df2)


def test_lcurve_has_deepmd_kits_columns():
    header = lcurve_header(has_virial=False).splitlines()[0]
    assert header.lstrip("# ").split() == ["step", "rmse_val", "rmse_trn", "rmse_e_val", "rmse_e_trn",
                                           "rmse_f_val", "rmse_f_trn", "lr"]
    row = lcurve_line(100, [1.0, 2e-3, 0.1], [1.1, 3e-3, 0.2], 1e-3)
    values = np.array(row.split(), dtype=float)
    assert values[0] == 100 and np.allclose(values[1:], [1.0, 1.1, 2e-3, 3e-3, 0.1, 0.2, 1e-3])
