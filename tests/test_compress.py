"""Tabulated (compressed) embedding nets against DeePMD-kit's own compressed models.

The fixture tests/data/deepmd/reference/compressed.npz (benchmarks/make_compressed_reference.py) holds,
for both reference models and two table strides, the grids DeePMD-kit's `dp --pt compress` built and
the energies and forces its compressed model gives on the reference cases.  The coarse stride (0.2)
makes the tables differ from the nets by ~1e-9 relative, so agreeing with DeePMD-kit there checks
the tables themselves.  DeePMD-kit is not needed to run these tests.
"""

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cathodeml.errors import CathodemlError
from cathodeml.model import build_neighbor_list, evaluate, import_deepmd, load_model, save_model
from cathodeml.model.compress import compress_model, min_neighbor_distance, tabulated_embedding, uncompress_model
from cathodeml.model.nn import embedding_net

REF = "deepmd/reference"
MODELS = ["se_e2_a_tos_true", "se_e2_a_tos_false"]
CASES = ["water", "triclinic", "cluster"]


@lru_cache(maxsize=None)
def _fixture(data_dir):
    return dict(np.load(data_dir / REF / "compressed.npz")), dict(np.load(data_dir / REF / "reference.npz"))


@lru_cache(maxsize=None)
def _compressed(data_dir, name, stride):
    tables, _ = _fixture(data_dir)
    model = import_deepmd(data_dir / REF / f"{name}.dp")
    return model, compress_model(model, float(tables[f"{name}/s{stride}/min_nbor_dist"]), stride=stride)


def _case(data_dir, name, case):
    _, ref = _fixture(data_dir)
    cell = ref[f"{name}/{case}/cell"] if bool(ref[f"{name}/{case}/periodic"]) else None
    return ref[f"{name}/{case}/coord"], cell, ref[f"{name}/{case}/types"]


def _evaluate(model, coord, cell, types):
    nbr = build_neighbor_list(coord, cell, types, model.config.rcut, model.config.ntypes)
    return evaluate(model.config, model.params, model.stats, coord, cell, nbr)


@pytest.mark.parametrize("stride", [0.01, 0.2])
@pytest.mark.parametrize("name", MODELS)
def test_tables_have_deepmd_kits_ranges_and_strides(data_dir, name, stride):
    tables, _ = _fixture(data_dir)
    _, compressed = _compressed(data_dir, name, stride)
    np.testing.assert_allclose(np.array(compressed.config.tables), tables[f"{name}/s{stride}/compress_info"][:, :5],
                               rtol=1e-15)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("stride", [0.01, 0.2])
@pytest.mark.parametrize("name", MODELS)
def test_compressed_energy_and_forces_match_deepmd_kits_compressed_model(data_dir, name, stride, case):
    tables, _ = _fixture(data_dir)
    _, compressed = _compressed(data_dir, name, stride)
    out = _evaluate(compressed, *_case(data_dir, name, case))
    e_ref, f_ref = tables[f"{name}/s{stride}/{case}/energy"], tables[f"{name}/s{stride}/{case}/force"]
    assert abs(float(out["energy"]) - e_ref) / abs(e_ref) < 1e-12
    assert np.max(np.abs(np.asarray(out["forces"]) - f_ref)) / np.max(np.abs(f_ref)) < 1e-10


def test_coarse_tables_differ_from_the_nets_by_their_interpolation_error(data_dir):
    """The coarse-stride fixture is not the uncompressed model in disguise: the energies differ by
    more than the 1e-12 the parity test allows, and by less than a tabulation error should be."""
    tables, _ = _fixture(data_dir)
    model, compressed = _compressed(data_dir, "se_e2_a_tos_false", 0.2)
    exact = float(_evaluate(model, *_case(data_dir, "se_e2_a_tos_false", "triclinic"))["energy"])
    tabulated = float(tables["se_e2_a_tos_false/s0.2/triclinic/energy"])
    assert 1e-12 < abs(exact - tabulated) / abs(exact) < 1e-6


