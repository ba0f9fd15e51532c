"""MD with DeepPot-SE models: forces against DeePMD-kit, NVE with a DeepPot, virtual spin atoms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cathodeml.io.structure import read_structure, supercell
from cathodeml.md import integrators as integ
from cathodeml.md.potentials import deeppot, energy_and_forces
from cathodeml.md.runner import RunSettings, Simulation
from cathodeml.model import Model, ModelConfig, build_neighbor_list, default_stats, energy, import_deepmd, init_params
from cathodeml.spin import SpinSettings, host_moments, model_virtual_sites


def tiny_spin_model(eta=0.3, d=0.2):
    """A small random se_e2_a model for Li–Mn–O with Mn virtual spin atoms (weights are random:
    good for checking numerics, not physics)."""
    config = ModelConfig(type_map=("Li", "Mn", "O", "Mn_spin"), sel=(16, 16, 32, 16), rcut=4.5, rcut_smth=1.0,
                         embedding_neurons=(4, 8), axis_neuron=2, fitting_neurons=(8, 8))
    stats = default_stats(config)
    stats["dstd"] *= 2.0
    stats["type_bias"] = np.array([-1.9, -5.5, -4.9, 0.0])
    spin = SpinSettings.create(["Mn"], eta=eta, d=d).to_dict()
    params = init_params(config, jax.random.PRNGKey(11))
    for net in params["fitting"]:  # forces of ~0.1 eV/Å, so that atoms really move
        net[-1]["w"] = np.asarray(net[-1]["w"]) * 30.0
    return Model(config, params, stats, spin=spin)


def limno2(data_dir, reps=(2, 1, 1), rattle=0.05):
    s = supercell(read_structure(data_dir / "structures" / "LiMnO2_mp-18767.cif"), reps)
    types = np.array([["Li", "Mn", "O"].index(x) for x in s.symbols])
    rng = np.random.default_rng(0)  # break the crystal's symmetry: no ties among neighbour distances
    return s.__class__(s.symbols, s.positions + rng.normal(scale=rattle, size=s.positions.shape), s.cell), types


@pytest.mark.parametrize("case", ["triclinic"])  # a skewed cell narrower than 2·rcut
def test_deeppot_forces_equal_deepmd_kit_reference(data_dir, case):
    ref = np.load(data_dir / "deepmd" / "reference" / "reference.npz")
    model = import_deepmd(data_dir / "deepmd" / "reference" / "se_e2_a_tos_true.dp")
    k = f"se_e2_a_tos_true/{case}/"
    pot = deeppot(model, ref[k + "types"])
    nbr = pot.build_neighbors(ref[k + "coord"], ref[k + "cell"], 1.0, None)
    e, f = jax.jit(lambda x, c, n: energy_and_forces(pot, x, c, n))(jnp.asarray(ref[k + "coord"]), jnp.asarray(ref[k + "cell"]), nbr)
    assert float(e) == pytest.approx(float(np.ravel(ref[k + "energy"])[0]), rel=1e-10)
    np.testing.assert_allclose(np.asarray(f), ref[k + "force"].reshape(-1, 3), atol=1e-9)


def test_nve_with_a_spin_deeppot_conserves_energy_to_second_order_in_dt(data_dir):
    # sel is large enough that no neighbour is ever dropped, so the energy is smooth (with DeePMD-kit's
    # nearest-sel truncation it has kinks where neighbours swap rank, and Verlet loses its order).
    s, types = limno2(data_dir, reps=(2, 2, 1))
    model = tiny_spin_model()
    moments = np.where(np.array(s.symbols) == "Mn", 3.8, 0.0)
    pot = deeppot(model, types, moments)
    masses = np.array([{"Li": 6.94, "Mn": 54.94, "O": 16.0}[x] for x in s.symbols])
    v = integ.maxwell_boltzmann_velocities(jax.random.PRNGKey(0), masses, 600.0)
    worst = []
    for dt in (1.0, 0.5):  # one compiled kernel serves both: dt is an argument
        sim = Simulation(pot, s.cell, masses, RunSettings(dt_fs=dt, n_steps=int(round(40 / dt)), stride=int(round(2 / dt)),
                                                          ensemble="nve", skin=1.0))
        frames = []
        sim.run(sim.initial_state(s.positions, v), on_frame=frames.append)
        e = np.array([f.conserved_energy for f in frames])
        ke = np.array([f.kinetic_energy for f in frames])
        worst.append(np.abs(e - e[0]).max())
        assert np.ptp(ke) > 0.01  # the forces do work: the kinetic energy changes by > 0.01 eV
    assert worst[1] < 1e-3 * np.ptp(ke)
    assert worst[0] / worst[1] == pytest.approx(4.0, rel=0.3)


def test_host_force_equals_finite_difference_moving_host_and_virtual_atom_together(data_dir):
    s, types = limno2(data_dir)
    model = tiny_spin_model()
    moments = np.where(np.array(s.symbols) == "Mn", 3.8, 0.0)
    moments[np.flatnonzero(np.array(s.symbols) == "Mn")[1]] = -3.6  # an antiparallel Mn
    pot = deeppot(model, types, moments)
    sites = model_virtual_sites(model.type_map, model.spin, types)
    host_m = host_moments(sites, moments)
    nbr = pot.build_neighbors(s.positions, s.cell, 1.0, None)
    _, forces = jax.jit(lambda x, n: energy_and_forces(pot, x, jnp.asarray(s.cell), n))(jnp.asarray(s.positions), nbr)

    # The same model evaluated on the explicit augmented structure (real atoms, then virtual ones).
    host = sites.host_index
    virtual = s.positions[host] + (sites.eta * host_m + sites.d)[:, None] * np.array([0, 0, 1.0])
    full_types = np.concatenate([types, sites.types])
    nb = build_neighbor_list(np.concatenate([s.positions, virtual]), s.cell, full_types, model.config.rcut,
                             model.config.ntypes, skin=0.5)
    e_jit = jax.jit(lambda full: energy(model.config, model.params, model.stats, full, s.cell, nb))

    def e_full(real, virt):
        return float(e_jit(np.concatenate([real, virt])))

    h = 1e-5
    i = int(host[1])  # a Mn host
    for k in range(3):
        dr = np.zeros(3)
        dr[k] = h
        plus_r, minus_r = s.positions.copy(), s.positions.copy()
        plus_r[i] += dr
        minus_r[i] -= dr
        plus_v, minus_v = virtual.copy(), virtual.copy()
        plus_v[1] += dr
        minus_v[1] -= dr
        together = -(e_full(plus_r, plus_v) - e_full(minus_r, minus_v)) / (2 * h)
        host_only = -(e_full(plus_r, virtual) - e_full(minus_r, virtual)) / (2 * h)
        assert float(forces[i, k]) == pytest.approx(together, rel=1e-6, abs=1e-8)
        assert abs(together - host_only) > 1e-6  # the virtual atom's force (1000× the FD noise) is on the host
    # a non-magnetic atom only feels the real force
    j = int(np.flatnonzero(types == 0)[0])
    plus_r, minus_r = s.positions.copy(), s.positions.copy()
    plus_r[j, 0] += h
    minus_r[j, 0] -= h
    fd = -(e_full(plus_r, virtual) - e_full(minus_r, virtual)) / (2 * h)
    assert float(forces[j, 0]) == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_spin_model_without_moments_is_refused(data_dir):
    from cathodeml.errors import CathodemlError

    s, types = limno2(data_dir)
    with pytest.raises(CathodemlError, match="--magmom"):
        deeppot(tiny_spin_model(), types, None)


@pytest.mark.parametrize("spin_model", [True, False])
def test_energy_in_atom_chunks_equals_the_whole_cell(data_dir, spin_model):
    """md's default energy (`model.chunked_energy`, a few atoms at a time, forces in the same pass) gives
    the whole-cell energy and forces; chunks of 3 atoms split every type, with a padded last chunk."""
    model = tiny_spin_model()
    if not spin_model:
        model = Model(model.config.replace(type_map=("Li", "Mn", "O", "X")), model.params, model.stats)
    s, types = limno2(data_dir, reps=(2, 2, 1))
    moments = np.where(types == 1, 3.0, 0.0) * np.where(np.arange(len(types)) % 2, 1, -1)
    results = []
    for chunk in (0, 3, 10_000):
        pot = deeppot(model, types, moments if spin_model else None, chunk=chunk)
        nbr = pot.build_neighbors(s.positions, s.cell, 1.0, None)
        results.append(jax.jit(lambda x, n, pot=pot: energy_and_forces(pot, x, jnp.asarray(s.cell), n))(
            jnp.asarray(s.positions), nbr))
    (e0, f0), *chunked = results
    assert np.max(np.abs(np.asarray(f0))) > 1e-3
    for e, f in chunked:
        assert float(e) == pytest.approx(float(e0), rel=1e-13, abs=1e-10)
        np.testing.assert_allclose(np.asarray(f), np.asarray(f0), rtol=1e-10, atol=1e-12)
