"""Symmetries, smoothness and the neighbour machinery of the se_e2_a model.

Uses the small DeePMD-kit reference model (type_one_side false, non-trivial davg/dstd) so every
net of the pair-specific embedding is exercised; checks are against exact symmetry, brute-force
image enumeration, finite differences and an independent numpy environment matrix.
"""

import itertools
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cathodeml.errors import CathodemlError
from cathodeml.model import (
    ModelConfig,
    build_neighbor_list,
    build_neighbor_lists,
    default_stats,
    descriptor_stats,
    energy,
    evaluate,
    fit_type_bias,
    import_deepmd,
    init_params,
    needs_rebuild,
)


@lru_cache(maxsize=None)
def _model(data_dir):
    return import_deepmd(data_dir / "deepmd/reference/se_e2_a_tos_false.dp")


@lru_cache(maxsize=None)
def _triclinic(data_dir):
    ref = np.load(data_dir / "deepmd/reference/reference.npz")
    p = "se_e2_a_tos_false/triclinic/"
    return ref[p + "coord"], ref[p + "cell"], ref[p + "types"]


def _eval(m, pos, cell, types, **kw):
    nbr = build_neighbor_list(pos, cell, types, m.config.rcut, m.config.ntypes, **kw)
    return evaluate(m.config, m.params, m.stats, pos, cell, nbr)


