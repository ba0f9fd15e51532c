"""The ASE calculator: DeePMD-kit's numbers, md's forces, moments from the Atoms, kernels compiled once."""

import jax.numpy as jnp
import numpy as np
import pytest
from ase import Atoms

from cathodeml.calculator import CathodemlCalculator
from cathodeml.errors import CathodemlError
from cathodeml.md.potentials import deeppot, energy_and_forces
from cathodeml.model import evaluate, import_deepmd
from conftest import SPIN_CASE_TYPES as TYPES

REF = "deepmd/reference"


def _reference_atoms(data_dir, name, case):
    ref = np.load(data_dir / REF / "reference.npz")
    g = {k: ref[f"{name}/{case}/{k}"] for k in ("coord", "cell", "periodic", "types", "energy", "force", "virial",
                                                 "atom_energy")}
    model = import_deepmd(data_dir / REF / f"{name}.dp")
    periodic = bool(g["periodic"])
    atoms = Atoms(symbols=[model.type_map[t] for t in g["types"]], positions=np.reshape(g["coord"], (-1, 3)),
                  cell=np.reshape(g["cell"], (3, 3)) if periodic else None, pbc=periodic)
    return model, atoms, g


@pytest.mark.parametrize("case", ["water", "triclinic", "cluster"])
def test_calculator_gives_deepmd_kits_energy_forces_stress_and_atomic_energies(data_dir, case):
    model, atoms, g = _reference_atoms(data_dir, "se_e2_a_tos_true", case)
    atoms.calc = CathodemlCalculator(model)
    e = atoms.get_potential_energy()
    assert e == pytest.approx(float(np.ravel(g["energy"])[0]), rel=1e-10)
    np.testing.assert_allclose(atoms.get_forces(), np.reshape(g["force"], (-1, 3)), rtol=0, atol=1e-9)
    np.testing.assert_allclose(atoms.get_potential_energies(), np.ravel(g["atom_energy"]), rtol=0, atol=1e-9)
    if atoms.pbc.all():
        virial = np.reshape(g["virial"], (3, 3))
        stress = -atoms.get_stress(voigt=False) * atoms.get_volume()  # ASE: σ = −W/V
        np.testing.assert_allclose(stress, 0.5 * (virial + virial.T), rtol=0, atol=1e-9)


def test_spin_calculator_takes_moments_from_the_atoms_and_matches_md(spin_case):
    model, positions, cell, types, moments, sites = spin_case
    atoms = Atoms(symbols=[TYPES[t] for t in types], positions=positions, cell=cell, pbc=True)
    atoms.set_initial_magnetic_moments(moments)
    atoms.calc = CathodemlCalculator(model)
    pot = deeppot(model, types, moments)
    e_md, f_md = energy_and_forces(pot, jnp.asarray(positions), jnp.asarray(cell),
                                   pot.build_neighbors(positions, cell, 0.5, None))
    assert atoms.get_potential_energy() == pytest.approx(float(e_md), abs=1e-12)
    np.testing.assert_allclose(atoms.get_forces(), np.asarray(f_md), atol=1e-12)
    # moments given to the calculator win over the atoms'; flipping one Mn changes the energy
    flipped = moments.copy()
    flipped[sites.host_index[0]] *= -1
    other = atoms.copy()
    other.calc = CathodemlCalculator(model, moments=flipped)
    assert abs(other.get_potential_energy() - atoms.get_potential_energy()) > 1e-4


def test_spin_model_without_moments_and_unknown_elements_are_refused(spin_case):
    model, positions, cell, types, moments, sites = spin_case
    atoms = Atoms(symbols=[TYPES[t] for t in types], positions=positions, cell=cell, pbc=True)
    atoms.calc = CathodemlCalculator(model)
    with pytest.raises(CathodemlError, match="moments"):
        atoms.get_potential_energy()
    atoms = Atoms("NaCl", positions=[[0, 0, 0], [2.8, 0, 0]], cell=5.6 * np.eye(3), pbc=True)
    atoms.calc = CathodemlCalculator(model, moments=[0, 0])
    with pytest.raises(CathodemlError, match="Na"):
        atoms.get_potential_energy()


def test_a_relaxation_compiles_once_and_lowers_the_energy(data_dir):
    from ase.optimize import BFGS

    model, atoms, _ = _reference_atoms(data_dir, "se_e2_a_tos_true", "triclinic")
    atoms.calc = CathodemlCalculator(model)
    e0 = atoms.get_potential_energy()
    f0 = np.abs(atoms.get_forces()).max()
    compiled = evaluate._cache_size()
    BFGS(atoms, logfile=None).run(fmax=0.05, steps=15)
    assert evaluate._cache_size() == compiled  # every step reused the kernel of the first call
    assert atoms.get_potential_energy() < e0
    assert np.abs(atoms.get_forces()).max() < f0
