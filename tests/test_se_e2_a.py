"""se_e2_a energy model against DeePMD-kit 3.2's own numbers, finite differences and symmetry.

The reference (tests/data/deepmd/reference, README there) holds two small DeePMD-kit models
(type_one_side true/false) and DeePMD-kit's energies, forces, virials and atomic energies on a
real water frame with neighbours beyond sel, a triclinic cell narrower than 2·rcut, and a free
cluster.  DeePMD-kit itself is not needed to run these tests.
"""

from functools import lru_cache

import numpy as np
import pytest

from cathodeml.model import build_neighbor_list, evaluate, import_deepmd

REF = "deepmd/reference"
MODELS = ["se_e2_a_tos_true", "se_e2_a_tos_false"]
CASES = ["water", "triclinic", "cluster"]


@lru_cache(maxsize=None)
def _model(data_dir, name):
    return import_deepmd(data_dir / REF / f"{name}.dp")


@lru_cache(maxsize=None)
def _reference(data_dir):
    return dict(np.load(data_dir / REF / "reference.npz"))


def _case(data_dir, name, case):
    ref = _reference(data_dir)
    g = {k: ref[f"{name}/{case}/{k}"] for k in ("coord", "cell", "periodic", "types", "energy", "force", "virial",
                                                 "atom_energy")}
    g["cell"] = g["cell"] if bool(g["periodic"]) else None
    return g


def _relative(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", MODELS)
def test_energy_forces_virial_match_deepmd_kit(data_dir, name, case):
    m = _model(data_dir, name)
    g = _case(data_dir, name, case)
    nbr = build_neighbor_list(g["coord"], g["cell"], g["types"], m.config.rcut, m.config.ntypes)
    out = evaluate(m.config, m.params, m.stats, g["coord"], g["cell"], nbr)
    assert _relative(out["energy"], g["energy"][0]) < 1e-10
    assert _relative(out["atomic_energies"], g["atom_energy"]) < 1e-10
    assert _relative(out["forces"], g["force"]) < 1e-10
    assert _relative(out["virial"], g["virial"]) < 1e-10


def test_water_frame_really_has_more_neighbours_than_sel(data_dir):
    """The water case exercises DeePMD-kit's truncation (Σsel nearest, then sel per type)."""
    from cathodeml.model import count_within_cutoff

    m = _model(data_dir, MODELS[0])
    g = _case(data_dir, MODELS[0], "water")
    nbr = build_neighbor_list(g["coord"], g["cell"], g["types"], m.config.rcut, m.config.ntypes)
    counts = count_within_cutoff(nbr, g["coord"], g["cell"], m.config.rcut)
    assert (counts > np.array(m.config.sel)).any()
    assert (counts.sum(axis=1) > m.config.nnei).any()


def test_neighbour_list_with_skin_gives_the_same_energy(data_dir):
    """Extra candidates between rcut and rcut+skin must not change anything."""
    m = _model(data_dir, MODELS[1])
    g = _case(data_dir, MODELS[1], "water")
    nbr = build_neighbor_list(g["coord"], g["cell"], g["types"], m.config.rcut, m.config.ntypes, skin=1.0,
                              margin=1.3)
    out = evaluate(m.config, m.params, m.stats, g["coord"], g["cell"], nbr)
    assert _relative(out["energy"], g["energy"][0]) < 1e-10
    assert _relative(out["forces"], g["force"]) < 1e-10


def _energy_fn(m, nbr):
    # the jitted evaluate of the parity test, reused (same shapes): no extra compilation
    return lambda pos, cell: float(evaluate(m.config, m.params, m.stats, pos, cell, nbr)["energy"])


@pytest.mark.parametrize("name", MODELS)
def test_forces_are_minus_energy_gradient_by_finite_differences(data_dir, name):
    m = _model(data_dir, name)
    g = _case(data_dir, name, "triclinic")
    nbr = build_neighbor_list(g["coord"], g["cell"], g["types"], m.config.rcut, m.config.ntypes)
    e_fn = _energy_fn(m, nbr)
    out = evaluate(m.config, m.params, m.stats, g["coord"], g["cell"], nbr)
    h = 1e-5
    fd = np.zeros_like(g["coord"])
    for i in range(g["coord"].shape[0]):
        for k in range(3):
            plus, minus = g["coord"].copy(), g["coord"].copy()
            plus[i, k] += h
            minus[i, k] -= h
            fd[i, k] = -(e_fn(plus, g["cell"]) - e_fn(minus, g["cell"])) / (2 * h)
    np.testing.assert_allclose(out["forces"], fd, rtol=0, atol=1e-7)


@pytest.mark.parametrize("name", MODELS)
def test_virial_is_minus_strain_derivative_by_finite_differences(data_dir, name):
    m = _model(data_dir, name)
    g = _case(data_dir, name, "triclinic")
    nbr = build_neighbor_list(g["coord"], g["cell"], g["types"], m.config.rcut, m.config.ntypes)
    e_fn = _energy_fn(m, nbr)
    out = evaluate(m.config, m.params, m.stats, g["coord"], g["cell"], nbr)
    h = 1e-6
    fd = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            eps = np.zeros((3, 3))
            eps[a, b] = h
            plus = e_fn(g["coord"] @ (np.eye(3) + eps), g["cell"] @ (np.eye(3) + eps))
            minus = e_fn(g["coord"] @ (np.eye(3) - eps), g["cell"] @ (np.eye(3) - eps))
            fd[a, b] = -(plus - minus) / (2 * h)
    np.testing.assert_allclose(out["virial"], fd, rtol=0, atol=1e-6)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name", MODELS)
def test_the_train_and_test_path_matches_deepmd_kit(data_dir, name, case):
    # `cathodeml test` and the training step evaluate frames through train.step.predict_batch (vmapped
    # model.energy_forces_virial); DeePMD-kit's numbers must come out of that path too, not only `evaluate`.
    from cathodeml.train.data import LabelledSystem
    from cathodeml.train.evaluate import predict_system

    m = _model(data_dir, name)
    g = _case(data_dir, name, case)
    n = len(g["types"])
    cell = np.zeros((3, 3)) if g["cell"] is None else np.asarray(g["cell"]).reshape(3, 3)
    frames = LabelledSystem(name=case, atom_types=np.asarray(g["types"]), coords=np.asarray(g["coord"]).reshape(1, n, 3),
                            cells=cell[None], energies=np.zeros(1), forces=np.zeros((1, n, 3)),
                            virials=np.zeros((1, 3, 3)), moments=None, nopbc=g["cell"] is None)
    e, f, v = predict_system(m, frames)
    assert _relative(e[0], g["energy"][0]) < 1e-10
    assert _relative(f[0], np.reshape(g["force"], (n, 3))) < 1e-10
    assert _relative(v[0], np.reshape(g["virial"], (3, 3))) < 1e-10
