"""One model loader and one dataset-layout detection for every command.

The labels of the fixture dataset are DeePMD-kit 3.2's own predictions (tests/data/deepmd/reference),
so a command that reads the .dp model and the dpdata-written file correctly reproduces them to
round-off; a misread file (wrong type map, wrong layout, wrong model) cannot.
"""

import json
import subprocess
import sys

import dpdata
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import cathodeml
from cathodeml.cli import app
from cathodeml.errors import CathodemlError
from cathodeml.io.deepmd_dp import read_dp, write_dp
from cathodeml.io.trajectory import read_trajectory
from cathodeml.model import save_model
from cathodeml.model.store import import_deepmd, parameters_identical

runner = CliRunner()
MODEL = "se_e2_a_tos_true"


def _reference(data_dir, case="water"):
    ref = np.load(data_dir / "deepmd/reference/reference.npz")
    return {k.rsplit("/", 1)[1]: ref[k] for k in ref.files if k.startswith(f"{MODEL}/{case}/")}


def _dpdata_root_file(data_dir, path):
    """The water frame labelled by DeePMD-kit, written by dpdata as one system at the file's root."""
    r = _reference(data_dir)
    types = r["types"].astype(int)
    system = dpdata.LabeledSystem(data={
        "atom_names": ["O", "H"], "atom_numbs": [int(np.sum(types == 0)), int(np.sum(types == 1))],
        "atom_types": types, "orig": np.zeros(3), "cells": r["cell"][None], "coords": r["coord"][None],
        "energies": r["energy"], "forces": r["force"][None], "virials": r["virial"][None]})
    system.to("deepmd/hdf5", str(path))
    with h5py.File(path, "r") as f:  # the layout under test: no group per system
        assert {"type.raw", "type_map.raw", "set.000"} <= set(f.keys())
    return r


@pytest.fixture
def water(data_dir, tmp_path):
    dp = data_dir / f"deepmd/reference/{MODEL}.dp"
    h5 = tmp_path / "model.h5"
    save_model(h5, import_deepmd(dp))
    data = tmp_path / "water.h5"
    return dp, h5, data, _dpdata_root_file(data_dir, data)


def test_test_command_gives_deepmd_kits_numbers_for_a_dp_model_and_its_model_h5(water):
    dp, h5, data, _ = water
    reports = []
    for model in (dp, h5):
        r = runner.invoke(app, ["test", str(model), str(data), "--json"])
        assert r.exit_code == 0, r.output
        reports.append(json.loads(r.stdout))
    a, b = ({k: v for k, v in rep.items() if k != "model"} for rep in reports)
    assert a == b
    # labels are DeePMD-kit's predictions of this model: errors are round-off (meV/atom, meV/Å)
    assert a["overall"]["frames"] == 1 and a["overall"]["force"]["n"] == 192 * 3
    assert a["overall"]["energy"]["rmse"] < 1e-7 and a["overall"]["force"]["rmse"] < 1e-6


def test_info_describes_a_dpdata_root_layout_file_and_a_dp_model(water):
    dp, _, data, ref = water
    r = runner.invoke(app, ["info", str(data), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["kind"] == "dataset" and s["type_map"] == ["O", "H"] and s["n_systems"] == 1 and s["n_frames"] == 1
    (system,) = s["systems"]
    assert system["name"] == "water" and system["composition"] == {"O": 64, "H": 128}
    assert system["energy_per_atom_eV"][0] == pytest.approx(float(ref["energy"][0]) / 192, rel=1e-12)
    r = runner.invoke(app, ["info", str(dp), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["kind"] == "model" and s["config"]["type_map"] == ["O", "H"] and s["config"]["sel"] == [10, 20]


def test_md_starts_from_a_frame_of_a_root_layout_file_with_deepmd_kits_energy(water, tmp_path):
    dp, _, data, ref = water
    plain = runner.invoke(app, ["md", str(dp), str(data), "-o", str(tmp_path / "t.h5")])
    assert plain.exit_code == 1 and f"{data}:water:0" in plain.output  # says how to pick the frame
    traj = tmp_path / "traj.h5"
    r = runner.invoke(app, ["md", str(dp), f"{data}:water:0", "-o", str(traj), "--steps", "4", "--stride", "2",
                            "--dt", "0.1", "--ensemble", "nve", "--temperature", "10", "--json"])
    assert r.exit_code == 0, r.output
    t = read_trajectory(traj)
    assert t["step"].tolist() == [0, 2, 4] and t["type_map"] == ["O", "H"]
    np.testing.assert_allclose(t["positions"][0], ref["coord"], atol=1e-9)
    np.testing.assert_allclose(t["potential_energy"][0], ref["energy"][0], rtol=1e-10)


def test_load_model_reads_both_formats_by_content(water, tmp_path):
    dp, h5, _, _ = water
    disguised = tmp_path / "model.bin"  # the name says nothing; the content decides
    disguised.write_bytes(dp.read_bytes())
    models = [cathodeml.load_model(p) for p in (dp, h5, disguised)]
    assert all(parameters_identical(models[0], m) for m in models[1:])


def test_load_model_explains_what_is_not_a_model(water, tmp_path, data_dir):
    dp, _, data, _ = water
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    (tmp_path / "model.pth").write_bytes(b"PK\x03\x04")
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("x", data=[1.0])
    tree = read_dp(dp)
    tree["model"]["descriptor"]["type"] = "dpa1"
    write_dp(tmp_path / "dpa1.dp", tree)
    cases = {tmp_path / "missing.h5": "no such model file", tmp_path: "is a folder",
             data: "a dataset, not a model", tmp_path / "junk.h5": "not an HDF5 file",
             tmp_path / "model.pth": "dp convert-backend", tmp_path / "empty.h5": "unknown kind",
             tmp_path / "dpa1.dp": "descriptor type 'dpa1'"}
    for path, message in cases.items():
        with pytest.raises(CathodemlError, match=message) as err:
            cathodeml.load_model(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    r = runner.invoke(app, ["test", str(data), str(data)])
    assert r.exit_code == 1 and "not a model" in r.output


def test_import_cathodeml_does_not_import_jax():
    code = "import sys, cathodeml; assert 'jax' not in sys.modules; assert 'load_model' in dir(cathodeml)"
    subprocess.run([sys.executable, "-c", code], check=True)
