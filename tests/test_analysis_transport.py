"""Nernst–Einstein conductivity, fit windows and the Arrhenius fit against independent
references (scipy.constants, scipy.optimize.curve_fit) and data generated from a known Eₐ."""

import math

import numpy as np
import pytest
import scipy.constants as sc
import scipy.optimize

from cathodeml.analysis import transport
from cathodeml.analysis.arrhenius import arrhenius_fit
from cathodeml.analysis.pipeline import parse_fit_window
from cathodeml.errors import CathodemlError


def test_nernst_einstein_conductivity_matches_si_hand_calculation():
    # Li3TiCl6-like numbers: 1152 Li in 60 nm³, D = 1e-7 cm²/s at 298 K.
    d_cm2_s, n_ions, volume_a3, t = 1e-7, 1152, 60_000.0, 298.0
    n_m3 = n_ions / (volume_a3 * 1e-30)
    expected_s_per_m = n_m3 * sc.e**2 * (d_cm2_s * 1e-4) / (sc.k * t)
    got = transport.nernst_einstein_conductivity(d_cm2_s / 0.1, n_ions, volume_a3, t)  # D given in Å²/fs
    assert got == pytest.approx(expected_s_per_m * 10.0, rel=1e-9)  # mS/cm
    # A Haven ratio below one raises σ by 1/H_R; a divalent ion carries Z² = 4 times more.
    assert transport.nernst_einstein_conductivity(1e-6, 10, 1e3, 300, haven=0.5) == pytest.approx(
        2 * transport.nernst_einstein_conductivity(1e-6, 10, 1e3, 300), rel=1e-12)
    assert transport.nernst_einstein_conductivity(1e-6, 10, 1e3, 300, charge=2) == pytest.approx(
        4 * transport.nernst_einstein_conductivity(1e-6, 10, 1e3, 300), rel=1e-12)


def test_auto_fit_window_starts_after_the_caged_regime():
    t = np.arange(0, 40_000.0, 20.0)  # fs
    d = 1e-4  # Å²/fs
    tau = 3000.0  # cage escape time: the MSD is sub-linear (plateau) well beyond 1 ps
    msd = 2.0 * (1 - np.exp(-t / 100.0)) + 6 * d * t * (1 - np.exp(-t / tau))
    start, end = transport.auto_fit_window(t, msd)
    assert end == pytest.approx(0.5 * t[-1])
    assert 3000.0 < start < 12_000.0
    # and the fit over that window gives back D within the residual curvature
    assert transport.diffusion_coefficient(t, msd, (start, end)) == pytest.approx(d, rel=0.1)


def test_auto_fit_window_never_starts_before_one_picosecond():
    t = np.arange(0, 20_000.0, 10.0)
    start, _ = transport.auto_fit_window(t, 6e-4 * t + 0.5)
    assert start >= 1000.0


def test_fit_window_syntax():
    w = parse_fit_window("2ps:T/2")
    assert w.resolve(10_000.0, lambda: 0.0) == (2000.0, 5000.0)
    assert parse_fit_window("500fs:0.8T").resolve(10_000.0, lambda: 0.0) == (500.0, 8000.0)
    assert parse_fit_window("auto:4ps").resolve(10_000.0, lambda: 1234.0) == (1234.0, 4000.0)
    with pytest.raises(CathodemlError, match="unit"):
        parse_fit_window("2:5")
    with pytest.raises(CathodemlError, match="lasts only"):
        parse_fit_window("1ps:20ps").resolve(10_000.0, lambda: 0.0)


def test_too_few_frames_in_the_fit_window_is_an_error():
    t = np.arange(10) * 100.0
    with pytest.raises(CathodemlError, match="fit window"):
        transport.diffusion_coefficient(t, t * 0.01, (100.0, 300.0))


def _arrhenius_data(rng, ea=0.25, d0=1e-3, rel_err=0.05):
    t = np.array([300.0, 350.0, 400.0, 450.0, 500.0, 600.0])
    d = d0 * np.exp(-ea / (sc.k / sc.e * t))
    err = rel_err * d
    return t, d * np.exp(rng.normal(0, rel_err, size=len(t))), err


def test_arrhenius_fit_recovers_the_activation_energy_it_was_generated_with():
    t, d, err = _arrhenius_data(np.random.default_rng(0))
    exact = arrhenius_fit(t, 1e-3 * np.exp(-0.25 / (sc.k / sc.e * t)), err)
    assert exact.activation_energy_eV == pytest.approx(0.25, rel=1e-5)  # k_B (CODATA) consistent with scipy
    hits = 0
    for seed in range(40):
        fit = arrhenius_fit(*_arrhenius_data(np.random.default_rng(seed)))
        hits += abs(fit.activation_energy_eV - 0.25) <= 1.96 * fit.activation_energy_err_eV
    assert hits >= 33  # the 95% interval covers the truth about 95% of the time (≥ 33/40 here)


def test_arrhenius_errors_agree_with_scipy_curve_fit():
    t, d, err = _arrhenius_data(np.random.default_rng(3))
    fit = arrhenius_fit(t, d, err)
    popt, pcov = scipy.optimize.curve_fit(lambda x, a, b: a + b * x, 1 / t, np.log(d), sigma=err / d,
                                          absolute_sigma=True)
    chi2 = np.sum(((np.log(d) - popt[0] - popt[1] / t) / (err / d)) ** 2) / (len(t) - 2)
    scale = max(1.0, chi2)
    assert fit.slope == pytest.approx(popt[1], rel=1e-7)
    assert fit.cov[1, 1] == pytest.approx(pcov[1, 1] * scale, rel=1e-6)


def test_extrapolation_to_room_temperature_has_a_confidence_interval_covering_the_truth():
    truth = 1e-3 * math.exp(-0.25 / (sc.k / sc.e * 300.0))
    hits = 0
    for seed in range(40):
        rng = np.random.default_rng(100 + seed)
        t, d, err = _arrhenius_data(rng)
        keep = t >= 400  # extrapolate from 400–600 K down to 300 K
        ext = arrhenius_fit(t[keep], d[keep], err[keep]).extrapolate(300.0)
        assert ext["ci_low"] < ext["value"] < ext["ci_high"]
        hits += ext["ci_low"] <= truth <= ext["ci_high"]
    assert hits >= 33


def test_sigma_t_fit_takes_the_one_over_t_back_out():
    t = np.array([300.0, 400.0, 500.0])
    sigma_t = 5e4 * np.exp(-0.3 / (sc.k / sc.e * t))
    fit = arrhenius_fit(t, sigma_t / t, None, times_T=True)
    assert fit.activation_energy_eV == pytest.approx(0.3, rel=1e-6)
    assert fit.extrapolate(350.0)["value"] == pytest.approx(5e4 * math.exp(-0.3 / (sc.k / sc.e * 350)) / 350, rel=1e-6)


def test_one_temperature_is_not_an_arrhenius_fit():
    with pytest.raises(CathodemlError, match="two or more"):
        arrhenius_fit([300.0, 300.0], [1e-6, 2e-6], [1e-7, 1e-7])
