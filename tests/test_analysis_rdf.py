"""Partial RDFs under triclinic periodic boundaries: ideal gas → 1, rock-salt coordination shells,
and agreement with ASE's partial g(r) (consistent with LAMMPS `compute rdf` since ASE 3.27)."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from cathodeml.analysis.rdf import RdfAccumulator, first_shell
from cathodeml.geometry import perpendicular_widths
from cathodeml.errors import CathodemlError

TRICLINIC = np.array([[14.0, 0.0, 0.0], [4.0, 13.0, 0.0], [-3.0, 2.5, 15.0]])


def test_ideal_gas_rdf_is_one_for_like_and_unlike_pairs():
    rng = np.random.default_rng(0)
    species = np.array(["Li"] * 600 + ["Cl"] * 400)
    acc = RdfAccumulator(species, [("Li", "Li"), ("Li", "Cl")], r_max=6.0, n_bins=30)
    for _ in range(30):
        acc.add_frame(rng.random((1000, 3)) @ TRICLINIC, TRICLINIC)
    res = acc.result()
    for pair in res:
        g = res[pair]["g"][5:]  # r > 1 Å, enough pairs per bin for ~1-3% noise
        assert np.mean(g) == pytest.approx(1.0, abs=0.01)
        assert np.all(np.abs(g - 1.0) < 0.12)
        # CN(r) of an ideal gas is the density times the sphere volume
        n_b = 600 - 1 if pair == ("Li", "Li") else 400
        rho = n_b / abs(np.linalg.det(TRICLINIC))
        assert res[pair]["cn"][-1] == pytest.approx(rho * 4 / 3 * np.pi * 6.0**3, rel=0.03)


def test_rock_salt_coordination_numbers_in_a_triclinic_primitive_supercell():
    a = 5.64
    crystal = bulk("NaCl", "rocksalt", a=a) * (4, 4, 4)  # primitive fcc vectors: a triclinic cell
    assert not np.allclose(crystal.cell.angles(), 90.0)
    species = np.array(crystal.get_chemical_symbols())
    acc = RdfAccumulator(species, [("Na", "Cl"), ("Na", "Na"), ("Cl", "Cl")], r_max=6.4, n_bins=640)
    acc.add_frame(crystal.positions, crystal.cell[:])
    res = acc.result()
    r = res[("Na", "Cl")]["r"]
    cn_at = lambda pair, x: res[pair]["cn"][np.searchsorted(r, x)]  # noqa: E731
    assert cn_at(("Na", "Cl"), 3.5) == pytest.approx(6.0)  # first shell at a/2
    assert cn_at(("Na", "Cl"), 5.5) == pytest.approx(6.0 + 8.0)  # second Na–Cl shell at a√3/2
    assert cn_at(("Na", "Na"), 4.5) == pytest.approx(12.0)  # fcc sublattice at a/√2
    assert cn_at(("Cl", "Cl"), 6.0) == pytest.approx(12.0 + 6.0)  # ... and a
    shell = first_shell(r, res[("Na", "Cl")]["g"], res[("Na", "Cl")]["cn"])
    assert shell["r_peak"] == pytest.approx(a / 2, abs=0.02)
    assert shell["cn"] == pytest.approx(6.0)


def test_partial_rdf_agrees_with_ase_for_a_disordered_triclinic_structure():
    rng = np.random.default_rng(1)
    symbols = ["Li"] * 120 + ["Cl"] * 80
    frames = [Atoms(symbols, positions=rng.random((200, 3)) @ TRICLINIC, cell=TRICLINIC, pbc=True) for _ in range(3)]
    acc = RdfAccumulator(np.array(symbols), [("Li", "Cl"), ("Cl", "Cl")], r_max=6.0, n_bins=60)
    for f in frames:
        acc.add_frame(f.positions, f.cell[:])
    ours = acc.result()
    for pair in [("Li", "Cl"), ("Cl", "Cl")]:
        theirs = np.mean([get_rdf(f, 6.0, 60, elements=pair, no_dists=True) for f in frames], axis=0)
        # ASE normalises like pairs by N², we by N(N−1) (exactly 1 for an ideal gas)
        n = 80
        factor = (n - 1) / n if pair[0] == pair[1] else 1.0
        np.testing.assert_allclose(ours[pair]["g"] * factor, theirs, rtol=1e-9, atol=1e-9)


def test_rdf_range_beyond_half_the_cell_is_refused():
    cell = np.diag([8.0, 8.0, 8.0])
    assert perpendicular_widths(TRICLINIC).min() < 15.0
    acc = RdfAccumulator(np.array(["Li", "Cl"]), [("Li", "Cl")], r_max=5.0)
    with pytest.raises(CathodemlError, match="half the cell"):
        acc.add_frame(np.zeros((2, 3)), cell)


def test_rdf_of_a_species_not_in_the_trajectory_is_an_error():
    with pytest.raises(CathodemlError, match="no Ti atoms"):
        RdfAccumulator(np.array(["Li", "Cl"]), [("Ti", "Cl")], r_max=5.0)
