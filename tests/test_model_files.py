"""model.h5 and DeePMD-kit .dp round trips, the export/import/info commands, and the JAX
regression guard for jax-ml/jax#39103."""

import json

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.io.deepmd_dp import read_dp, write_dp
from cathodeml.model import (
    Model,
    ModelConfig,
    build_neighbor_list,
    default_stats,
    evaluate,
    export_deepmd,
    import_deepmd,
    init_params,
    load_model,
    save_model,
)
from cathodeml.model.deepmd_format import from_deepmd
from cathodeml.model.store import parameters_identical

runner = CliRunner()


def _small_model(type_one_side=True, spin=None):
    config = ModelConfig(type_map=("Ni", "O"), sel=(6, 8), rcut=4.5, rcut_smth=1.0,
                         embedding_neurons=(4, 8), axis_neuron=2, fitting_neurons=(8, 8),
                         type_one_side=type_one_side)
    stats = default_stats(config)
    stats["davg"][:, :, 0] = 0.1
    stats["dstd"] *= 0.7
    stats["type_bias"] = np.array([-5.5, -4.9])
    return Model(config, init_params(config, jax.random.PRNGKey(5)), stats, spin=spin, metadata={"note": "test"})


def _structure():
    rng = np.random.default_rng(0)
    cell = np.array([[5.8, 0, 0], [0.4, 5.6, 0], [0.2, 0.3, 6.1]])
    pos = rng.random((12, 3)) @ cell
    types = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    return pos, cell, types


def _energy(model):
    pos, cell, types = _structure()
    nbr = build_neighbor_list(pos, cell, types, model.config.rcut, model.config.ntypes)
    return evaluate(model.config, model.params, model.stats, pos, cell, nbr)


@pytest.mark.parametrize("type_one_side", [True, False])
def test_model_file_round_trip_gives_identical_energies(tmp_path, type_one_side):
    spin = {"mode": "collinear", "eta": {"Ni": 0.3}, "d": {"Ni": 0.1}}
    model = _small_model(type_one_side, spin=spin)
    save_model(tmp_path / "model.h5", model)
    back = load_model(tmp_path / "model.h5")
    assert parameters_identical(model, back)
    assert back.spin == spin and back.metadata == {"note": "test"}
    a, b = _energy(model), _energy(back)
    assert a["energy"] == b["energy"]
    assert np.array_equal(a["forces"], b["forces"])


@pytest.mark.parametrize("type_one_side", [True, False])
def test_deepmd_export_then_import_is_identical(tmp_path, type_one_side):
    model = _small_model(type_one_side)
    export_deepmd(tmp_path / "model.dp", model)
    back = import_deepmd(tmp_path / "model.dp")
    assert parameters_identical(model, back)
    assert _energy(model)["energy"] == _energy(back)["energy"]


def test_exported_tree_has_deepmd_kit_layout_of_the_reference_files(tmp_path, data_dir):
    """Same keys, nesting and array shapes as a file DeePMD-kit 3.2 wrote itself."""
    ref_tree = read_dp(data_dir / "deepmd/reference/se_e2_a_tos_false.dp")
    model = import_deepmd(data_dir / "deepmd/reference/se_e2_a_tos_false.dp")
    export_deepmd(tmp_path / "again.dp", model)
    ours = read_dp(tmp_path / "again.dp")

    def skeleton(node):
        if isinstance(node, dict):
            return {k: skeleton(v) for k, v in node.items() if k not in ("time",)}
        if isinstance(node, list):
            return [skeleton(v) for v in node]
        if isinstance(node, np.ndarray):
            return ("array", node.shape)
        return type(node).__name__

    assert skeleton(ours["model"]) == skeleton(ref_tree["model"])
    # the two energy shifts are folded into bias_atom_e; their sum is unchanged
    ref_fit, our_fit = ref_tree["model"]["fitting"]["@variables"], ours["model"]["fitting"]["@variables"]
    total_ref = ref_fit["bias_atom_e"][:, 0] + ref_tree["model"]["@variables"]["out_bias"][0, :, 0]
    np.testing.assert_allclose(our_fit["bias_atom_e"][:, 0], total_ref, rtol=1e-15)


