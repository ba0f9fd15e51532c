"""One spin-aware energy path: train/test, md and the library give one answer, and its derivatives are right.

A spin model's virtual atoms are placed inside `model.energy` from the real positions and the
host moments, so `energy_forces_virial` of real atoms is the whole story.  These tests compare
the three ways the commands reach it (the training/test batch, the MD potential, `evaluate`)
with each other and with the same model evaluated on the explicit augmented structure.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cathodeml import spin
from cathodeml.io.dataset import Dataset, System
from cathodeml.md.potentials import deeppot, energy_and_forces
from cathodeml.model import build_neighbor_list, energy, energy_forces_virial, evaluate
from cathodeml.model.potential import atomic_energies
from cathodeml.train.data import labelled_systems
from cathodeml.train.evaluate import predict_system
from conftest import SPIN_CASE_TYPES as TYPES

def test_md_library_and_training_paths_agree_on_a_spin_model(spin_case):
    model, positions, cell, types, moments, sites = spin_case
    host_m = spin.host_moments(sites, moments)
    full_types = sites.all_types(types)
    nbr = build_neighbor_list(sites.place(positions, host_m), cell, full_types, model.config.rcut, model.config.ntypes)

    e_lib, f_lib, w_lib = energy_forces_virial(model.config, model.params, model.stats, positions, cell, nbr,
                                               moments=host_m, sites=sites)
    pot = deeppot(model, types, moments)
    md_nbr = pot.build_neighbors(positions, cell, 0.5, None)
    e_md, f_md = energy_and_forces(pot, jnp.asarray(positions), jnp.asarray(cell), md_nbr)

    # `cathodeml test` (and the training step) on a plain dataset of the same frame: it is augmented
    # with the model's settings and its virtual atoms are placed again inside the energy.
    frame = System(atom_types=types, coords=positions[None], cells=cell[None], energies=np.zeros(1),
                   forces=np.zeros((1, len(types), 3)), virials=np.zeros((1, 3, 3)),
                   frame_data={"magmom": moments[None]}, name="limno2")
    augmented, _ = spin.augment_dataset(Dataset(list(TYPES), [frame]), spin.SpinSettings.from_dict(model.spin))
    (labelled,) = labelled_systems(augmented, "limno2")
    e_tr, f_tr, w_tr = predict_system(model, labelled)

    assert float(e_md) == pytest.approx(float(e_lib), abs=1e-12)
    assert e_tr[0] == pytest.approx(float(e_lib), abs=1e-12)
    np.testing.assert_allclose(np.asarray(f_md), f_lib, atol=1e-12)
    np.testing.assert_allclose(f_tr[0], f_lib, atol=1e-12)
    np.testing.assert_allclose(w_tr[0], w_lib, atol=1e-12)
    assert np.abs(f_lib).max() > 1e-3  # 1e9 times the tolerance: the forces are not all ~0


def test_spin_virial_strains_the_hosts_but_not_the_moment_offset(spin_case):
    model, positions, cell, types, moments, sites = spin_case
    host_m = spin.host_moments(sites, moments)
    full_types = sites.all_types(types)
    offset = sites.place(positions, host_m)[len(types):] - positions[sites.host_index]
    nbr = build_neighbor_list(sites.place(positions, host_m), cell, full_types, model.config.rcut,
                              model.config.ntypes, skin=0.5)
    e_jit = jax.jit(lambda full, c: energy(model.config, model.params, model.stats, full, c, nbr))

    def strained_energy(eps):
        deform = np.eye(3) + eps
        real = positions @ deform
        return float(e_jit(np.concatenate([real, real[sites.host_index] + offset]), cell @ deform))

    _, _, w = energy_forces_virial(model.config, model.params, model.stats, positions, cell, nbr, moments=host_m,
                                   sites=sites)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            fd[a, b] = -(strained_energy(eps) - strained_energy(-eps)) / (2 * h)
    np.testing.assert_allclose(np.asarray(w), fd, rtol=0, atol=1e-6)
    assert np.abs(fd).max() > 1e-3


def test_per_atom_energies_count_each_virtual_atom_on_its_host(spin_case):
    model, positions, cell, types, moments, sites = spin_case
    host_m = spin.host_moments(sites, moments)
    full = sites.place(positions, host_m)
    nbr = build_neighbor_list(full, cell, sites.all_types(types), model.config.rcut, model.config.ntypes)
    out = evaluate(model.config, model.params, model.stats, positions, cell, nbr, moments=host_m, sites=sites)
    explicit = np.asarray(atomic_energies(model.config, model.params, model.stats, full, cell, nbr))
    n = len(types)
    expected = explicit[:n].copy()
    expected[sites.host_index] += explicit[n:]
    np.testing.assert_allclose(np.asarray(out["atomic_energies"]), expected, atol=1e-12)
    assert float(np.sum(out["atomic_energies"])) == pytest.approx(float(out["energy"]), abs=1e-10)
    assert np.abs(explicit[n:]).max() > 1e-3  # the virtual atoms do carry energy


def test_spin_model_needs_moments_for_every_magnetic_atom(spin_case):
    from cathodeml.errors import CathodemlError

    model, positions, cell, types, moments, sites = spin_case
    with pytest.raises(CathodemlError, match="moments"):
        spin.host_moments(sites, None)
    bad = moments.copy()
    bad[sites.host_index[0]] = np.nan
    with pytest.raises(CathodemlError, match="NaN"):
        spin.host_moments(sites, bad)
