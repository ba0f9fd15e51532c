"""The spin paper's claim on data whose answer is known: one structure in two spin states has two
energies; a spin-blind model cannot split them, virtual spin atoms can."""

import numpy as np

from cathodeml import spin
from cathodeml.train import data as D
from cathodeml.train import plan as P
from cathodeml.train import trainer as T
from cathodeml.train.config import TrainConfig, LearningRateSettings, LossSettings, ModelSettings, TrainingSettings
from spin_toy_data import toy_dataset


SETTINGS = TrainConfig(
    model=ModelSettings(rcut=5.0, rcut_smth=0.5, sel="auto", embedding_neurons=(8, 16), axis_neuron=4,
                        fitting_neurons=(32, 32)),
    learning_rate=LearningRateSettings(start_lr=1e-2, stop_lr=1e-4, decay_steps=10),
    loss=LossSettings(start_pref_e=1.0, limit_pref_e=1.0, start_pref_f=0.1, limit_pref_f=0.1),
    training=TrainingSettings(steps=200, batch_size=4, seed=1, disp_freq=100, save_freq=1000, stat_frames=10),
)


def _validation_energy_rmse(dataset, tmp_path, tag):
    systems = D.labelled_systems(dataset, tag)
    train, valid = D.split_validation(systems, 0.25, np.random.default_rng(0))
    D.assign_batch_sizes(train, 4)
    D.assign_batch_sizes(valid, 1)
    config = P.model_config_for(SETTINGS.model, dataset.type_map, train)
    P.prepare_neighbours(config, train + valid)
    params, stats = P.initial_model(config, train, 1, 10)
    result = T.train(config, T.new_run_state(params, stats), train, valid, SETTINGS,
                     lcurve_path=tmp_path / f"{tag}.out", checkpoint_path=tmp_path / f"{tag}.h5")
    return result.final["valid"]["rmse_e"]


def test_toy_energies_split_by_spin_state_for_identical_structures():
    ds = toy_dataset(3, states=("LS", "HS"), displacement=0.02, strain=0.01)
    s = ds.systems[0]
    assert np.array_equal(s.coords[0], s.coords[1])  # same structure ...
    split = (s.energies[1::2] - s.energies[0::2]) / s.n_atoms
    assert np.all(split > 0.3)  # ... two energies, > 0.3 eV/atom apart (high spin costs on-site energy)


def test_virtual_spin_atoms_make_the_energy_rmse_ten_times_lower(tmp_path):
    plain = toy_dataset(16, states=("LS", "HS"), displacement=0.02, strain=0.01)
    augmented, _ = spin.augment_dataset(plain, spin.SpinSettings.create(["Ni"], 0.3, 0.3))
    blind = _validation_energy_rmse(plain, tmp_path, "plain")
    aware = _validation_energy_rmse(augmented, tmp_path, "spin")
    # a spin-blind model can do no better than half the LS/HS split (≈ 0.23 eV/atom)
    assert blind > 0.15
    assert aware * 10 <= blind, (blind, aware)