def test_table_reproduces_the_net_value_and_slope_at_the_knots(data_dir):
    """A quintic Hermite table takes G and G' (and G'') of the net at every knot; in between it is
    close to G (error ~h⁶ G⁽⁶⁾).  Slopes by reverse mode, the way md differentiates the table."""
    model, compressed = _compressed(data_dir, "se_e2_a_tos_true", 0.2)
    net, table, grid = model.params["embedding"][1], compressed.stats["tables"][1], compressed.config.tables[1]
    lower, upper, top, stride0, stride1 = grid
    knots = np.concatenate([lower + stride0 * np.arange(int((upper - lower) / stride0)),
                            upper + stride1 * np.arange(int((top - upper) / stride1) - 1)])
    knots = knots[1:]  # away from the first knot's one-sided neighbourhood

    def g(x):
        return embedding_net(net, x.reshape(1, 1), "tanh")[0]

    def t(x):
        return tabulated_embedding(table, grid, x.reshape(1, 1))[0]

    for f_net, f_tab in [(g, t), (jax.jacrev(g), jax.jacrev(t))]:
        for x in knots[::7]:
            np.testing.assert_allclose(f_tab(jnp.asarray(x)), f_net(jnp.asarray(x)), rtol=1e-7, atol=1e-9)
    mid = knots[:-1] + 0.37 * np.diff(knots)
    gap = max(float(np.max(np.abs(t(jnp.asarray(x)) - g(jnp.asarray(x))))) for x in mid[::5])
    assert gap < 1e-5


def test_compressed_forces_are_minus_the_energy_gradient(data_dir):
    from cathodeml.model import energy

    _, compressed = _compressed(data_dir, "se_e2_a_tos_false", 0.2)
    coord, cell, types = _case(data_dir, "se_e2_a_tos_false", "cluster")
    out = _evaluate(compressed, coord, cell, types)
    nbr = build_neighbor_list(coord, cell, types, compressed.config.rcut, compressed.config.ntypes, skin=0.5)
    c = compressed

    def e(x):
        return float(energy(c.config, c.params, c.stats, x, cell, nbr))

    h = 1e-5
    for atom, axis in [(0, 0), (7, 2), (19, 1)]:
        step = np.zeros_like(coord)
        step[atom, axis] = h
        fd = -(e(coord + step) - e(coord - step)) / (2 * h)
        assert abs(fd - float(out["forces"][atom, axis])) < 1e-7


def test_compressed_model_round_trips_through_model_h5_and_back_to_the_net(data_dir, tmp_path):
    model, compressed = _compressed(data_dir, "se_e2_a_tos_true", 0.01)
    save_model(tmp_path / "c.h5", compressed)
    again = load_model(tmp_path / "c.h5")
    assert again.config == compressed.config
    assert all(np.array_equal(a, b) for a, b in zip(again.stats["tables"], compressed.stats["tables"]))
    assert again.metadata["compression"]["stride"] == 0.01
    plain = uncompress_model(again)
    assert plain.config == model.config and "tables" not in plain.stats
    with pytest.raises(CathodemlError, match="already compressed"):
        compress_model(compressed, 1.0)


def test_min_neighbor_distance_is_the_shortest_pair_with_periodic_images():
    rng = np.random.default_rng(0)
    cell = np.diag([5.0, 6.0, 7.0])
    pos = rng.uniform(0, 1, (2, 12, 3)) @ cell
    shifts = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)]) @ cell
    brute = min(np.linalg.norm(p[:, None, None] + shifts[None, None] - p[None, :, None], axis=-1)[
        ~np.eye(12, dtype=bool)[:, :, None].repeat(27, 2) | np.any(shifts != 0, axis=1)[None, None]].min()
        for p in pos)
    assert min_neighbor_distance([(pos, np.repeat(cell[None], 2, 0), np.zeros(12, int))]) == pytest.approx(brute,
                                                                                                       rel=1e-12)
    cluster = np.array([[[0.0, 0, 0], [0, 0, 30.0]]])  # far apart, no cell: still found
    assert min_neighbor_distance([(cluster, None, np.zeros(2, int))]) == pytest.approx(30.0)


def test_compress_command_writes_a_model_every_command_reads_and_exports_the_exact_nets(data_dir, tmp_path):
    from typer.testing import CliRunner

    from cathodeml.cli import app
    from cathodeml.model import export_deepmd  # noqa: F401

    src = data_dir / REF / "se_e2_a_tos_true.dp"
    out = tmp_path / "c.h5"
    runner = CliRunner()
    res = runner.invoke(app, ["compress", str(src), "-o", str(out), "--min-distance", "0.892451513761333", "--json"])
    assert res.exit_code == 0, res.output
    tables, _ = _fixture(data_dir)
    model = load_model(out)
    np.testing.assert_allclose(np.array(model.config.tables), tables["se_e2_a_tos_true/s0.01/compress_info"][:, :5])
    coord, cell, types = _case(data_dir, "se_e2_a_tos_true", "cluster")
    e = float(_evaluate(model, coord, cell, types)["energy"])
    assert abs(e - tables["se_e2_a_tos_true/s0.01/cluster/energy"]) / abs(e) < 1e-12
    res = runner.invoke(app, ["export", str(out), "-o", str(tmp_path / "back.dp"), "--quiet"])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "back.dp").config == import_deepmd(src).config
    res = runner.invoke(app, ["compress", str(src), "-o", str(tmp_path / "x.h5")])  # a .dp records no distance
    assert res.exit_code != 0 and "--data" in res.output and not (tmp_path / "x.h5").exists()


