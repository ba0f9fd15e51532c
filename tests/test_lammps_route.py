"""The LAMMPS route with the real engine: export-lammps → dp convert-backend → lmp (pair_style deepmd) gives
cathodeml's energy and forces to 1e-10 relative, also in a triclinic cell that LAMMPS must rotate, and
for a spin model through pair_style deepspin.

Runs only where LAMMPS with the DeePMD-kit plugin is installed: set CATHODEML_PEERS to a venv made with
`pip install -r benchmarks/requirements-lammps.txt`.
The whole route, 2 MPI ranks included, is `python benchmarks/lammps_route.py --peers VENV`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PEERS = os.environ.get("CATHODEML_PEERS")
pytestmark = pytest.mark.skipif(not PEERS or not (Path(PEERS) / "bin" / "lmp").exists(),
                                reason="LAMMPS + DeePMD-kit not installed: set CATHODEML_PEERS to a venv with "
                                       "deepmd-kit[torch,lmp]==3.2.0 (see benchmarks/requirements-lammps.txt)")


@pytest.mark.parametrize("shape", ["orthorhombic", "triclinic"])
def test_lammps_energy_and_forces_equal_cathodeml(tmp_path, shape):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lammps_route

    env = lammps_route.peer_env(Path(PEERS).resolve())
    model = ROOT / "examples/lgps/model.h5"
    structure = str(ROOT / "examples/lgps/POSCAR_Li160Ge16P32S192")
    if shape == "triclinic":
        structure = str(lammps_route.sheared(structure, tmp_path / "POSCAR"))
    deck = tmp_path / "deck"
    subprocess.run([sys.executable, "-m", "cathodeml", "export-lammps", str(model), structure, "-o", str(deck),
                    "-T", "600", "--steps", "1", "--quiet"], check=True)
    subprocess.run(["dp", "--pt", "convert-backend", "model.dp", "model.pth"], cwd=deck, env=env, check=True,
                   capture_output=True)
    type_map = ["Li", "Ge", "P", "S"]
    e_lmp, f_lmp = lammps_route.lammps_single_point(deck, " ".join(type_map), env)
    e_cml, f_cml = lammps_route.cathodeml_single_point(str(model), structure)
    assert abs(e_lmp - e_cml) <= 1e-10 * abs(e_cml)
    assert np.max(np.abs(f_lmp - f_cml)) <= 1e-10 * np.max(np.abs(f_cml))


def test_spin_model_in_lammps_deepspin_equals_cathodeml(tmp_path):
    """A collinear spin model (virtual atoms without energy of their own) through pair_style deepspin."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lammps_route

    env = lammps_route.peer_env(Path(PEERS).resolve())
    model, structure, moments = lammps_route.spin_case(tmp_path)
    deck = tmp_path / "deck"
    lammps_route.export(model, structure, deck, 1, tmp_path / "export.log", ["--magmom", str(tmp_path / "NiO_moments.txt")])
    subprocess.run(["dp", "--pt", "convert-backend", "model.dp", "model.pth"], cwd=deck, env=env, check=True,
                   capture_output=True)
    e_lmp, f_lmp = lammps_route.lammps_single_point(deck, "Li Ni O", env, spin=True)
    e_cml, f_cml = lammps_route.cathodeml_single_point(str(model), str(structure), moments)
    assert abs(e_lmp - e_cml) <= 1e-10 * abs(e_cml)
    assert np.max(np.abs(f_lmp - f_cml)) <= 1e-10 * np.max(np.abs(f_cml))