def test_unsupported_deepmd_models_are_refused(tmp_path, data_dir):
    tree = read_dp(data_dir / "deepmd/reference/se_e2_a_tos_true.dp")
    tree["model"]["descriptor"]["type"] = "dpa1"
    with pytest.raises(CathodemlError, match="descriptor type 'dpa1'"):
        from_deepmd(tree)
    tree = read_dp(data_dir / "deepmd/reference/se_e2_a_tos_true.dp")
    tree["model"]["fitting"]["numb_fparam"] = 2
    write_dp(tmp_path / "fparam.dp", tree)
    result = runner.invoke(app, ["import", str(tmp_path / "fparam.dp"), "-o", str(tmp_path / "m.h5")])
    assert result.exit_code == 1 and "frame/atom parameters" in result.output
    assert not (tmp_path / "m.h5").exists()


def test_damaged_model_file_is_refused(tmp_path):
    save_model(tmp_path / "model.h5", _small_model())
    with h5py.File(tmp_path / "model.h5", "a") as f:
        del f["params/fitting/0001/0001"]
    with pytest.raises(InputFormatError, match="fitting net"):
        load_model(tmp_path / "model.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(InputFormatError):
        load_model(tmp_path / "junk.h5")


def test_import_export_and_info_commands(tmp_path, data_dir):
    src = data_dir / "deepmd/reference/se_e2_a_tos_true.dp"
    r = runner.invoke(app, ["import", str(src), "-o", str(tmp_path / "m.h5"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["round_trip_identical"] is True
    r = runner.invoke(app, ["export", str(tmp_path / "m.h5"), "-o", str(tmp_path / "m.dp"), "--quiet"])
    assert r.exit_code == 0 and r.output == ""
    assert parameters_identical(import_deepmd(src), import_deepmd(tmp_path / "m.dp"))
    r = runner.invoke(app, ["info", str(tmp_path / "m.h5"), "--json"])
    summary = json.loads(r.output)
    assert summary["kind"] == "model" and summary["config"]["sel"] == [10, 20]
    # 2 embedding nets (1·8+8 + 8·16+16 + 16·32+32) + 2 fitting nets (128·32+32 + 2·(32·32+2·32) + 32+1)
    assert summary["n_parameters"] == 2 * (16 + 144 + 544) + 2 * (4128 + 2 * 1088 + 33)
    r = runner.invoke(app, ["export", str(tmp_path / "m.h5"), "-o", str(tmp_path / "m.pth")])
    assert r.exit_code == 1 and ".dp" in r.output


def test_vmapped_matvec_reduction_is_correct_jax_39103():
    """jax/jaxlib 0.10.2 returned wrong sums on CPU for this pattern (jax-ml/jax#39103)."""
    n = 16_385
    i = jnp.arange(n, dtype=jnp.float64)
    x = jnp.stack((i, jnp.zeros_like(i), jnp.zeros_like(i)), axis=1)
    matrix = jnp.eye(3, dtype=jnp.float64)
    jitted = jax.jit(jax.vmap(lambda row: jnp.sum((matrix @ row) ** 2)))(x)
    np.testing.assert_array_equal(np.asarray(jitted), np.arange(n, dtype=np.float64) ** 2)


def test_float32_model_exports_float32_arrays_and_reads_back_to_single_precision(tmp_path):
    import dataclasses

    model = _small_model()
    model = dataclasses.replace(model, config=model.config.replace(precision="float32"))
    export_deepmd(tmp_path / "m32.dp", model)
    with h5py.File(tmp_path / "m32.dp") as f:
        tree = json.loads(f.attrs["json"])
        w_ref = tree["model"]["descriptor"]["embeddings"]["networks"][0]["layers"][0]["@variables"]["w"]
        assert f[w_ref].dtype == np.float32
    back = import_deepmd(tmp_path / "m32.dp")
    assert back.config.precision == "float32"
    assert parameters_identical(model, back, rtol=1e-7) and not parameters_identical(model, back)


def test_an_export_that_does_not_read_back_is_a_bug_and_leaves_no_file(tmp_path, data_dir, monkeypatch):
    import cathodeml.model.store as store

    dp, h5 = data_dir / "deepmd/reference/se_e2_a_tos_true.dp", tmp_path / "m.h5"
    assert runner.invoke(app, ["import", str(dp), "-o", str(h5)]).exit_code == 0
    monkeypatch.setattr(store, "parameters_identical", lambda *a, **k: False)  # a writer/reader mismatch
    for command, source, output in (("export", h5, "m.dp"), ("import", dp, "again.h5")):
        r = runner.invoke(app, [command, str(source), "-o", str(tmp_path / output)])
        assert r.exit_code != 0 and isinstance(r.exception, RuntimeError)  # a traceback, not "error: ..."
        assert not (tmp_path / output).exists() and not list(tmp_path.glob(f".{output}.*"))
