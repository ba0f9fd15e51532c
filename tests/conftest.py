"""Shared test fixtures. JAX runs in float64 for every test."""

import os
from pathlib import Path

os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture
def data_dir() -> Path:
    """tests/data: small real inputs checked into the repo."""
    return DATA


SPIN_CASE_TYPES = ("Li", "Mn", "O")


@pytest.fixture
def spin_case(data_dir):
    """A random tiny Li–Mn–O spin model and a rattled 2×1×1 LiMnO2 cell with one antiparallel Mn:
    (model, positions Å, cell Å, types, moments μB, the model's VirtualSites of the cell)."""
    import jax
    import numpy as np

    from cathodeml import spin
    from cathodeml.io.structure import read_structure, supercell
    from cathodeml.model import Model, ModelConfig, default_stats, init_params

    config = ModelConfig(type_map=SPIN_CASE_TYPES + ("Mn_spin",), sel=(16, 16, 32, 16), rcut=4.5, rcut_smth=1.0,
                         embedding_neurons=(4, 8), axis_neuron=2, fitting_neurons=(8, 8))
    stats = default_stats(config)
    stats["dstd"] *= 2.0
    params = init_params(config, jax.random.PRNGKey(5))
    for net in params["fitting"]:
        net[-1]["w"] = np.asarray(net[-1]["w"]) * 30.0
    model = Model(config, params, stats, spin=spin.SpinSettings.create(["Mn"], eta=0.3, d=0.2).to_dict())
    s = supercell(read_structure(data_dir / "structures" / "LiMnO2_mp-18767.cif"), (2, 1, 1))
    rng = np.random.default_rng(3)
    positions = s.positions + rng.normal(scale=0.05, size=s.positions.shape)
    types = np.array([SPIN_CASE_TYPES.index(x) for x in s.symbols])
    moments = np.where(types == 1, 3.8, 0.0)
    moments[np.flatnonzero(types == 1)[1]] = -3.6
    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    return model, positions, np.asarray(s.cell), types, moments, sites
