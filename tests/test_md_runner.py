"""The MD loop and its files: neighbour lists, restart, stop requests, guards, H5MD layout, FIRE."""

import itertools
import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from ase.build import bulk

from cathodeml.errors import CathodemlError, SimulationError
from cathodeml.io.trajectory import read_trajectory
from cathodeml.md import integrators as integ
from cathodeml.md.minimize import FireSettings, minimize
from cathodeml.md.potentials import energy_and_forces, lennard_jones
from cathodeml.md.runner import RunSettings, Simulation
from cathodeml.md.session import MDSystem, checkpoint_path, log_path, run_md

ARGON = dict(epsilon=0.0104, sigma=3.40, cutoff=8.0)


def argon_system(reps=2):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((reps, reps, reps))
    m = atoms.get_masses()
    return MDSystem(positions=atoms.positions.copy(), cell=atoms.cell.array.copy(), masses=m,
                    species=np.zeros(len(m), int), type_map=["Ar"])


def brute_force_lj(positions, cell, epsilon, sigma, cutoff):
    """Energy (eV) by summing over every periodic image within the cutoff, in plain numpy."""
    frac = positions @ np.linalg.inv(cell)
    positions = (frac - np.floor(frac)) @ cell
    n_img = [int(np.ceil(cutoff / (abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[(k + 1) % 3], cell[(k + 2) % 3])))))
             for k in range(3)]
    energy = 0.0
    for shift in itertools.product(*[range(-n, n + 1) for n in n_img]):
        d = positions[None, :, :] + np.asarray(shift) @ cell - positions[:, None, :]
        r = np.linalg.norm(d, axis=-1)
        if shift == (0, 0, 0):
            r = r[~np.eye(len(positions), dtype=bool)]
        r = r[r < cutoff]
        energy += 0.5 * float(np.sum(shifted_force_lj(r, epsilon, sigma, cutoff)))
    return energy


def shifted_force_lj(r, epsilon, sigma, cutoff):
    """V(r) − V(rc) − (r − rc)·V'(rc) for the 12-6 potential, written out by hand."""
    v = lambda x: 4 * epsilon * ((sigma / x) ** 12 - (sigma / x) ** 6)  # noqa: E731
    dv_c = 4 * epsilon * (-12 * sigma**12 / cutoff**13 + 6 * sigma**6 / cutoff**7)
    return v(r) - v(cutoff) - (r - cutoff) * dv_c


def test_pair_list_sees_every_image_in_a_small_triclinic_cell():
    # A skewed cell 4–5 Å wide with an 8 Å cutoff: each atom meets several images of each neighbour.
    rng = np.random.default_rng(0)
    cell = np.array([[4.2, 0.0, 0.0], [1.3, 4.6, 0.0], [0.7, -0.9, 5.1]])
    frac = np.array([[0.1, 0.2, 0.1], [0.6, 0.3, 0.2], [0.2, 0.7, 0.6], [0.7, 0.8, 0.7]]) + rng.normal(scale=0.03, size=(4, 3))
    positions = frac @ cell + rng.integers(-2, 3, size=(4, 3)) @ cell  # unwrapped
    pot = lennard_jones(**ARGON)
    nbr = pot.build_neighbors(positions, cell, 0.5, None)
    energy, forces = energy_and_forces(pot, jnp.asarray(positions), jnp.asarray(cell), nbr)
    assert float(energy) == pytest.approx(brute_force_lj(positions, cell, **ARGON), rel=1e-12)
    h = 1e-5
    for i, k in [(0, 0), (2, 1), (3, 2)]:
        plus, minus = positions.copy(), positions.copy()
        plus[i, k] += h
        minus[i, k] -= h
        fd = -(brute_force_lj(plus, cell, **ARGON) - brute_force_lj(minus, cell, **ARGON)) / (2 * h)
        assert float(forces[i, k]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_frequent_list_rebuilds_give_the_same_trajectory_as_a_list_that_never_expires():
    system = argon_system()
    pot = lennard_jones(**ARGON)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(4), system.masses, 120.0)
    out = {}
    for skin in (0.3, 12.0):
        sim = Simulation(pot, system.cell, system.masses, RunSettings(dt_fs=5.0, n_steps=600, stride=600, ensemble="nve", skin=skin))
        res = sim.run(sim.initial_state(system.positions, v))
        out[skin] = (np.asarray(res.state.positions), res.neighbor_builds)
    assert out[0.3][1] > 3 and out[12.0][1] == 2  # start + the final checkpoint refresh
    np.testing.assert_allclose(out[0.3][0], out[12.0][0], atol=1e-9)


