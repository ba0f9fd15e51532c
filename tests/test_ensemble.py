"""Ensembles and model deviation (`cathodeml.ensemble`, `test --models`, `md --models`, `train --ensemble`, `select`).

Known answers: the deviation columns equal a direct loop over DeePMD-kit's definitions; in md they
equal each model's own forces/energies/virial evaluated through the ASE calculator at the written
frames; K copies of one model deviate by 0; models trained on some frames deviate more on rattled
copies of those frames; farthest-point selection equals a brute-force maximin choice on a line.
"""

import json

import jax
import numpy as np
import pytest
from ase.io import read
from typer.testing import CliRunner

from cathodeml import ensemble as E
from cathodeml.calculator import CathodemlCalculator
from cathodeml.cli import app
from cathodeml.io.trajectory import read_trajectory
from cathodeml.model import Model, init_params, save_model
from test_md_deeppot import tiny_spin_model

runner = CliRunner()


def test_model_deviation_equals_a_direct_loop_over_the_definitions():
    rng = np.random.default_rng(3)
    k, nf, n = 4, 3, 5
    e, f, v = rng.normal(size=(k, nf)), rng.normal(size=(k, nf, n, 3)), rng.normal(size=(k, nf, 3, 3))
    rows = E.model_deviation(e, f, v, n, steps=[0, 10, 20])
    for fr in range(nf):
        eps = [np.sqrt(sum(np.sum((f[m, fr, i] - f[:, fr, i].mean(0)) ** 2) for m in range(k)) / k) for i in range(n)]
        comp = [np.sqrt(np.mean((v[:, fr].reshape(k, 9)[:, c] / n - np.mean(v[:, fr].reshape(k, 9)[:, c] / n)) ** 2))
                for c in range(9)]
        expect = [10 * fr, max(comp), min(comp), np.sqrt(np.sum(np.square(comp))) / 3, max(eps), min(eps),
                  np.mean(eps), np.sqrt(np.mean((e[:, fr] / n - np.mean(e[:, fr] / n)) ** 2))]
        np.testing.assert_allclose(rows[fr], expect, rtol=1e-12, atol=1e-14)
    same = E.model_deviation(np.repeat(e[:1], 3, 0), np.repeat(f[:1], 3, 0), np.repeat(v[:1], 3, 0), n)
    assert np.all(np.abs(same[:, 1:]) < 1e-14)  # zero up to rounding of the mean


def test_trust_levels_and_farthest_point_selection():
    np.testing.assert_array_equal(E.trust_levels([0.01, 0.05, 0.2, 0.25, 0.9], 0.05, 0.25), [0, 1, 1, 2, 2])
    x = np.array([[0.0], [1.0], [2.0], [10.0], [9.0], [5.0]])
    assert E.farthest_point_selection(x, 3, first=0) == [0, 3, 5]  # then 5 is the farthest from {0, 10}
    with pytest.raises(Exception, match="lo < hi"):
        E.trust_levels([0.1], 0.3, 0.2)


def _member(seed: int) -> Model:
    m = tiny_spin_model()
    params = init_params(m.config, jax.random.PRNGKey(seed))
    for net in params["fitting"]:
        net[-1]["w"] = np.asarray(net[-1]["w"]) * 30.0
    return Model(m.config, params, m.stats, spin=m.spin)


