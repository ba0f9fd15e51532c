"""Training data: batches per system in proportion to frames, reproducible splits, statistics."""

import numpy as np
import pytest
from ase import Atoms
from ase.neighborlist import neighbor_list

from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import Dataset, System, read_dataset
from cathodeml.spin import VirtualSites
from cathodeml.train.data import (FrameSampler, LabelledSystem, energy_bias, labelled_systems, max_neighbour_counts,
                                  split_validation)


def _system(types, n_frames, energies=None, rng=None):
    rng = rng or np.random.default_rng(0)
    types = np.asarray(types)
    na = types.size
    return LabelledSystem(name=f"s{na}", atom_types=types,
                          coords=rng.uniform(0, 5, (n_frames, na, 3)), cells=np.tile(5 * np.eye(3), (n_frames, 1, 1)),
                          energies=np.zeros(n_frames) if energies is None else energies,
                          forces=np.zeros((n_frames, na, 3)), virials=None, moments=None)


def test_energy_bias_recovers_per_type_energies_of_an_additive_model():
    per_type = np.array([-1.9, -4.3, -0.7])  # eV/atom, the "true" isolated-atom energies
    systems = []
    for types in ([0, 0, 1], [0, 1, 1, 2], [2, 2, 1, 0, 0], [1, 2]):
        counts = np.bincount(types, minlength=3)
        systems.append(_system(types, 4, energies=np.full(4, counts @ per_type)))
    assert np.allclose(energy_bias(systems, 3), per_type, atol=1e-12)


def test_energy_bias_leaves_virtual_spin_types_at_zero():
    s = _system([0, 1, 1], 3, energies=np.array([-5.0, -5.1, -4.9]))
    # one virtual atom of type 2 on atom 0: it is placed by the energy, never counted as an atom
    s.sites = VirtualSites(host_index=np.array([0]), types=np.array([2]), eta=np.array([0.3]), d=np.array([0.2]))
    s.spin_moments = np.full((3, 1), 1.5)
    assert s.all_types().tolist() == [0, 1, 1, 2] and s.all_coords().shape == (3, 4, 3)
    bias = energy_bias([s], 3)
    assert bias[2] == 0.0 and bias[:2] @ [1, 2] == pytest.approx(-5.0)


def test_sampler_draws_systems_in_proportion_to_their_frames_and_visits_every_frame():
    systems = [_system([0, 1], 30), _system([0, 1, 1], 10)]
    for s in systems:
        s.batch_size = 1
    sampler = FrameSampler(systems, seed=3)
    picks = [sampler.next() for _ in range(4000)]
    counts = np.bincount([k for k, _ in picks], minlength=2)
    assert abs(counts[0] / 4000 - 0.75) < 4 * np.sqrt(0.75 * 0.25 / 4000)
    first_epoch = [int(f[0]) for k, f in picks if k == 1][:10]
    assert sorted(first_epoch) == list(range(10))  # a shuffled pass over all frames


def test_sampler_state_restores_the_same_sequence():
    systems = [_system([0, 1], 7), _system([0], 5)]
    for s in systems:
        s.batch_size = 2
    a = FrameSampler(systems, seed=11)
    for _ in range(9):
        a.next()
    b = FrameSampler(systems, seed=0)
    b.set_state(a.state())
    for _ in range(20):
        (ka, fa), (kb, fb) = a.next(), b.next()
        assert ka == kb and np.array_equal(fa, fb)


def test_validation_split_is_disjoint_reproducible_and_keeps_single_frames_for_training():
    s = _system([0, 1], 20)
    s.energies = np.arange(20.0)
    single = _system([0], 1)
    train, valid = split_validation([s, single], 0.25, np.random.default_rng(5))
    assert len(valid) == 1 and valid[0].n_frames == 5 and train[0].n_frames == 15 and train[1].n_frames == 1
    assert not set(train[0].energies) & set(valid[0].energies)
    again, _ = split_validation([s, single], 0.25, np.random.default_rng(5))
    assert np.array_equal(again[0].energies, train[0].energies)


def test_neighbour_counts_match_ase(data_dir):
    ds = read_dataset(data_dir / "deepmd" / "nio_spin" / "data_0")
    systems = labelled_systems(ds, "nio")
    counts = max_neighbour_counts(systems, 4.5, 2, max_frames=3)
    s = systems[0]
    expected = np.zeros(2, int)
    for f in np.unique(np.linspace(0, s.n_frames - 1, 3).astype(int)):
        atoms = Atoms(numbers=[28 if t == 0 else 8 for t in s.atom_types], positions=s.coords[f], cell=s.cells[f], pbc=True)
        i, j = neighbor_list("ij", atoms, 4.5)
        per = np.zeros((s.n_real, 2), int)
        np.add.at(per, (i, s.atom_types[j]), 1)
        expected = np.maximum(expected, per.max(axis=0))
    assert np.array_equal(counts, expected)


def test_frames_without_labels_are_an_error():
    sys_ = System(atom_types=np.array([0]), coords=np.zeros((2, 1, 3)), cells=np.tile(np.eye(3), (2, 1, 1)))
    with pytest.raises(CathodemlError, match="no energy labels"):
        labelled_systems(Dataset(["Li"], [sys_]), "x.h5")
