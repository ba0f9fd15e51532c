"""MSD by FFT, unwrapping and drift removal: checked against the O(T²) definition and walkers
whose diffusion coefficient and Haven ratio are known analytically."""

import numpy as np
import pytest

from analysis_synth import gaussian_walk, lattice_pair_hops
from cathodeml.analysis import msd, transport
from cathodeml.errors import CathodemlError


def test_fft_msd_equals_direct_average_over_all_time_origins():
    rng = np.random.default_rng(0)
    x = gaussian_walk(rng, 157, 7, 0.3) + rng.normal(0, 50.0, size=(1, 7, 3))  # large absolute coordinates
    np.testing.assert_allclose(msd.msd_fft(x, atoms_per_block=3), msd.msd_direct(x), rtol=1e-10, atol=1e-10)


def test_random_walk_msd_grows_as_six_d_t_with_the_analytic_d():
    rng = np.random.default_rng(1)
    dt, sigma = 2.0, 0.05  # fs, Å per axis per step → D = σ²/(2 dt) Å²/fs
    x = gaussian_walk(rng, 1000, 2000, sigma)
    self_msd, _ = msd.self_and_collective_msd(x)
    t = np.arange(len(x)) * dt
    d_true = sigma**2 / (2 * dt)
    # 2000 walkers, lags ≤ 1/4 of the run: the statistical error of D is about 1%.
    d = transport.diffusion_coefficient(t, self_msd.sum(axis=1), (20.0, 500.0))
    assert d == pytest.approx(d_true, rel=0.04)
    for axis in range(3):  # isotropic: each axis carries a third
        assert transport.diffusion_coefficient(t, self_msd[:, axis], (20.0, 500.0), dim=1) == pytest.approx(d_true, rel=0.06)


def _ensemble_msd(systems):
    """MSD_self and MSD_total averaged over independent systems (the collective MSD of one
    system is a single trajectory of the summed displacement: only an ensemble makes it precise)."""
    pairs = [msd.self_and_collective_msd(x) for x in systems]
    return np.mean([p[0] for p in pairs], axis=0).sum(1), np.mean([p[1] for p in pairs], axis=0).sum(1)


def test_haven_ratio_is_one_for_independent_walkers():
    rng = np.random.default_rng(2)
    s, c = _ensemble_msd([gaussian_walk(rng, 400, 16, 0.1) for _ in range(400)])
    t = np.arange(400) * 1.0
    d_self = transport.diffusion_coefficient(t, s, (10.0, 100.0))
    d_sigma = transport.diffusion_coefficient(t, c, (10.0, 100.0))
    assert d_self / d_sigma == pytest.approx(1.0, abs=0.08)


def test_pairs_hopping_together_have_haven_ratio_one_half():
    rng = np.random.default_rng(3)
    dt, a, p = 10.0, 2.5, 0.05
    s, c = _ensemble_msd([lattice_pair_hops(rng, 600, 8, a=a, p_hop=p, sign=+1) for _ in range(300)])
    t = np.arange(600) * dt
    # Each hop moves an ion a², probability p per frame: D_self = p a² / (6 dt) exactly.
    d_self = transport.diffusion_coefficient(t, s, (200.0, 1500.0))
    assert d_self == pytest.approx(p * a**2 / (6 * dt), rel=0.04)
    d_sigma = transport.diffusion_coefficient(t, c, (200.0, 1500.0))
    assert d_self / d_sigma == pytest.approx(0.5, abs=0.05)


def test_pairs_hopping_oppositely_have_distinct_msd_equal_to_minus_self():
    rng = np.random.default_rng(4)
    x = lattice_pair_hops(rng, 800, 50, a=2.0, p_hop=0.1, sign=-1)
    s, c = msd.self_and_collective_msd(x)
    np.testing.assert_allclose(c, 0.0, atol=1e-9)  # the summed displacement never moves
    np.testing.assert_allclose((c - s).sum(1), -s.sum(1), atol=1e-9)
    assert s.sum(1)[-1] > 1.0