def _xla_embed_contract(table, grid, env):
    from cathodeml.model.descriptor import _embed_block

    return _embed_block(partial(tabulated_embedding, table, grid), env)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_cpu_kernel_gives_the_xla_tables_values_and_gradients(data_dir, dtype):
    """table_kernel (numba, CPU) against the XLA evaluation of the same table: T = Σ G(s)ᵀR̃ and its
    VJP, for inputs below, inside (both strides) and beyond the table, unbatched and under vmap
    with one table for all frames or one table per member (an ensemble)."""
    from cathodeml.model import table_kernel

    _, compressed = _compressed(data_dir, "se_e2_a_tos_true", 0.2)
    grid = compressed.config.tables[1]
    lower, upper, top = grid[:3]
    table = jnp.asarray(compressed.stats["tables"][1], dtype)
    rng = np.random.default_rng(7)
    env = rng.normal(size=(3, 5, 23, 4))
    env[..., 0] = rng.uniform(lower - 1.0, top + 2.0, size=env.shape[:-1])
    env[0, 0, :4, 0] = [lower, upper, top, upper - 1e-9]  # knots and the ends exactly
    env = jnp.asarray(env, dtype)
    ct = jnp.asarray(rng.normal(size=(3, 5, table.shape[-1], 4)), dtype)
    rtol = 1e-12 if dtype == np.float64 else 1e-4

    def loss(f, t):
        return lambda e: jnp.sum(f(t, grid, e) * ct[0])

    for f in (table_kernel.embed_contract, _xla_embed_contract):
        assert f(table, grid, env[0]).dtype == dtype
    np.testing.assert_allclose(table_kernel.embed_contract(table, grid, env[0]),
                               _xla_embed_contract(table, grid, env[0]), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(jax.grad(loss(table_kernel.embed_contract, table))(env[0]),
                               jax.grad(loss(_xla_embed_contract, table))(env[0]), rtol=rtol, atol=rtol)

    members = jnp.stack([table, 1.5 * table, table[::-1]])  # one table per vmapped member
    for tables, axis in [(table, None), (members, 0)]:
        def batched(f, tables=tables, axis=axis):
            def one(t, e, c):
                value, vjp = jax.vjp(lambda e: f(t, grid, e), e)
                return value, vjp(c)[0]
            return jax.jit(jax.vmap(one, in_axes=(axis, 0, 0)))(tables, env, ct)

        for fused, xla in zip(batched(table_kernel.embed_contract), batched(_xla_embed_contract)):
            np.testing.assert_allclose(fused, xla, rtol=rtol, atol=rtol)


def test_compressed_md_energy_and_forces_are_the_same_with_the_fused_kernel_and_xla(data_dir, monkeypatch):
    """The chunked MD energy of a compressed model (skin list, several chunks) with the fused kernel
    against the XLA table path."""
    from cathodeml.model import table_kernel
    from cathodeml.model.potential import chunked_energy

    _, compressed = _compressed(data_dir, "se_e2_a_tos_false", 0.01)
    coord, cell, types = _case(data_dir, "se_e2_a_tos_false", "water")
    c = compressed
    nbr = build_neighbor_list(coord, cell, types, c.config.rcut, c.config.ntypes, skin=1.0)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(table_kernel, "available", lambda fused=fused: fused)
        e = chunked_energy(c.config, c.params, c.stats, chunk=5)
        results.append(jax.jit(jax.value_and_grad(e))(jnp.asarray(coord), cell, nbr))
    (e_fused, g_fused), (e_xla, g_xla) = results
    assert abs(float(e_fused) - float(e_xla)) < 1e-12 * abs(float(e_xla))
    np.testing.assert_allclose(g_fused, g_xla, rtol=0, atol=1e-12)