def _rotation(seed):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def test_energy_is_invariant_and_forces_rotate_under_rigid_motion(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    base = _eval(m, pos, cell, types)
    rot = _rotation(1)
    moved = _eval(m, pos @ rot.T + np.array([0.3, -1.7, 2.2]), cell @ rot.T, types)
    assert abs(moved["energy"] - base["energy"]) < 1e-11 * abs(base["energy"])
    np.testing.assert_allclose(moved["forces"], np.asarray(base["forces"]) @ rot.T, atol=1e-12)
    np.testing.assert_allclose(moved["virial"], rot @ np.asarray(base["virial"]) @ rot.T, atol=1e-11)


def test_energy_is_invariant_under_permutation_of_atoms(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    base = _eval(m, pos, cell, types)
    perm = np.random.default_rng(2).permutation(len(types))
    permuted = _eval(m, pos[perm], cell, types[perm])
    assert abs(permuted["energy"] - base["energy"]) < 1e-11 * abs(base["energy"])
    np.testing.assert_allclose(permuted["forces"], np.asarray(base["forces"])[perm], atol=1e-12)
    np.testing.assert_allclose(permuted["atomic_energies"], np.asarray(base["atomic_energies"])[perm], atol=1e-11)


def test_periodic_energy_is_invariant_under_lattice_translation_of_an_atom(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    base = _eval(m, pos, cell, types)
    shifted = pos.copy()
    shifted[2] += cell[0] - 2 * cell[2]
    assert abs(_eval(m, shifted, cell, types)["energy"] - base["energy"]) < 1e-11 * abs(base["energy"])


def test_supercell_energy_is_extensive(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    base = _eval(m, pos, cell, types)
    images = [np.array(n) @ cell for n in itertools.product(range(2), range(1), range(2))]
    big = _eval(m, np.concatenate([pos + s for s in images]), cell * np.array([[2], [1], [2]]),
                np.tile(types, len(images)))
    assert abs(big["energy"] - 4 * base["energy"]) < 1e-10 * abs(big["energy"])


def test_energy_and_force_go_smoothly_to_zero_at_rcut(data_dir):
    """A free dimer: the pair term vanishes continuously (with its derivative) as r → rcut."""
    m = _model(data_dir)
    rc = m.config.rcut
    types = np.array([0, 1])

    def pair(r):
        far = _eval(m, np.array([[0.0, 0, 0], [rc + 3.0, 0, 0]]), None, types, capacity=(1, 1))
        out = _eval(m, np.array([[0.0, 0, 0], [r, 0, 0]]), None, types, capacity=(1, 1))
        return float(out["energy"] - far["energy"]), float(out["forces"][1, 0])

    inside = [pair(rc - d) for d in (1e-2, 1e-3)]
    assert abs(pair(rc + 1e-3)[0]) == 0.0
    # w(r) ~ (rcut − r)³ near the cutoff: energy O(δ³), force O(δ²)
    assert abs(inside[1][0]) < 1e-6 and abs(inside[1][0]) < abs(inside[0][0]) / 100
    assert abs(inside[1][1]) < 1e-4 and abs(inside[1][1]) < abs(inside[0][1]) / 30


def _brute_force_pairs(pos, cell, cutoff):
    pairs = set()
    for i, j in itertools.product(range(len(pos)), repeat=2):
        for n in itertools.product(range(-4, 5), repeat=3):
            if i == j and not any(n):
                continue
            if np.linalg.norm(pos[j] + np.array(n) @ cell - pos[i]) < cutoff:
                pairs.add((i, j, n))
    return pairs


def test_neighbour_list_finds_every_periodic_image_in_a_narrow_triclinic_cell(data_dir):
    pos, cell, types = _triclinic(data_dir)
    nbr = build_neighbor_list(pos, cell, types, 4.0, 2, skin=0.5)
    found = {(i, int(j), tuple(int(v) for v in nbr.shift[i, c]))
             for i in range(len(pos)) for c, j in enumerate(nbr.index[i]) if j >= 0}
    assert found == _brute_force_pairs(pos, cell, 4.5)
    pair_counts = {}
    for i, j, _ in found:
        pair_counts[(i, j)] = pair_counts.get((i, j), 0) + 1
    assert max(pair_counts.values()) > 1  # several images of one neighbour inside the cutoff


def test_capacity_grows_instead_of_truncating(data_dir):
    pos, cell, types = _triclinic(data_dir)
    nbr = build_neighbor_list(pos, cell, types, 4.0, 2, capacity=(1, 1))
    exact = build_neighbor_list(pos, cell, types, 4.0, 2)
    assert nbr.capacity == exact.capacity and nbr.capacity[0] > 1
    kept = build_neighbor_list(pos, cell, types, 4.0, 2, capacity=(50, 50))
    assert kept.capacity == (50, 50)


def test_skin_list_stays_valid_until_an_atom_moves_half_the_skin(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    nbr = build_neighbor_list(pos, cell, types, m.config.rcut, m.config.ntypes, skin=0.6)
    step = np.zeros_like(pos)
    step[0] = [0.25, 0.1, 0.0]
    assert not bool(needs_rebuild(nbr, pos + step))
    stale = evaluate(m.config, m.params, m.stats, pos + step, cell, nbr)
    fresh = _eval(m, pos + step, cell, types)
    assert abs(stale["energy"] - fresh["energy"]) < 1e-12 * abs(fresh["energy"])
    np.testing.assert_allclose(stale["forces"], fresh["forces"], atol=1e-12)
    step[0] = [0.31, 0.0, 0.0]
    assert bool(needs_rebuild(nbr, pos + step))


def test_bad_structures_are_refused_with_a_message():
    with pytest.raises(CathodemlError, match="singular"):
        build_neighbor_list(np.zeros((2, 3)), np.diag([1.0, 1.0, 0.0]), [0, 0], 3.0, 1)
    with pytest.raises(CathodemlError, match="type"):
        build_neighbor_list(np.zeros((2, 3)), None, [0, 3], 3.0, 2)
    with pytest.raises(CathodemlError, match="NaN"):
        build_neighbor_list(np.full((2, 3), np.nan), None, [0, 0], 3.0, 1)
    with pytest.raises(CathodemlError, match="sel"):
        ModelConfig(type_map=("O", "H"), sel=(4,))


def _numpy_environment(pos, cell, types, rcut, rcut_smth, sel):
    """Independent env matrix: brute-force images, Σsel nearest overall, then sel[t] per type."""
    rows = np.zeros((len(pos), sum(sel), 4))
    for i in range(len(pos)):
        cands = []
        for j in range(len(pos)):
            for n in itertools.product(range(-3, 4), repeat=3):
                if i == j and not any(n):
                    continue
                d = pos[j] + np.array(n) @ cell - pos[i]
                r = np.linalg.norm(d)
                if r < rcut:
                    cands.append((r, types[j], d))
        cands = sorted(cands, key=lambda c: c[0])[: sum(sel)]
        offset = 0
        for t, s in enumerate(sel):
            mine = [c for c in cands if c[1] == t][:s]
            for k, (r, _, d) in enumerate(mine):
                u = np.clip((r - rcut_smth) / (rcut - rcut_smth), 0, 1)
                w = u ** 3 * (-6 * u ** 2 + 15 * u - 10) + 1
                rows[i, offset + k] = w * np.array([1 / r, *(d / r ** 2)])
            offset += s
    return rows


def test_descriptor_statistics_follow_deepmd_kit_definition(data_dir):
    pos, cell, types = _triclinic(data_dir)
    config = ModelConfig(type_map=("O", "H"), sel=(3, 5), rcut=4.0, rcut_smth=2.0, embedding_neurons=(4, 8),
                         axis_neuron=2, fitting_neurons=(8,))
    rng = np.random.default_rng(3)
    frames = pos[None] + 0.05 * rng.normal(size=(3, *pos.shape))
    davg, dstd = descriptor_stats(config, [(frames, np.tile(cell, (3, 1, 1)), types)])
    env = np.stack([_numpy_environment(f, cell, types, 4.0, 2.0, (3, 5)) for f in frames])
    for t in range(2):
        rows = env[:, types == t]
        assert np.allclose(davg[t, :, 0], rows[..., 0].mean()) and np.all(davg[t, :, 1:] == 0)
        assert np.allclose(dstd[t, :, 0], max(rows[..., 0].std(), 1e-2))
        assert np.allclose(dstd[t, :, 1:], max(rows[..., 1:].std(), 1e-2))


def test_type_bias_fit_recovers_per_type_energies():
    counts = np.array([[2, 4], [3, 6], [1, 5], [4, 1]])
    energies = counts @ np.array([-93.5, -187.2])
    np.testing.assert_allclose(fit_type_bias(counts, energies), [-93.5, -187.2], rtol=1e-12)


def test_float32_model_agrees_with_float64_to_single_precision(data_dir):
    m = _model(data_dir)
    pos, cell, types = _triclinic(data_dir)
    f64 = _eval(m, pos, cell, types)
    cfg32 = m.config.replace(precision="float32")
    nbr = build_neighbor_list(pos, cell, types, m.config.rcut, m.config.ntypes)
    f32 = evaluate(cfg32, m.params, m.stats, pos, cell, nbr)
    assert f32["energy"].dtype == jnp.float32 and f32["forces"].dtype == jnp.float32
    assert abs(float(f32["energy"]) - float(f64["energy"])) < 1e-5 * abs(float(f64["energy"]))
    np.testing.assert_allclose(f32["forces"], f64["forces"], atol=1e-4)


def test_vmapped_batch_energy_and_parameter_gradient_match_frame_by_frame(data_dir):
    """What training does: vmap over frames of one system, differentiate w.r.t. the weights."""
    pos, cell, types = _triclinic(data_dir)
    config = ModelConfig(type_map=("O", "H"), sel=(6, 10), rcut=4.0, rcut_smth=2.0, embedding_neurons=(4, 8),
                         axis_neuron=2, fitting_neurons=(8, 8), type_one_side=True)
    params = init_params(config, jax.random.PRNGKey(0))
    stats = default_stats(config)
    frames = pos[None] + 0.05 * np.random.default_rng(4).normal(size=(3, *pos.shape))
    cells = np.tile(cell, (3, 1, 1))
    nbrs = build_neighbor_lists(frames, cells, types, config.rcut, config.ntypes)

    def batch_loss(p):
        e = jax.vmap(lambda r, c, n: energy(config, p, stats, r, c, n))(frames, cells, nbrs)
        return jnp.sum(e ** 2), e

    loss_and_grad = jax.jit(jax.value_and_grad(batch_loss, has_aux=True))
    (loss, batch), grads = loss_and_grad(params)
    single = [float(evaluate(config, params, stats, frames[f], cells[f],
                             build_neighbor_list(frames[f], cells[f], types, config.rcut, config.ntypes,
                                                 capacity=nbrs.capacity))["energy"])
              for f in range(3)]
    np.testing.assert_allclose(batch, single, rtol=1e-13)
    g = grads["fitting"][0][0]["w"]
    h = 1e-6
    bumped = jax.tree_util.tree_map(lambda x: x, params)
    bumped["fitting"][0][0]["w"] = params["fitting"][0][0]["w"].at[0, 0].add(h)
    lower = jax.tree_util.tree_map(lambda x: x, params)
    lower["fitting"][0][0]["w"] = params["fitting"][0][0]["w"].at[0, 0].add(-h)
    fd = (loss_and_grad(bumped)[0][0] - loss_and_grad(lower)[0][0]) / (2 * h)
    assert abs(fd - g[0, 0]) < 1e-6 * max(1.0, abs(fd))


def test_host_forces_include_their_virtual_spin_atoms(data_dir):
    """Virtual atoms are ordinary types; differentiating through their placement moves the force
    on a virtual atom onto its host (F_host_total = F_host + F_virtual for a rigid shift)."""
    pos, cell, types = _triclinic(data_dir)
    config = ModelConfig(type_map=("O", "H", "O_spin"), sel=(6, 10, 4), rcut=4.0, rcut_smth=2.0,
                         embedding_neurons=(4, 8), axis_neuron=2, fitting_neurons=(8,))
    params = init_params(config, jax.random.PRNGKey(1))
    stats = default_stats(config)
    hosts = np.where(types == 0)[0]
    shift = np.array([0.0, 0.0, 0.35])
    full_types = np.concatenate([types, np.full(hosts.size, 2)])

    def full_positions(r):
        return jnp.concatenate([r, r[hosts] + shift])

    nbr = build_neighbor_list(np.asarray(full_positions(jnp.asarray(pos))), cell, full_types, config.rcut,
                              config.ntypes, skin=0.3)
    @jax.jit
    def both(r):
        host = -jax.grad(lambda q: energy(config, params, stats, full_positions(q), cell, nbr))(r)
        every = -jax.grad(lambda q: energy(config, params, stats, q, cell, nbr))(full_positions(r))
        return host, every

    host_forces, all_forces = both(jnp.asarray(pos))
    expected = np.asarray(all_forces[: len(pos)]).copy()
    expected[hosts] += np.asarray(all_forces[len(pos):])
    np.testing.assert_allclose(host_forces, expected, atol=1e-12)


def test_force_loss_gradient_wrt_weights_matches_finite_differences(data_dir):
    """Training differentiates the forces (themselves a gradient) w.r.t. the weights: second order."""
    pos, cell, types = _triclinic(data_dir)
    config = ModelConfig(type_map=("O", "H"), sel=(6, 10), rcut=4.0, rcut_smth=2.0, embedding_neurons=(4, 8),
                         axis_neuron=2, fitting_neurons=(8, 8), type_one_side=False)
    params = init_params(config, jax.random.PRNGKey(3))
    stats = default_stats(config)
    nbr = build_neighbor_list(pos, cell, types, config.rcut, config.ntypes)

    def force_loss(p):
        forces = -jax.grad(lambda r: energy(config, p, stats, r, cell, nbr))(jnp.asarray(pos))
        return jnp.sum(forces ** 2)

    loss_and_grad = jax.jit(jax.value_and_grad(force_loss))
    _, grads = loss_and_grad(params)
    h = 1e-6
    for net, index, layer in (("embedding", 2, 1), ("fitting", 1, 0)):
        def bumped(step, net=net, index=index, layer=layer):
            p = jax.tree_util.tree_map(lambda x: x, params)
            p[net][index][layer]["w"] = params[net][index][layer]["w"].at[0, 1].add(step)
            return p

        fd = (loss_and_grad(bumped(h))[0] - loss_and_grad(bumped(-h))[0]) / (2 * h)
        analytic = grads[net][index][layer]["w"][0, 1]
        assert abs(fd - analytic) < 1e-6 * max(1.0, abs(analytic))


def _numpy_layer(layer, x, residual, act=np.tanh):
    w = np.asarray(layer["w"])
    y = act(x @ w + np.asarray(layer["b"]))
    if "idt" in layer:
        y = y * np.asarray(layer["idt"])
    if residual and w.shape[1] == w.shape[0]:
        y = y + x
    elif residual and w.shape[1] == 2 * w.shape[0]:
        y = y + np.concatenate([x, x], axis=-1)
    return y


def _numpy_atomic_energies(config, params, stats, pos, cell, types):
    """A slow, obvious numpy se_e2_a straight from the definitions (DeePMD-kit dpmodel)."""
    env = _numpy_environment(pos, cell, types, config.rcut, config.rcut_smth, config.sel)
    offsets = np.concatenate([[0], np.cumsum(config.sel)])
    energies = []
    for i, ti in enumerate(types):
        rows = (env[i] - np.asarray(stats["davg"])[ti]) / np.asarray(stats["dstd"])[ti]
        t_mat = np.zeros((config.embedding_neurons[-1], 4))
        for tj in range(config.ntypes):
            block = rows[offsets[tj]:offsets[tj + 1]]
            g = block[:, :1]
            for layer in params["embedding"][ti + tj * config.ntypes if not config.type_one_side else tj]:
                g = _numpy_layer(layer, g, residual=True)
            t_mat += g.T @ block
        t_mat /= config.nnei
        d = (t_mat @ t_mat[: config.axis_neuron].T).reshape(-1)
        net = params["fitting"][ti]
        for layer in net[:-1]:
            d = _numpy_layer(layer, d, residual=True)
        energies.append(_numpy_layer(net[-1], d, residual=False, act=lambda v: v)[0] + stats["type_bias"][ti])
    return np.array(energies)


def test_jitted_energy_matches_a_plain_numpy_implementation_for_three_types(data_dir):
    """Covers what the DeePMD-kit fixtures do not: three types, timestep vectors in the embedding,
    a doubling fitting layer, per-slot davg/dstd, and neighbours truncated by sel."""
    pos, cell, types = _triclinic(data_dir)
    types = np.array([0, 1, 2, 1, 2, 0])
    config = ModelConfig(type_map=("Li", "O", "O_spin"), sel=(2, 3, 2), rcut=4.0, rcut_smth=1.5,
                         embedding_neurons=(4, 8, 8), axis_neuron=3, type_one_side=False, embedding_resnet_dt=True,
                         fitting_neurons=(6, 12), fitting_resnet_dt=False)
    params = init_params(config, jax.random.PRNGKey(7))
    rng = np.random.default_rng(8)
    stats = {"davg": rng.normal(0.1, 0.05, (3, 7, 4)), "dstd": rng.uniform(0.3, 0.8, (3, 7, 4)),
             "type_bias": np.array([-1.0, -2.0, 0.5])}
    nbr = build_neighbor_list(pos, cell, types, config.rcut, config.ntypes)
    assert any(c > s for c, s in zip(nbr.capacity, config.sel))
    ours = evaluate(config, params, stats, pos, cell, nbr)["atomic_energies"]
    np.testing.assert_allclose(ours, _numpy_atomic_energies(config, params, stats, pos, cell, types),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["sel fits, per-type stats", "sel fits, per-slot stats", "sel truncates"])
def test_md_list_with_a_skin_keeps_the_neighbours_deepmd_kit_keeps(data_dir, case):
    """A list built with a skin (as in MD) holds more candidates than slots, and the atoms have moved
    since it was built: the energy must still keep, of the neighbours within rcut now, those DeePMD-kit
    keeps.  The sort-free selection (neighbours packed in list order) is used when sel holds every
    neighbour and the slots of a type are interchangeable; the other cases must fall back to sorting
    by distance.  Checked against the plain numpy implementation, which sorts, and against a list
    built without a skin at the moved positions."""
    from cathodeml.model.descriptor import _kept_slots
    from cathodeml.model.neighbors import count_within_cutoff

    pos, cell, _ = _triclinic(data_dir)
    types = np.array([0, 1, 2, 1, 2, 0])
    rng = np.random.default_rng(3)
    moved = pos + rng.uniform(-0.3, 0.3, pos.shape)
    rcut = 4.0
    counts = count_within_cutoff(build_neighbor_list(moved, cell, types, rcut, 3), moved, cell, rcut).max(axis=0)
    sel = tuple(int(c) for c in (counts if case != "sel truncates" else np.maximum(counts - 2, 1)))
    config = ModelConfig(type_map=("Li", "O", "O_spin"), sel=sel, rcut=rcut, rcut_smth=1.5,
                         embedding_neurons=(4, 8), axis_neuron=3, type_one_side=False, fitting_neurons=(6,))
    params = init_params(config, jax.random.PRNGKey(5))
    stats = default_stats(config)
    off = config.sel_offsets
    for a in range(3):
        for b in range(3):
            if case == "sel fits, per-slot stats":
                stats["davg"][a, off[b]:off[b + 1]] = rng.normal(0.1, 0.05, (off[b + 1] - off[b], 4))
            else:
                stats["davg"][a, off[b]:off[b + 1]] = rng.normal(0.1, 0.05, 4)
            stats["dstd"][a, off[b]:off[b + 1]] = rng.uniform(0.3, 0.8, 4)
    skin_list = build_neighbor_list(pos, cell, types, rcut, 3, skin=2.0)
    assert all(c > s for c, s in zip(skin_list.capacity, sel))
    ours = evaluate(config, params, stats, moved, cell, skin_list)
    expected = _numpy_atomic_energies(config, params, stats, moved, cell, types)
    np.testing.assert_allclose(ours["atomic_energies"], expected, rtol=1e-12, atol=1e-12)
    plain = evaluate(config, params, stats, moved, cell, build_neighbor_list(moved, cell, types, rcut, 3))
    np.testing.assert_allclose(ours["forces"], plain["forces"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["virial"], plain["virial"], rtol=1e-10, atol=1e-12)

    # the packed selection keeps the same neighbours as the sorted one whenever sel holds them all
    idx = np.asarray(skin_list.index)
    disp = moved[np.where(idx >= 0, idx, 0)] + np.asarray(skin_list.shift) @ cell - moved[:, None, :]
    d2 = jnp.asarray(np.where(idx >= 0, np.sum(disp * disp, axis=-1), np.inf))
    packed = _kept_slots(config, skin_list.capacity, d2 < rcut ** 2, d2, jnp.asarray(True))
    nearest = _kept_slots(config, skin_list.capacity, d2 < rcut ** 2, d2, False)
    for (p1, k1), (p2, k2) in zip(packed, nearest):
        kept = [sorted(np.asarray(p)[i][np.asarray(k)[i]]) for p, k in ((p1, k1), (p2, k2)) for i in range(6)]
        if case != "sel truncates":
            assert kept[:6] == kept[6:]