def test_md_models_deviation_equals_each_models_own_forces_stops_at_trust_hi_and_restarts(tmp_path, data_dir):
    for s in range(3):
        save_model(tmp_path / f"m{s}.h5", _member(11 + s))
    cif = str(data_dir / "structures" / "LiMnO2_mp-18767.cif")

    def md(traj, steps, *extra):
        r = runner.invoke(app, ["md", str(tmp_path / "m0.h5"), cif, "-o", str(traj), "--supercell", "2x1x1",
                                "--magmom", "Mn=3.8", "--dt", "0.5", "--stride", "5", "--steps", str(steps),
                                "--seed", "1", "--json", *extra])
        assert r.exit_code == 0, r.output
        return r

    models = ["--models", str(tmp_path / "m1.h5"), "--models", str(tmp_path / "m2.h5")]
    straight = tmp_path / "t.h5"
    md(straight, 20, *models)
    rows = E.read_model_devi(straight.with_suffix(".model_devi.out"))
    t = read_trajectory(straight)
    np.testing.assert_array_equal(rows[:, 0], t["step"])
    from ase import Atoms

    symbols = [t["type_map"][s] for s in t["species"]]
    moments = np.where(np.array(symbols) == "Mn", 3.8, 0.0)
    for fr in (0, len(t["step"]) - 1):
        atoms = Atoms(symbols, positions=t["positions"][fr], cell=t["cells"][fr], pbc=True)
        out = []
        for s in range(3):
            atoms.calc = CathodemlCalculator(tmp_path / f"m{s}.h5", moments=moments)
            out.append((atoms.get_potential_energy(), atoms.get_forces(), -atoms.get_stress(voigt=False) * atoms.get_volume()))
        e, f, v = (np.array([o[i] for o in out])[:, None] for i in range(3))
        # force and energy columns (ASE's stress symmetrises the virial, so its columns are not compared);
        # the file keeps 7 significant digits
        np.testing.assert_allclose(rows[fr, 4:], E.model_deviation(e, f, v, len(symbols), steps=[t["step"][fr]])[0, 4:],
                                   rtol=1e-6, atol=1e-12)
    assert rows[:, 4].min() > 0

    copies = tmp_path / "copies.h5"
    md(copies, 10, "--models", str(tmp_path / "m0.h5"))
    assert np.all(np.abs(E.read_model_devi(copies.with_suffix(".model_devi.out"))[:, 1:]) < 1e-12)

    # a threshold below every frame's deviation: stops after the first frame of the loop, frames valid
    stopped = tmp_path / "stopped.h5"
    r = md(stopped, 20, *models, "--trust-hi", "1e-9", "--trust-stop")
    assert "above --trust-hi" in r.stderr and json.loads(r.stdout)["final_step"] == 5
    # continuing it without the stop gives the straight run's rows exactly
    md(stopped, 20, *models, "--restart")
    np.testing.assert_allclose(E.read_model_devi(stopped.with_suffix(".model_devi.out")), rows, rtol=1e-9, atol=1e-12)

    # select: candidates between the thresholds, as POSCARs of the frames' (wrapped) positions
    lo, hi = np.sort(rows[:, 4])[1], np.sort(rows[:, 4])[-1]
    out = tmp_path / "cand"
    r = runner.invoke(app, ["select", str(straight), "--lo", str(lo), "--hi", str(hi), "-n", "2", "-o", str(out), "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    inside = (rows[:, 4] >= lo) & (rows[:, 4] < hi)
    assert summary["candidates"] == int(inside.sum()) and len(summary["selected"]) == 2
    assert summary["selected"][0]["max_devi_f"] == pytest.approx(rows[inside, 4].max())
    for rec in summary["selected"]:
        got = read(out / rec["folder"] / "POSCAR", format="vasp")
        ref = Atoms(symbols, positions=t["positions"][rec["frame"]], cell=t["cells"][rec["frame"]], pbc=True)
        ref.wrap()
        np.testing.assert_allclose(got.get_positions(), ref.get_positions(), atol=1e-6)
        assert got.get_chemical_symbols() == symbols
    again = runner.invoke(app, ["select", str(straight), "-o", str(out)])
    assert again.exit_code == 1 and "exists" in again.output


TINY = """
[model]
type_map = ["Li", "Ge", "P", "S"]
rcut = 4.0
rcut_smth = 0.5
embedding_neurons = [4, 8]
axis_neuron = 2
fitting_neurons = [8, 8]
[training]
steps = 300
batch_size = 2
disp_freq = 100
stat_frames = 4
validation_fraction = 0.0
"""


def test_trained_ensemble_deviates_more_away_from_its_training_frames(tmp_path, data_dir):
    import dataclasses

    from cathodeml.io.dataset import read_dataset, write_dataset

    ds = read_dataset(data_dir / "deepmd" / "lgps_slice" / "train" / "LiGePS-iter.000000-data.000", ["Li", "Ge", "P", "S"])
    write_dataset(tmp_path / "train.h5", ds)
    s = ds.systems[0]
    ds.systems = [dataclasses.replace(s, coords=s.coords + np.random.default_rng(0).normal(scale=0.25, size=s.coords.shape))]
    write_dataset(tmp_path / "far.h5", ds)
    (tmp_path / "tiny.toml").write_text(TINY)
    r = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "train.h5"), "-o",
                            str(tmp_path / "m.h5"), "--ensemble", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["models"] == [str(tmp_path / f"m.{k:03d}.h5") for k in range(3)]
    seeds = [json.loads(json.dumps(__import__("cathodeml").load_model(tmp_path / f"m.{k:03d}.h5").metadata))["training"]["model"]["seed"]
             for k in range(3)]
    assert len(set(seeds)) == 3
    devi = {}
    for name in ("train", "far"):
        r = runner.invoke(app, ["test", str(tmp_path / "m.000.h5"), str(tmp_path / f"{name}.h5"), "--models",
                                str(tmp_path / "m.001.h5"), "--models", str(tmp_path / "m.002.h5"), "-o",
                                str(tmp_path / name), "--json"])
        assert r.exit_code == 0, r.output
        devi[name] = E.read_model_devi(tmp_path / name / "model_devi.out")
        reported = json.loads(r.stdout)["model_deviation"]["systems"][s.name]
        assert reported["max_devi_f_mean"] == pytest.approx(devi[name][:, 4].mean())
    assert devi["far"][:, 4].mean() > 1.5 * devi["train"][:, 4].mean()
    # a finished ensemble is kept on --restart
    r = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "train.h5"), "-o",
                            str(tmp_path / "m.h5"), "--ensemble", "3", "--restart", str(tmp_path / "checkpoint.h5"), "--json"])
    assert r.exit_code == 0 and all(m.get("kept") for m in json.loads(r.stdout)["members"])