def _triclinic_cell():
    return np.array([[9.0, 0.0, 0.0], [3.1, 8.2, 0.0], [-2.4, 1.7, 10.5]])


def test_minimum_image_unwrapping_recovers_the_continuous_path_in_a_triclinic_cell():
    rng = np.random.default_rng(5)
    cell = _triclinic_cell()
    x = gaussian_walk(rng, 400, 20, 0.4, start=rng.uniform(0, 9, size=(20, 3)))
    frac = x @ np.linalg.inv(cell)
    wrapped_frac = frac - np.floor(frac)
    steps = msd.minimum_image_steps(wrapped_frac)
    unwrapped = x[0] + np.concatenate([np.zeros((1, 20, 3)), np.cumsum(steps @ cell, axis=0)], axis=0)
    np.testing.assert_allclose(unwrapped, x, atol=1e-9)
    assert np.abs(np.floor(frac)).max() >= 2  # the walkers really crossed the cell several times


def test_image_counts_unwrap_both_wrapped_and_already_unwrapped_storage():
    rng = np.random.default_rng(6)
    cell = _triclinic_cell()
    x = gaussian_walk(rng, 50, 10, 1.5, start=rng.uniform(0, 9, size=(10, 3)))
    frac = x @ np.linalg.inv(cell)
    image = np.floor(frac).astype(np.int32)
    cells = np.broadcast_to(cell, (50, 3, 3))
    wrapped = (frac - image) @ cell
    np.testing.assert_allclose(msd.unwrap_with_images(wrapped, image, cells), x, atol=1e-9)
    np.testing.assert_allclose(msd.unwrap_with_images(x, image, cells), x, atol=1e-12)


def test_a_jump_of_more_than_half_a_cell_cannot_be_unwrapped():
    frac = np.array([[[0.1, 0.5, 0.5]], [[0.65, 0.5, 0.5]]])
    with pytest.raises(CathodemlError, match="half a cell"):
        msd.minimum_image_steps(frac)


def test_framework_centre_of_mass_follows_a_rigid_drift():
    rng = np.random.default_rng(7)
    frame = rng.uniform(0, 10, size=(30, 3))
    drift = np.linspace(0, 1, 20)[:, None] * np.array([0.3, -0.2, 0.5])
    masses = rng.uniform(1, 100, size=30)
    com = msd.framework_drift(frame[None] + drift[:, None], masses)
    np.testing.assert_allclose(com - com[0], drift, atol=1e-12)


def test_error_bars_of_d_self_and_d_sigma_cover_the_truth_for_random_walkers(tmp_path):
    from analysis_synth import write_h5md
    from cathodeml.analysis.pipeline import AnalysisSettings, analyze_trajectory, parse_fit_window
    from cathodeml.io.trajectory import open_trajectory

    rng = np.random.default_rng(11)
    cell = np.diag([20.0, 20.0, 20.0])
    dt, sigma = 10.0, 0.08
    d_true = sigma**2 / (2 * dt) * 0.1  # cm²/s, independent walkers: D_σ = D_self
    settings = AnalysisSettings(fit_window=parse_fit_window("500fs:T/2"), blocks=4)
    covered_self = covered_sigma = 0
    runs = 30
    for k in range(runs):
        x = gaussian_walk(rng, 400, 64, sigma, start=rng.random((64, 3)) * 20.0)
        write_h5md(tmp_path / "w.h5", x, cell, ["Li"] * 64, ["Li"], dt_fs=dt, temperature_K=300.0)
        with open_trajectory(tmp_path / "w.h5") as traj:
            r = analyze_trajectory(traj, settings)
        covered_self += abs(r.D_self.value - d_true) <= 1.96 * r.D_self.err
        covered_sigma += abs(r.D_sigma.value - d_true) <= 1.96 * r.D_sigma.err
    # nominal 95%; demand at least 80% of 30 (a binomial 95% process falls below 24/30 with p < 0.1%)
    assert covered_self >= 24 and covered_sigma >= 24
