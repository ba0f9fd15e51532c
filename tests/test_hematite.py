"""The spin claim on real DFT+U data (automag's hematite orderings, tests/data/spin/hematite): the reader
keeps energies, moments and atom order; energy-only data trains without a force term; a spin-blind model
gives every ordering of one cell the same energy and a spin model does not; the Makefile recipe and the
(η, d) scan run end to end at toy sizes."""

import csv
import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from cathodeml import spin
from cathodeml.cli import app
from cathodeml.errors import CathodemlError
from cathodeml.io.automag import read_automag
from cathodeml.io.dataset import read_dataset, write_dataset
from cathodeml.train import data as D
from cathodeml.train import plan as P
from cathodeml.train import trainer as T
from cathodeml.train.config import LearningRateSettings, LossSettings, ModelSettings, TrainConfig, TrainingSettings
from cathodeml.train.loss import energy_force_virial_loss

ROOT = Path(__file__).resolve().parent.parent
HEMATITE = Path(__file__).parent / "data" / "spin" / "hematite"
TEXT = HEMATITE / "Fe12O18_singlepoint.txt"
runner = CliRunner()

SETTINGS = TrainConfig(
    model=ModelSettings(rcut=4.0, rcut_smth=0.5, sel="auto", embedding_neurons=(4, 8), axis_neuron=2,
                        fitting_neurons=(8, 8)),
    learning_rate=LearningRateSettings(start_lr=1e-3, stop_lr=1e-4, decay_steps=5),
    loss=LossSettings(start_pref_e=1.0, limit_pref_e=1.0, start_pref_f=100.0, limit_pref_f=100.0),
    training=TrainingSettings(steps=5, batch_size=2, seed=1, disp_freq=5, save_freq=1000, stat_frames=4,
                              validation_fraction=0.0),
)


def _records():
    """(name, energy, final moments) straight from the text, independently of the reader."""
    text = TEXT.read_text()
    names = re.findall(r"^(\S+)\s+\d+\s+singlepoint=", text, re.M)
    energies = [float(x) for x in re.findall(r"energy=(\S+)", text)]
    finals = [np.array(x.split(), float) for x in re.findall(r"final_magmoms=\[([^\]]*)\]", text)]
    return names, energies, finals


def test_reader_reproduces_energies_moments_and_the_up_down_blocks():
    names, energies, finals = _records()
    read = read_automag(TEXT)
    s = read.dataset.systems[0]
    assert read.dataset.type_map == ["Fe", "O"] and s.n_frames == len(names) == 12
    assert list(s.frame_data["ordering"]) == names
    np.testing.assert_array_equal(s.energies, energies)
    np.testing.assert_array_equal(s.frame_data["magmom"], np.stack(finals))
    np.testing.assert_array_equal(s.frame_data["spin"][..., 2], np.stack(finals))
    fe = np.sign(s.frame_data["magmom"][:, s.atom_types == 0])
    for name, signs in zip(names, fe):
        want = [1] * 12 if name == "fm" else [1] * 6 + [-1] * 6  # POSCAR blocks: 6 Fe up, 6 Fe down
        assert signs.tolist() == want, name
    assert s.forces is None and s.virials is None
    assert np.allclose(s.cells[0], [[5.0351, 0, 0], [-2.51755, 4.3605245, 0], [0, 0, 13.7581]])


def test_moments_out_of_poscar_order_are_an_error(tmp_path):
    shutil.copytree(HEMATITE, tmp_path / "h")
    path = tmp_path / "h" / TEXT.name
    lines = path.read_text().splitlines(keepends=True)
    k = next(i for i, line in enumerate(lines) if line.startswith("afm2 "))
    final = re.search(r"final_magmoms=\[([^\]]*)\]", lines[k + 1])
    values = final[1].split()
    values[0], values[6] = values[6], values[0]  # an up atom's moment swapped with a down atom's
    lines[k + 1] = lines[k + 1][: final.start(1)] + " ".join(values) + lines[k + 1][final.end(1):]
    path.write_text("".join(lines))
    with pytest.raises(CathodemlError, match=r"ordering afm2: atom 0 \(Fe\) is in the spin-up \(\+\) block"):
        read_automag(path)


