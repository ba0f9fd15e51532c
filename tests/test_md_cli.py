"""`cathodeml md` end to end, and its structure inputs (files, dataset frames, supercells, moments)."""

import json

import h5py
import numpy as np
import pytest
from ase.io import read as ase_read
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import Dataset, System, write_dataset
from cathodeml.io.trajectory import read_trajectory
from cathodeml.io.structure import parse_magmom, parse_supercell, read_structure, supercell
from cathodeml.model import save_model
from test_md_deeppot import tiny_spin_model

runner = CliRunner()


def test_md_command_runs_a_spin_model_and_restart_extends_the_same_trajectory(tmp_path, data_dir):
    save_model(tmp_path / "model.h5", tiny_spin_model())
    cif = str(data_dir / "structures" / "LiMnO2_mp-18767.cif")
    traj = tmp_path / "traj.h5"
    common = ["md", str(tmp_path / "model.h5"), cif, "-o", str(traj), "--magmom", "Mn=3.8", "--supercell", "2x1x1",
              "--dt", "0.5", "--temperature", "300", "--stride", "10", "--velocities", "--json"]
    first = runner.invoke(app, common + ["--steps", "20"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["final_step"] == 20 and summary["frames"] == 3 and summary["n_atoms"] == 16

    again = runner.invoke(app, common + ["--steps", "20"])
    assert again.exit_code == 1 and "--restart" in again.output  # an existing trajectory is never overwritten silently

    second = runner.invoke(app, common + ["--steps", "40", "--restart"])
    assert second.exit_code == 0, second.output
    t = read_trajectory(traj)
    assert t["step"].tolist() == [0, 10, 20, 30, 40] and t["time"].tolist() == [0.0, 5.0, 10.0, 15.0, 20.0]
    assert t["type_map"] == ["Li", "Mn", "O"] and sorted(set(t["species"].tolist())) == [0, 1, 2]
    assert t["parameters"]["moments"] == [3.8] * 4 and t["parameters"]["spin"]["elements"] == ["Mn"]
    # NVT bookkeeping: T from the kinetic energy with N_f = 3N − 3
    ke_from_v = 0.5 * np.einsum("n,fni->f", t["masses"], t["velocities"] ** 2) * 103.6427
    np.testing.assert_allclose(t["kinetic_energy"], ke_from_v, rtol=1e-5)
    np.testing.assert_allclose(t["temperature"], 2 * t["kinetic_energy"] / (45 * 8.617333262e-5), rtol=1e-12)
    info = runner.invoke(app, ["info", str(traj)])
    assert info.exit_code == 0 and "5 frames" in info.output


def test_md_command_explains_bad_inputs(tmp_path, data_dir):
    save_model(tmp_path / "model.h5", tiny_spin_model())
    cif = str(data_dir / "structures" / "LiMnO2_mp-18767.cif")
    no_moments = runner.invoke(app, ["md", str(tmp_path / "model.h5"), cif, "-o", str(tmp_path / "t.h5")])
    assert no_moments.exit_code == 1 and "--magmom" in no_moments.output
    assert not (tmp_path / "t.h5").exists()
    water = runner.invoke(app, ["md", str(data_dir / "deepmd" / "reference" / "se_e2_a_tos_true.dp"), cif,
                                "-o", str(tmp_path / "t.h5")])
    assert water.exit_code == 1 and "Li, Mn" in water.output
    bad_stride = runner.invoke(app, ["md", str(tmp_path / "model.h5"), cif, "--stride", "0"])
    assert bad_stride.exit_code == 1 and "--stride" in bad_stride.output
    no_ckpt = runner.invoke(app, ["md", str(tmp_path / "model.h5"), cif, "--magmom", "Mn=4", "--restart",
                                  "-o", str(tmp_path / "new.h5")])
    assert no_ckpt.exit_code == 1 and "no checkpoint" in no_ckpt.output


def test_supercell_repeats_like_ase_and_carries_moments(data_dir):
    path = data_dir / "structures" / "LiMnO2_mp-18767.cif"
    s = read_structure(path).with_moments(parse_magmom("Mn=4.0", read_structure(path).symbols))
    big = supercell(s, parse_supercell("3x2x1"))
    ref = ase_read(path).repeat((3, 2, 1))
    np.testing.assert_allclose(big.positions, ref.positions, atol=1e-12)
    np.testing.assert_allclose(big.cell, ref.cell.array, atol=1e-12)
    assert list(big.symbols) == ref.get_chemical_symbols()
    np.testing.assert_array_equal(big.moments, np.where(np.array(big.symbols) == "Mn", 4.0, 0.0))
    with pytest.raises(CathodemlError, match="4x4x2"):
        parse_supercell("4by4")
    with pytest.raises(CathodemlError, match="Ni"):
        parse_magmom("Ni=1.0", s.symbols)


def test_dataset_frame_gives_positions_cell_and_moments(tmp_path, data_dir):
    s = read_structure(data_dir / "structures" / "LiMnO2_mp-18767.cif")
    type_map = ["Li", "Mn", "O"]
    coords = np.stack([s.positions, s.positions + 0.01])
    magmom = np.array([[0.0, 3.9, -3.8, 0, 0, 0, 0, 0], [0.0, 3.7, 3.6, 0, 0, 0, 0, 0]])
    system = System(atom_types=np.array([type_map.index(x) for x in s.symbols]), coords=coords,
                    cells=np.stack([s.cell, s.cell]), energies=np.zeros(2), forces=np.zeros_like(coords),
                    frame_data={"magmom": magmom}, name="LiMnO2")
    write_dataset(tmp_path / "data.h5", Dataset(type_map=type_map, systems=[system]))
    frame = read_structure(f"{tmp_path / 'data.h5'}:LiMnO2:-1")
    np.testing.assert_allclose(frame.positions, s.positions + 0.01)
    np.testing.assert_allclose(frame.moments, magmom[1])
    assert frame.symbols == s.symbols
    with pytest.raises(CathodemlError, match="SYSTEM:FRAME"):
        read_structure(tmp_path / "data.h5")
    with pytest.raises(CathodemlError, match="out of range"):
        read_structure(f"{tmp_path / 'data.h5'}:LiMnO2:5")
    with h5py.File(tmp_path / "data.h5") as f:
        assert "LiMnO2" in f
