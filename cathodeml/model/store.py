"""A trained model as one value (`Model`), and its round trips to model.h5 and DeePMD-kit `.dp`.

`load_model` is the one door every command and `cathodeml.load_model` go through: it reads
either format, telling them apart by content, so no command has a format of its own.

The file formats live in cathodeml/io (modelfile.py, deepmd_dp.py) and know nothing about the
physics; this module is the only place that turns their plain dicts into a `ModelConfig` and
pytrees and back, checking shapes so that a damaged or mismatched file fails on load with a
message instead of producing wrong energies later.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.model.config import ModelConfig


@dataclass(frozen=True)
class Model:
    """Everything needed to evaluate a model.

    config   ModelConfig (static)
    params   trainable weights {"embedding": [...], "fitting": [...]} (see potential.init_params)
    stats    {"davg" [nt, Σsel, 4], "dstd" [nt, Σsel, 4] (1/Å), "type_bias" [nt] (eV)}
    spin     SpinSettings.to_dict() of the augmented data it was trained on, or None
    metadata free-form JSON-able dict (training settings, data provenance, ...)
    """

    config: ModelConfig
    params: dict
    stats: dict
    spin: dict | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def type_map(self) -> tuple[str, ...]:
        return self.config.type_map

    def n_parameters(self) -> int:
        """Number of trainable scalars (weights, biases, timesteps)."""
        return int(sum(np.size(x) for x in _leaves(self.params)))


def _leaves(tree):
    if isinstance(tree, dict):
        for k in sorted(tree):
            yield from _leaves(tree[k])
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            yield from _leaves(v)
    else:
        yield tree


def check_shapes(config: ModelConfig, params: dict, stats: dict, source: str = "model") -> None:
    """Raise InputFormatError unless params and stats have the shapes config implies."""
    def fail(what):
        raise InputFormatError(f"{source}: {what} does not match its config; the file is damaged or mixed up")

    emb = params.get("embedding", [])
    fit = params.get("fitting", [])
    if len(emb) != config.n_embedding_nets:
        fail(f"{len(emb)} embedding nets (expected {config.n_embedding_nets})")
    if len(fit) != config.ntypes:
        fail(f"{len(fit)} fitting nets (expected {config.ntypes})")
    for net in emb:
        widths = [1, *config.embedding_neurons]
        if [tuple(np.shape(la["w"])) for la in net] != list(zip(widths[:-1], widths[1:])):
            fail("embedding net layer shapes")
    for net in fit:
        widths = [config.dim_descriptor, *config.fitting_neurons, 1]
        if [tuple(np.shape(la["w"])) for la in net] != list(zip(widths[:-1], widths[1:])):
            fail("fitting net layer shapes")
    for key in ("davg", "dstd"):
        if np.shape(stats.get(key)) != (config.ntypes, config.nnei, 4):
            fail(f"stats {key} shape {np.shape(stats.get(key))}")
    if np.shape(stats.get("type_bias")) != (config.ntypes,):
        fail("type_bias shape")
    if config.tables:
        tables = stats.get("tables") or []
        if len(tables) != len(config.tables) or any(
                np.ndim(t) != 3 or np.shape(t)[1:] != (6, config.embedding_neurons[-1]) for t in tables):
            fail("embedding tables (stats/tables)")
    elif "tables" in stats:
        fail("embedding tables without grids in the config")


def save_model(path: str | os.PathLike, model: Model) -> None:
    """Write `model` to model.h5 (atomically)."""
    from cathodeml.io.modelfile import write_model_file

    write_model_file(path, config=model.config.to_dict(), params=model.params, stats=model.stats,
                     spin=model.spin, metadata=model.metadata)


def load_model(path: str | os.PathLike) -> Model:
    """Read a model from a file: cathodeml's model.h5 or a DeePMD-kit `.dp` (se_e2_a energy model).

    The format is decided by the file's content (its name may be anything); what neither is
    -- a missing file, a dataset, a PyTorch `.pth`, a `.dp` of another descriptor -- is a
    CathodemlError that says what to give instead.  Lengths in the model are Å, energies eV.
    """
    from cathodeml.io.dataset import file_format

    p = Path(path)
    if not p.exists():
        raise CathodemlError(f"{p}: no such model file")
    if p.is_dir():
        raise CathodemlError(f"{p} is a folder; give a model file (model.h5 or a DeePMD-kit .dp)")
    fmt = file_format(p)
    if fmt == ("model", "cathodeml"):
        return _read_model_h5(p)
    if fmt == ("model", "deepmd/dp"):
        return import_deepmd(p)
    if p.suffix in (".pth", ".pb"):
        raise InputFormatError(f"{p}: a DeePMD-kit {p.suffix} model; convert it first with "
                               f"`dp convert-backend {p} {p.with_suffix('.dp')}` and give the .dp file")
    what = f"a {fmt[0]}" if fmt else "not an HDF5 file" if not _is_hdf5(p) else "an HDF5 file of unknown kind"
    raise InputFormatError(f"{p}: {what}, not a model; give a model.h5 (from `cathodeml train`) "
                           "or a DeePMD-kit .dp file")


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _read_model_h5(path: str | os.PathLike) -> Model:
    """Read a model.h5 written by `save_model`."""
    from cathodeml.io.modelfile import read_model_file

    raw = read_model_file(path)
    config = ModelConfig.from_dict(raw["config"])
    params, stats = raw["params"], raw["stats"]
    check_shapes(config, params, stats, str(path))
    return Model(config=config, params=params, stats=stats, spin=raw.get("spin"), metadata=raw.get("metadata") or {})


def import_deepmd(path: str | os.PathLike) -> Model:
    """Read a DeePMD-kit `.dp` se_e2_a energy model (`load_model` reads it too, by content)."""
    from cathodeml.io.deepmd_dp import read_dp
    from cathodeml.model.deepmd_format import from_deepmd, from_deepmd_spin

    tree = read_dp(path)
    spin = None
    try:
        if tree.get("model", {}).get("type") == "spin_ener":
            config, params, stats, spin = from_deepmd_spin(tree)
        else:
            config, params, stats = from_deepmd(tree)
    except InputFormatError:
        raise
    except CathodemlError as exc:  # an unsupported model: say which file
        raise CathodemlError(f"{path}: {exc}") from None
    check_shapes(config, params, stats, str(path))
    meta = {"imported_from": str(path), "deepmd_version": tree.get("version"),
            "model_def_script": tree.get("model_def_script")}
    return Model(config=config, params=params, stats=stats, spin=spin, metadata=meta)


def export_deepmd(path: str | os.PathLike, model: Model) -> None:
    """Write `model` as a DeePMD-kit `.dp` file (atomically): a standard model, or for a spin model
    DeePMD-kit's spin model (`deepmd_format.to_deepmd_spin`; refused, with the reason, for spin
    models whose virtual atoms have energies of their own)."""
    from cathodeml.io.deepmd_dp import write_dp
    from cathodeml.model.compress import uncompress_model
    from cathodeml.model.deepmd_format import to_deepmd, to_deepmd_spin

    model = uncompress_model(model)  # DeePMD-kit gets the exact nets (and compresses them itself)
    if model.spin:
        write_dp(path, to_deepmd_spin(model.config, model.params, model.stats, model.spin))
    else:
        write_dp(path, to_deepmd(model.config, model.params, model.stats))


def parameters_identical(a: Model, b: Model, rtol: float = 0.0) -> bool:
    """True when two models have the same config and params and stats equal to `rtol` (0: bit-identical)."""
    if a.config != b.config:
        return False
    la, lb = list(_leaves(a.params)) + list(_leaves(a.stats)), list(_leaves(b.params)) + list(_leaves(b.stats))
    return len(la) == len(lb) and all(
        np.shape(x) == np.shape(y) and (np.array_equal(x, y) if rtol == 0 else np.allclose(x, y, rtol=rtol, atol=0))
        for x, y in zip(la, lb))