def test_train_ensemble_in_one_program_equals_members_one_by_one(tmp_path, data_dir):
    from cathodeml import load_model
    from cathodeml.io.dataset import read_dataset, write_dataset

    ds = read_dataset(data_dir / "deepmd" / "lgps_slice" / "train" / "LiGePS-iter.000000-data.000", ["Li", "Ge", "P", "S"])
    write_dataset(tmp_path / "train.h5", ds)
    (tmp_path / "tiny.toml").write_text(TINY)
    models = {}
    for mode in ("vmap", "sequential"):
        (tmp_path / mode).mkdir()
        r = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "train.h5"), "--steps", "6",
                                "-o", str(tmp_path / mode / "m.h5"), "--ensemble", "2", "--json"]
                          + (["--sequential"] if mode == "sequential" else []))
        assert r.exit_code == 0, r.output
        models[mode] = [load_model(tmp_path / mode / f"m.{k:03d}.h5") for k in range(2)]
    for a, b in zip(models["vmap"], models["sequential"]):
        assert a.metadata["training"]["model"]["seed"] == b.metadata["training"]["model"]["seed"]
        for x, y in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12)
    # both members resumed from their checkpoints (at the last step) write the same models again
    for k in range(2):
        (tmp_path / "vmap" / f"m.{k:03d}.h5").unlink()
    r = runner.invoke(app, ["train", str(tmp_path / "tiny.toml"), "--data", str(tmp_path / "train.h5"), "--steps", "6",
                            "-o", str(tmp_path / "vmap" / "m.h5"), "--ensemble", "2", "--json",
                            "--restart", str(tmp_path / "vmap" / "checkpoint.h5")])
    assert r.exit_code == 0, r.output
    for k in range(2):
        again = load_model(tmp_path / "vmap" / f"m.{k:03d}.h5")
        for x, y in zip(jax.tree_util.tree_leaves(again.params), jax.tree_util.tree_leaves(models["vmap"][k].params)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