def test_a_missing_poscar_is_an_error_unless_skipped(tmp_path):
    shutil.copytree(HEMATITE, tmp_path / "h")
    (tmp_path / "h" / "enumlib" / "vasp.3").unlink()
    with pytest.raises(CathodemlError, match="afm3 needs .*vasp.3"):
        read_automag(tmp_path / "h" / TEXT.name)
    read = read_automag(tmp_path / "h" / TEXT.name, skip_missing=True)
    assert "afm3" not in read.orderings and read.skipped[0]["ordering"] == "afm3"


def test_ingest_writes_an_energy_only_dataset_and_splits_orderings(tmp_path):
    out, held = tmp_path / "train.h5", tmp_path / "held.h5"
    r = runner.invoke(app, ["ingest", str(TEXT), "-o", str(out), "--exclude-orderings", "afm*5,afm1", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["ingest", str(TEXT), "-o", str(held), "--orderings", "afm*5,afm1", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["frames"]["kept"] == 2
    with h5py.File(out, "r") as f:
        sets = [k for g in f.values() for k in g.keys() if k.startswith("set.")]
        keys = set(f["Fe12O18"]["set.000"].keys())
    assert sets and "force.npy" not in keys and {"energy.npy", "coord.npy", "spin.npy", "magmom.npy"} <= keys
    orderings = set(read_dataset(out).systems[0].frame_data["ordering"]) | set(read_dataset(held).systems[0].frame_data["ordering"])
    assert len(orderings) == 12
    assert not set(read_dataset(out).systems[0].frame_data["ordering"]) & {"afm1", "afm5"}
    r = runner.invoke(app, ["ingest", str(TEXT), "-o", str(out), "--append", "--quiet"])  # adds only the 2 missing
    assert r.exit_code == 0, r.output and read_dataset(out).n_frames == 12
    assert read_dataset(out).n_frames == 12
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "Fe12O18" in r.output


def test_energy_only_loss_has_no_force_term():
    import jax.numpy as jnp

    pred = {"energy": jnp.array([1.0, 2.0]), "force": None, "virial": None}
    label = {"energy": jnp.array([1.5, 1.0]), "force": None, "virial": None}
    for p_f in (0.0, 1000.0):
        loss, metrics = energy_force_virial_loss(pred, label, 10, jnp.array([2.0, p_f, 0.0]), False, has_force=False)
        assert float(loss) == pytest.approx(2.0 * (0.25 + 1.0) / 2 / 10)
        assert "mse_f" not in metrics


def _train(dataset, tmp_path, tag, steps=5):
    settings = dataclasses.replace(SETTINGS, training=dataclasses.replace(SETTINGS.training, steps=steps))
    systems = D.labelled_systems(dataset, tag)
    assert all(s.forces is None for s in systems)
    D.assign_batch_sizes(systems, 2)
    config = P.model_config_for(settings.model, dataset.type_map, systems)
    P.prepare_neighbours(config, systems)
    params, stats = P.initial_model(config, systems, 1, 4)
    result = T.train(config, T.new_run_state(params, stats), systems, systems[:0], settings,
                     lcurve_path=tmp_path / f"{tag}.out", checkpoint_path=tmp_path / f"{tag}.h5")
    return config, result, systems


def test_energy_only_training_fits_energies_with_force_loss_off(tmp_path):
    dataset = read_automag(TEXT).dataset
    config, result, systems = _train(dataset, tmp_path, "plain", steps=5)
    rows = [line.split() for line in (tmp_path / "plain.out").read_text().splitlines() if not line.startswith("#")]
    assert rows and all(r[5] == "nan" and r[6] == "nan" for r in rows)  # rmse_f columns: no force labels
    assert all(np.isfinite(h["train"]["rmse_e"]) and np.isnan(h["train"]["rmse_f"]) for h in result.history)
    # a start force prefactor of 100 adds nothing: the loss is the energy term alone
    last = result.history[-1]["train"]
    assert last["rmse"] == pytest.approx(np.sqrt(last["rmse_e"] ** 2 * systems[0].n_real), rel=1e-9)


def test_spin_model_tells_orderings_of_one_cell_apart_and_a_plain_model_cannot(tmp_path):
    from cathodeml.model import Model
    from cathodeml.train.evaluate import predict_system, systems_for_model

    plain = read_automag(TEXT).dataset
    augmented, _ = spin.augment_dataset(plain, spin.SpinSettings.create(["Fe"], 0.2, 0.2))
    names = list(plain.systems[0].frame_data["ordering"])
    pick = [names.index("afm1"), names.index("afm2"), names.index("afm7")]
    energies = {}
    for tag, ds in (("plain", plain), ("spin", augmented)):
        config, result, _ = _train(ds, tmp_path, tag, steps=3)
        model = Model(config, result.params, result.stats, spin=spin.dataset_spin_settings(ds) and
                      spin.dataset_spin_settings(ds).to_dict())
        systems = systems_for_model(model, plain, tag)  # both tested on the plain frames
        energies[tag] = predict_system(model, systems[0].select(np.array(pick)))[0]
    # afm1, afm2 and afm7 are one geometry with the Fe atoms relabelled: a spin-blind model sees one input
    assert np.ptp(energies["plain"]) < 1e-9
    # with virtual spin atoms they are different inputs (their DFT energies differ by up to 28 meV/atom)
    assert np.ptp(energies["spin"]) / 30 > 1e-6


def test_makefile_recipe_runs_on_the_slice(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(
        ["make", "-f", "examples/hematite/Makefile", f"OUT={out}", f"SINGLEPOINT={TEXT}", "HOLD_OUT=afm*5,afm1*",
         "PRESET=configs/tiny.toml", "STEPS=4"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    text = (out / "numbers.txt").read_text()
    plain, spin_rmse = (float(x) for x in re.findall(r"(?:plain|spin) ([\d.]+)", text))
    report = json.loads((out / "plain" / "test" / "test_results.json").read_text())
    assert report["overall"]["frames"] == 4  # afm5, afm10, afm11, afm1 held out
    assert report["overall"]["force"]["n"] == 0  # no force labels: no force errors
    assert report["overall"]["force"]["rmse"] is None  # written as null (strict JSON), not NaN
    assert plain == pytest.approx(report["overall"]["energy"]["rmse"], abs=0.01) and spin_rmse > 0
    assert not (out / "plain" / "test" / "parity_force.png").exists()


def test_spin_scan_trains_each_grid_point_and_marks_overlaps(tmp_path):
    held = tmp_path / "held.h5"
    train = tmp_path / "train.h5"
    read = read_automag(TEXT)
    s = read.dataset.systems[0]
    is_held = np.isin(s.frame_data["ordering"], ["afm3", "afm8"])
    write_dataset(train, dataclasses.replace(read.dataset, systems=[s.select(np.flatnonzero(~is_held))]))
    write_dataset(held, dataclasses.replace(read.dataset, systems=[s.select(np.flatnonzero(is_held))]))
    out = tmp_path / "scan"
    r = runner.invoke(app, ["spin-scan", str(train), "--magnetic", "Fe", "--eta", "0.1,0.5", "--d", "0.1:0.2:2",
                            "--config", str(ROOT / "configs" / "tiny.toml"), "--valid", str(held), "--steps", "3",
                            "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    table = json.loads(r.stdout)["points"]
    assert [(p["eta_A_per_muB"], p["d_A"]) for p in table] == [(0.1, 0.1), (0.1, 0.2), (0.5, 0.1), (0.5, 0.2)]
    # η = 0.5 Å/μB pushes a virtual atom (±2.1 Å along c) onto a neighbour: marked, not trained
    assert [p["overlap"] for p in table] == [0, 0, 1, 1]
    assert all(np.isfinite(p["energy_rmse_meV_per_atom"]) for p in table[:2])
    assert table[2]["energy_rmse_meV_per_atom"] is None and table[0]["force_rmse_meV_per_A"] is None  # JSON null
    assert table[0]["energy_rmse_meV_per_atom"] != table[1]["energy_rmse_meV_per_atom"]
    rows = list(csv.DictReader(open(out / "spin_scan.csv")))
    assert len(rows) == 4 and rows[2]["overlap"] == "1" and rows[2]["energy_rmse_meV_per_atom"] == ""
    assert rows[0]["force_rmse_meV_per_A"] == ""  # no forces in the data
    assert (out / "spin_scan_energy.png").stat().st_size > 0 and not (out / "spin_scan_force.png").exists()
