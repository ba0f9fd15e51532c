"""Integrators and thermostat against analytic results, an ODE solver and ASE's NoseHooverChainNVT."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk
from scipy.integrate import solve_ivp

from cathodeml.md import integrators as integ
from cathodeml.md.potentials import energy_and_forces, harmonic_wells, lennard_jones
from cathodeml.md.runner import RunSettings, Simulation
from cathodeml.units import AMU_A2_PER_FS2_IN_EV, BOLTZMANN_EV_PER_K

# Argon: ε = 0.0104 eV, σ = 3.40 Å; fcc a = 5.26 Å; 2×2×2 conventional cells = 32 atoms.
ARGON = dict(epsilon=0.0104, sigma=3.40, cutoff=8.0)


def argon_crystal(reps=2):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((reps, reps, reps))
    return atoms.positions.copy(), atoms.cell.array.copy(), atoms.get_masses()


def run_frames(potential, positions, cell, masses, velocities, **settings):
    sim = Simulation(potential, cell, masses, RunSettings(**settings))
    frames = []
    sim.run(sim.initial_state(positions, velocities), on_frame=frames.append)
    return frames


def block_error(x, n_blocks=20):
    """Standard error of the mean of a correlated series from block averages."""
    blocks = np.array_split(np.asarray(x), n_blocks)
    means = np.array([b.mean() for b in blocks])
    return means.std(ddof=1) / np.sqrt(n_blocks)


def test_suzuki_yoshida_weights_sum_to_one_and_cancel_third_order():
    for n in (3, 5, 7):
        w = np.array(integ.suzuki_yoshida_weights(n))
        assert w.sum() == pytest.approx(1.0, abs=1e-14)
        assert np.sum(w**3) == pytest.approx(0.0, abs=1e-12)  # the 4th-order condition
    w7 = np.array(integ.suzuki_yoshida_weights(7))
    assert np.sum(w7**5) == pytest.approx(0.0, abs=1e-12)  # and the 6th-order one


def _chain_ode_reference(v0, m, chain0, th, t_end):
    """The Nosé–Hoover chain flow (thermostat acting alone) solved to 1e-13 by DOP853."""
    q, kT, nf = th.masses, th.kT, th.n_dof
    n = v0.size

    def rhs(_t, y):
        v, vx = y[:n].reshape(v0.shape), y[n + 3:]
        ke2 = AMU_A2_PER_FS2_IN_EV * np.sum(m[:, None] * v**2)
        g = np.array([(ke2 - nf * kT) / q[0], (q[0] * vx[0] ** 2 - kT) / q[1], (q[1] * vx[1] ** 2 - kT) / q[2]])
        g[:2] -= vx[:2] * vx[1:]
        return np.concatenate([(-vx[0] * v).ravel(), vx, g])

    y0 = np.concatenate([v0.ravel(), np.zeros(3), np.asarray(chain0.v_xi)])
    return solve_ivp(rhs, (0, t_end), y0, rtol=1e-13, atol=1e-15, method="DOP853").y[:, -1]


@pytest.mark.parametrize("n_sy, order", [(1, 2), (3, 4), (5, 4), (7, 6)])
def test_suzuki_yoshida_thermostat_propagator_has_the_expected_order(n_sy, order):
    rng = np.random.default_rng(1)
    m = np.array([7.0, 16.0, 55.0, 7.0, 16.0])
    v0 = rng.normal(size=(5, 3)) * np.sqrt(BOLTZMANN_EV_PER_K * 600 / (m[:, None] * AMU_A2_PER_FS2_IN_EV))
    th = integ.NoseHooverChain(300.0, 20.0, n_dof=15, chain_length=3, weights=integ.suzuki_yoshida_weights(n_sy))
    chain0 = integ.ChainState(jnp.zeros(3), jnp.array([0.01, -0.005, 0.002]))
    t_end = 40.0
    ref = _chain_ode_reference(v0, m, chain0, th, t_end)
    errors = []
    @jax.jit
    def propagate(n, vc):
        one = lambda _, vc: integ.nose_hoover_chain_propagate(vc[0], jnp.asarray(m), vc[1], th, t_end / n)  # noqa: E731
        return jax.lax.fori_loop(0, n, one, vc)

    for n in (16, 32):
        v, chain = propagate(n, (jnp.asarray(v0), chain0))
        errors.append(np.abs(np.concatenate([np.ravel(v), chain.xi, chain.v_xi]) - ref).max())
    observed = np.log2(errors[0] / errors[1])
    assert observed == pytest.approx(order, abs=0.25)


def test_velocity_verlet_follows_the_harmonic_orbit_to_second_order():
    # One atom (m = 16 amu) in a well of k = 2 eV/Å²: x(t) = A cos(ωt), ω = sqrt(k/m).
    k, m, amp = 2.0, 16.0, 0.1
    omega = np.sqrt(k / (m * AMU_A2_PER_FS2_IN_EV))  # 1/fs
    pot = harmonic_wells(np.zeros((1, 3)), [k])
    t_end = 2 * np.pi / omega * 3.3
    errors = []
    for dt in (0.5, 0.25):
        force = lambda x: energy_and_forces(pot, x, None, None)  # noqa: E731
        step = jax.jit(lambda s: integ.velocity_verlet_step(s, force, jnp.array([m]), dt))
        s = integ.init_state(np.array([[amp, 0, 0]]), np.zeros((1, 3)), force)
        n = int(round(t_end / dt))
        for _ in range(n):
            s = step(s)
        t = n * dt
        errors.append(np.hypot(float(s.positions[0, 0]) - amp * np.cos(omega * t),
                               (float(s.velocities[0, 0]) + amp * omega * np.sin(omega * t)) / omega))
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)


def test_nve_total_energy_is_conserved_with_second_order_fluctuations():
    x, cell, m = argon_crystal()
    pot = lennard_jones(**ARGON)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(0), m, 60.0)
    spread, kinetic_std = [], None
    for dt in (10.0, 5.0):
        frames = run_frames(pot, x, cell, m, v, dt_fs=dt, n_steps=int(12000 / dt), stride=int(50 / dt),
                            ensemble="nve", temperature_K=60.0, skin=1.0)
        e = np.array([f.conserved_energy for f in frames])
        spread.append(e.std())
        kinetic_std = np.std([f.kinetic_energy for f in frames])
        # no drift: the last quarter averages like the first
        assert abs(e[-len(e) // 4:].mean() - e[: len(e) // 4].mean()) < 3 * e.std()
    assert spread[1] < 1e-2 * kinetic_std
    assert spread[0] / spread[1] == pytest.approx(4.0, rel=0.25)


def test_nvt_temperature_has_canonical_mean_and_fluctuations():
    # Canonical ensemble: <KE> = N_f k_B T / 2 and Var(KE) = N_f (k_B T)² / 2.
    x, cell, m = argon_crystal()
    pot = lennard_jones(**ARGON)
    t_target = 40.0
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(3), m, t_target)
    frames = run_frames(pot, x, cell, m, v, dt_fs=10.0, n_steps=24000, stride=10, ensemble="nvt",
                        temperature_K=t_target, tdamp_fs=200.0, skin=1.5)[200:]
    ke = np.array([f.kinetic_energy for f in frames])
    n_dof = 3 * len(m) - 3
    kT = BOLTZMANN_EV_PER_K * t_target
    assert ke.mean() == pytest.approx(n_dof * kT / 2, abs=4 * block_error(ke))
    dev2 = (ke - ke.mean()) ** 2
    assert dev2.mean() == pytest.approx(n_dof * kT**2 / 2, abs=4 * block_error(dev2))
    temps = np.array([f.temperature for f in frames])
    assert temps.mean() == pytest.approx(t_target, abs=4 * block_error(temps))


def test_nvt_conserved_quantity_is_conserved():
    x, cell, m = argon_crystal()
    pot = lennard_jones(**ARGON)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(1), m, 120.0)  # start far from 40 K
    frames = run_frames(pot, x, cell, m, v, dt_fs=5.0, n_steps=8000, stride=20, ensemble="nvt",
                        temperature_K=40.0, tdamp_fs=100.0, skin=1.5)
    h = np.array([f.conserved_energy for f in frames])
    total = np.array([f.kinetic_energy + f.potential_energy for f in frames])
    # the thermostat moves KE + PE by ~0.25 eV while H stays put to 1e-3 of that, without drift
    assert np.ptp(total) > 0.1
    assert np.ptp(h) < 1e-3 * np.ptp(total)
    assert abs(h[-len(h) // 4:].mean() - h[: len(h) // 4].mean()) < 2 * h.std()


def _ase_calculator(pot, cell):
    from ase.calculators.calculator import Calculator, all_changes

    cell_j = jnp.asarray(cell)
    ef = jax.jit(lambda xx, nbr: energy_and_forces(pot, xx, cell_j, nbr))

    class JaxCalculator(Calculator):
        implemented_properties = ["energy", "forces", "free_energy"]
        capacity = None

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            nbr = pot.build_neighbors(atoms.positions, cell, 0.0, JaxCalculator.capacity)
            JaxCalculator.capacity = nbr
            e, f = ef(jnp.asarray(atoms.positions), nbr)
            self.results = {"energy": float(e), "free_energy": float(e), "forces": np.asarray(f)}

    return JaxCalculator()


def test_nose_hoover_chain_matches_ase_step_by_step_and_in_the_mean():
    from ase import Atoms, units
    from ase.md.nose_hoover_chain import NoseHooverChainNVT

    from cathodeml.units import METAL_TIME_UNIT_FS

    x, cell, m = argon_crystal()
    pot = lennard_jones(**ARGON)
    dt, tdamp, t_target = 5.0, 100.0, 40.0
    v0 = np.asarray(integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(2), m, 80.0))
    n_dof = 3 * len(m)  # ASE counts 3N degrees of freedom
    atoms = Atoms("Ar32", positions=x, cell=cell, pbc=True, masses=m)
    # ASE's time unit is the metal unit, but its k_B (CODATA 2014) differs from ours (2018) by 3e-7:
    # give ASE the temperature with the same k_B·T so both integrate the same equations.
    atoms.set_velocities(v0 * METAL_TIME_UNIT_FS)
    atoms.calc = _ase_calculator(pot, cell)
    dyn = NoseHooverChainNVT(atoms, timestep=dt / METAL_TIME_UNIT_FS, tdamp=tdamp / METAL_TIME_UNIT_FS, tchain=3,
                             temperature_K=t_target * BOLTZMANN_EV_PER_K / units.kB)

    sim = Simulation(pot, cell, m, RunSettings(dt_fs=dt, n_steps=4000, stride=10, ensemble="nvt", temperature_K=t_target,
                                               tdamp_fs=tdamp, skin=1.5, n_dof=n_dof))
    ours = []
    sim.run(sim.initial_state(x, v0), on_frame=ours.append)

    ase_t, ase_pe = [], []
    for i in range(400):
        dyn.run(10)
        if i == 9:  # after 100 steps the two integrations are the same to round-off
            np.testing.assert_allclose(atoms.positions, ours[10].positions, atol=1e-9)
            np.testing.assert_allclose(atoms.get_velocities() / METAL_TIME_UNIT_FS, ours[10].velocities, atol=1e-11)
            assert dyn.get_conserved_energy() == pytest.approx(ours[10].conserved_energy, abs=1e-9)
        ase_t.append(atoms.get_kinetic_energy() * 2 / (n_dof * BOLTZMANN_EV_PER_K))
        ase_pe.append(atoms.get_potential_energy())
    ase_t, ase_pe = np.array(ase_t)[40:], np.array(ase_pe)[40:]
    our_t = np.array([f.temperature for f in ours])[41:]
    our_pe = np.array([f.potential_energy for f in ours])[41:]
    err_t = np.hypot(block_error(ase_t, 10), block_error(our_t, 10))
    err_pe = np.hypot(block_error(ase_pe, 10), block_error(our_pe, 10))
    assert our_t.mean() == pytest.approx(ase_t.mean(), abs=4 * err_t)
    assert our_pe.mean() == pytest.approx(ase_pe.mean(), abs=4 * err_pe)


def test_maxwell_boltzmann_start_has_zero_momentum_and_exact_temperature():
    m = np.array([6.94, 47.87, 35.45] * 20)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(7), m, 298.0)
    np.testing.assert_allclose(np.sum(m[:, None] * np.asarray(v), axis=0), 0.0, atol=1e-12)
    assert float(integ.temperature(v, jnp.asarray(m), 3 * len(m) - 3)) == pytest.approx(298.0, rel=1e-12)
