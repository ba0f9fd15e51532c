"""`cathodeml test`: the reported errors are the model's errors, broken down by system, element and spin state."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.io.dataset import Dataset, System, read_dataset, write_dataset
from cathodeml.train.data import LabelledSystem
from cathodeml.train.evaluate import error_report

TINY = """
[model]
rcut = 4.0
rcut_smth = 0.5
embedding_neurons = [4, 8]
axis_neuron = 2
fitting_neurons = [8, 8]
[training]
steps = 3
batch_size = 1
disp_freq = 1
stat_frames = 3
validation_fraction = 0.2
"""

runner = CliRunner()


def _labelled(types, energies, forces, moments):
    nf, na = forces.shape[:2]
    return LabelledSystem(name=f"s{na}", atom_types=np.asarray(types),
                          coords=np.zeros((nf, na, 3)), cells=np.tile(np.eye(3), (nf, 1, 1)), energies=energies,
                          forces=forces, virials=None, moments=moments)


def test_error_report_matches_errors_computed_by_hand():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(4, 3, 3))
    m = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0], [2.1, 0.0, 0.0], [0.0, 0.0, 0.0]])  # atom 0: Ni HS / LS
    s = _labelled([0, 1, 1], np.array([-3.0, -3.3, -2.9, -3.2]), f, m)
    e_pred = s.energies + np.array([0.03, -0.03, 0.06, 0.0])
    f_pred = f + 0.01 * np.arange(36).reshape(4, 3, 3)
    report = error_report([s], [(e_pred, f_pred)], ["Ni", "O"])
    de = np.array([0.03, -0.03, 0.06, 0.0]) / 3
    assert np.isclose(report["overall"]["energy"]["rmse"], 1000 * np.sqrt(np.mean(de ** 2)))
    assert np.isclose(report["overall"]["energy"]["mae"], 1000 * np.mean(np.abs(de)))
    df = f_pred - f
    assert np.isclose(report["elements"]["Ni"]["force"]["rmse"], 1000 * np.sqrt(np.mean(df[:, 0] ** 2)))
    assert np.isclose(report["elements"]["O"]["force"]["mae"], 1000 * np.mean(np.abs(df[:, 1:])))
    hs = report["spin_states"]["Ni 2.0 μB"]["force"]
    assert hs["n"] == 6 and np.isclose(hs["rmse"], 1000 * np.sqrt(np.mean(df[[0, 2], 0] ** 2)))
    configs = report["spin_configurations"]
    assert configs["s3: Ni[1×2.0]"]["energy"]["n"] == 2 and configs["s3: Ni[1×0.0]"]["energy"]["n"] == 2
    assert "O" not in report["state_definitions"]  # O never carries a moment


@pytest.fixture
def trained(tmp_path, data_dir):
    ds = read_dataset(data_dir / "deepmd" / "nio_spin")
    ds.systems = [s.select(np.arange(5)) for s in ds.systems[:2]]
    data = tmp_path / "nio.h5"
    write_dataset(data, ds)
    (tmp_path / "tiny.toml").write_text(TINY)
    result = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(data), "-o",
                                 str(tmp_path / "model.h5"), "--json"])
    assert result.exit_code == 0, result.output
    return tmp_path, data


def test_cli_test_reports_the_models_own_energies_and_writes_json_and_plots(trained):
    from cathodeml.model import build_neighbor_list, energy_forces_virial, load_model

    tmp_path, data = trained
    out = tmp_path / "out"
    result = runner.invoke(app, ["test", str(tmp_path / "model.h5"), str(data), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert json.loads((out / "test_results.json").read_text())["overall"] == report["overall"]
    for name in ("parity_energy.png", "parity_force.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    # independent recomputation through the model's public API, frame by frame
    model = load_model(tmp_path / "model.h5")
    de, df = [], []
    for s in read_dataset(data).systems:
        for k in range(s.n_frames):
            nbr = build_neighbor_list(s.coords[k], s.cells[k], s.atom_types, model.config.rcut, model.config.ntypes)
            e, f, _ = energy_forces_virial(model.config, model.params, model.stats, s.coords[k], s.cells[k], nbr)
            de.append((float(e) - s.energies[k]) / s.n_atoms)
            df.append(np.asarray(f) - s.forces[k])
    assert np.isclose(report["overall"]["energy"]["rmse"], 1000 * np.sqrt(np.mean(np.square(de))), rtol=1e-9)
    assert np.isclose(report["overall"]["force"]["rmse"], 1000 * np.sqrt(np.mean(np.square(df))), rtol=1e-9)
    assert report["overall"]["frames"] == 10 and len(report["systems"]) == 2


def test_species_unknown_to_the_model_is_a_one_line_error(trained):
    tmp_path, _ = trained
    li = System(atom_types=np.array([0, 1]), coords=np.zeros((1, 2, 3)) + [[0, 0, 0], [1.5, 0, 0]],
                cells=np.eye(3)[None] * 6, energies=np.zeros(1), forces=np.zeros((1, 2, 3)))
    write_dataset(tmp_path / "li.h5", Dataset(["Li", "O"], [li]))
    result = runner.invoke(app, ["test", str(tmp_path / "model.h5"), str(tmp_path / "li.h5")])
    assert result.exit_code == 1
    assert "Li" in result.output and "model knows only Ni,O" in result.output


def test_missing_training_data_is_a_one_line_error(tmp_path):
    (tmp_path / "tiny.toml").write_text(TINY)
    result = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "-o", str(tmp_path / "m.h5")])
    assert result.exit_code == 1 and "--data" in result.output
    assert not (tmp_path / "m.h5").exists()


def test_a_spin_model_rebuilds_virtual_atoms_for_plain_data(tmp_path, data_dir):
    from cathodeml import spin

    ds = read_dataset(data_dir / "deepmd" / "nio_spin" / "data_2")
    ds.systems = [ds.systems[0].select(np.arange(6))]
    aug, _ = spin.augment_dataset(ds, spin.SpinSettings.create(["Ni"], 0.314, 0.0, mode="vector"))
    write_dataset(tmp_path / "plain.h5", ds)
    write_dataset(tmp_path / "spin.h5", aug)
    (tmp_path / "tiny.toml").write_text(TINY)
    result = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "spin.h5"),
                                 "-o", str(tmp_path / "model.h5"), "--quiet"])
    assert result.exit_code == 0, result.output
    on_plain = runner.invoke(app, ["test", str(tmp_path / "model.h5"), str(tmp_path / "plain.h5"), "--json"])
    on_spin = runner.invoke(app, ["test", str(tmp_path / "model.h5"), str(tmp_path / "spin.h5"), "--json"])
    assert on_plain.exit_code == 0 and on_spin.exit_code == 0, on_plain.output + on_spin.output
    a, b = json.loads(on_plain.stdout)["overall"], json.loads(on_spin.stdout)["overall"]
    assert np.isclose(a["energy"]["rmse"], b["energy"]["rmse"], rtol=1e-12)
    assert np.isclose(a["force"]["rmse"], b["force"]["rmse"], rtol=1e-12)
    assert json.loads(on_plain.stdout)["spin"]["mode"] == "vector"


def test_virial_errors_are_reported_per_atom_when_labels_exist():
    rng = np.random.default_rng(3)
    s = _labelled([0, 1], np.zeros(2), np.zeros((2, 2, 3)), None)
    s.virials = rng.normal(size=(2, 3, 3))
    v_pred = s.virials + 0.2
    report = error_report([s], [(np.zeros(2), np.zeros((2, 2, 3)), v_pred)], ["Ni", "O"])
    assert np.isclose(report["virial"]["rmse"], 1000 * 0.2 / 2)
    assert np.isclose(report["systems"][0]["virial"]["mae"], 1000 * 0.2 / 2)