def test_rebuilds_on_the_first_step_of_a_frame_do_not_trip_the_one_step_guard():
    """With stride 1 every list rebuild happens on the first step of a frame; rebuilds separated by
    normal steps are not a one-step runaway (the guard once counted them as one, and stopped good runs)."""
    system = argon_system()
    pot = lennard_jones(**ARGON)
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(4), system.masses, 120.0)
    out = {}
    for stride in (1, 300):
        sim = Simulation(pot, system.cell, system.masses, RunSettings(dt_fs=5.0, n_steps=300, stride=stride, ensemble="nve", skin=0.3))
        res = sim.run(sim.initial_state(system.positions, v))
        out[stride] = (np.asarray(res.state.positions), res.neighbor_builds)
    assert out[1][1] > 3
    np.testing.assert_allclose(out[1][0], out[300][0], atol=1e-9)


def _settings(**kw):
    base = dict(dt_fs=5.0, n_steps=400, stride=50, ensemble="nvt", temperature_K=60.0, tdamp_fs=100.0, skin=0.8,
                checkpoint_every=100)
    base.update(kw)
    return RunSettings(**base)


def test_restart_after_a_crash_continues_exactly_like_an_uninterrupted_run(tmp_path):
    system, pot = argon_system(), lennard_jones(**ARGON)
    run_md(pot, system, _settings(), tmp_path / "full.h5", seed=5, write_velocities=True)

    def crash_at_350(frame):
        if frame.step == 350:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_md(pot, system, _settings(checkpoint_every=200), tmp_path / "cut.h5", seed=5, write_velocities=True,
               on_frame=crash_at_350)
    crashed = read_trajectory(tmp_path / "cut.h5")
    assert crashed["step"].tolist() == list(range(0, 351, 50))  # every frame up to the crash is readable
    result, summary = run_md(pot, system, _settings(checkpoint_every=200), tmp_path / "cut.h5", restart=True)
    full, cut = read_trajectory(tmp_path / "full.h5"), read_trajectory(tmp_path / "cut.h5")
    assert cut["step"].tolist() == full["step"].tolist() == list(range(0, 401, 50))
    np.testing.assert_allclose(cut["positions"], full["positions"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cut["velocities"], full["velocities"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(cut["conserved_energy"], full["conserved_energy"], rtol=0, atol=1e-12)
    assert log_path(tmp_path / "cut.h5").read_text().count("\n") == len(full["step"]) + 1
    assert summary["final_step"] == 400 and summary["frames"] == 9


def test_stop_request_checkpoints_at_the_next_frame_and_restart_extends_the_run(tmp_path):
    system, pot = argon_system(), lennard_jones(**ARGON)
    calls = {"n": 0}

    def stop_soon():
        calls["n"] += 1
        return calls["n"] >= 3

    result, _ = run_md(pot, system, _settings(checkpoint_every=0), tmp_path / "t.h5", seed=1, should_stop=stop_soon)
    assert result.stopped and int(result.state.step) == 150
    with h5py.File(checkpoint_path(tmp_path / "t.h5")) as f:
        assert json.loads(f.attrs["cathodeml"])["step"] == 150
    result, _ = run_md(pot, system, _settings(checkpoint_every=0, n_steps=500), tmp_path / "t.h5", restart=True)
    assert int(result.state.step) == 500
    assert read_trajectory(tmp_path / "t.h5")["step"].tolist() == list(range(0, 501, 50))


def test_restart_refuses_a_checkpoint_from_different_settings(tmp_path):
    system, pot = argon_system(), lennard_jones(**ARGON)
    run_md(pot, system, _settings(n_steps=100), tmp_path / "t.h5")
    with pytest.raises(CathodemlError, match="dt_fs"):
        run_md(pot, system, _settings(n_steps=200, dt_fs=2.0), tmp_path / "t.h5", restart=True)
    with pytest.raises(CathodemlError, match="exists"):
        run_md(pot, system, _settings(n_steps=200), tmp_path / "t.h5")
    with pytest.raises(CathodemlError, match="no checkpoint"):
        run_md(pot, system, _settings(), tmp_path / "other.h5", restart=True)


def two_atoms_colliding(speed):
    """Two argon atoms 6 Å apart flying head-on at `speed` Å/fs each, in a 30 Å box."""
    cell = np.eye(3) * 30.0
    positions = np.array([[12.0, 15.0, 15.0], [18.0, 15.0, 15.0]])
    velocities = np.array([[speed, 0, 0], [-speed, 0, 0]])
    return MDSystem(positions, cell, np.array([39.95, 39.95]), np.zeros(2, int), ["Ar"]), velocities


@pytest.mark.parametrize("guard, settings, message", [
    ("close", dict(max_energy_change=1e9, max_temperature_K=1e12), "closer than 2"),
    ("energy", dict(max_temperature_K=1e12, min_distance=0.1), "potential energy moved"),
])
def test_guards_stop_the_run_naming_the_step_and_keep_the_frames(tmp_path, guard, settings, message):
    system, v = two_atoms_colliding(0.05)
    pot = lennard_jones(epsilon=1e-4, sigma=3.4, cutoff=8.0)
    st = RunSettings(**{**dict(dt_fs=1.0, n_steps=200, stride=5, ensemble="nve", skin=1.0, min_distance=2.0, n_dof=3),
                        **settings})
    with pytest.raises(SimulationError, match=rf"^step \d+: .*{message}") as err:
        run_md(pot, system, st, tmp_path / "t.h5", velocities=v)
    bad_step = int(str(err.value).split(":")[0].split()[1])
    traj = read_trajectory(tmp_path / "t.h5")
    assert traj["step"][-1] < bad_step and len(traj["step"]) >= 2
    gap = np.linalg.norm(traj["positions"][-1, 1] - traj["positions"][-1, 0])
    assert gap > st.min_distance  # the frames written are the valid ones before the failure


def test_runaway_temperature_guard_names_the_step(tmp_path):
    system, v = two_atoms_colliding(0.05)
    pot = lennard_jones(epsilon=1e-4, sigma=3.4, cutoff=8.0)
    st = RunSettings(dt_fs=1.0, n_steps=200, stride=5, ensemble="nve", skin=1.0, n_dof=3, max_temperature_K=5000.0)
    with pytest.raises(SimulationError, match=r"^step \d+: the temperature exceeded 5000 K"):
        run_md(pot, system, st, tmp_path / "t.h5", velocities=v)


def test_h5md_file_follows_the_layout_and_images_unwrap_positions(tmp_path):
    system, pot = argon_system(), lennard_jones(**ARGON)
    run_md(pot, system, _settings(n_steps=200, temperature_K=300.0), tmp_path / "t.h5", seed=2,
           parameters={"model": "lj"})
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["h5md"].attrs["version"].tolist() == [1, 1]
        assert f["h5md/creator"].attrs["name"] == "cathodeml"
        assert json.loads(f.attrs["cathodeml"])["kind"] == "trajectory"
        params = json.loads(f["parameters"].attrs["cathodeml"])
        assert params["type_map"] == ["Ar"] and params["timestep_fs"] == 5.0 and params["model"] == "lj"
        assert f["particles/all/box"].attrs["dimension"] == 3
        assert f["particles/all/position/value"].maxshape[0] is None
        assert f["particles/all/position/time"][()].tolist() == [5.0 * s for s in range(0, 201, 50)]
        for name in ("temperature", "potential_energy", "kinetic_energy", "conserved_energy"):
            assert f[f"observables/{name}/value"].shape == (5,)
    traj = read_trajectory(tmp_path / "t.h5")
    frac = np.einsum("fni,ij->fnj", traj["positions"] - np.einsum("fni,fij->fnj", traj["image"], traj["cells"]),
                     np.linalg.inv(system.cell))
    assert frac.min() >= 0.0 and frac.max() < 1.0  # position − image·box lies in the cell
    from cathodeml.io.dataset import file_kind
    assert file_kind(tmp_path / "t.h5") == "trajectory"


def test_fire_relaxes_a_displaced_crystal_back_to_the_perfect_lattice():
    system, pot = argon_system(), lennard_jones(**ARGON)
    perfect_nbr = pot.build_neighbors(system.positions, system.cell, 0.0, None)
    e_perfect = float(pot.energy(jnp.asarray(system.positions), jnp.asarray(system.cell), perfect_nbr))
    rng = np.random.default_rng(3)
    start = system.positions + rng.normal(scale=0.15, size=system.positions.shape)
    relaxed, report = minimize(pot, start, system.cell, FireSettings(fmax=1e-4, max_steps=3000, skin=0.5))
    assert report["converged"] and report["fmax_final"] < 1e-4
    assert report["energy_initial"] > e_perfect + 0.01
    assert report["energy_final"] == pytest.approx(e_perfect, abs=1e-6)
    # the lattice comes back up to a rigid translation
    shift = (relaxed - system.positions).mean(axis=0)
    np.testing.assert_allclose(relaxed - shift, system.positions, atol=2e-3)


def test_sigterm_checkpoints_at_the_frame_and_leaves_a_restartable_run(tmp_path):
    import os
    import signal

    from cathodeml.signals import stop_on_signals

    system, pot = argon_system(), lennard_jones(**ARGON)

    def terminate_at_100(frame):
        if frame.step == 100:
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals() as stop_requested:
        result, _ = run_md(pot, system, _settings(checkpoint_every=0), tmp_path / "t.h5", seed=3,
                           should_stop=stop_requested, on_frame=terminate_at_100)
    assert result.stopped and int(result.state.step) == 100
    assert signal.getsignal(signal.SIGTERM) == before  # the handler that was there before is back
    with h5py.File(checkpoint_path(tmp_path / "t.h5")) as f:
        assert json.loads(f.attrs["cathodeml"])["step"] == 100
    assert read_trajectory(tmp_path / "t.h5")["step"][-1] == 100
