"""model.h5: one self-contained HDF5 file per trained model.

Layout (format_version 1): the root attribute `cathodeml` is JSON {"kind": "model",
"format_version": 1, "cathodeml_version", "config": {...ModelConfig...}, "spin": {...SpinSettings...}
or null, "metadata": {...}}; groups `/params` and `/stats` mirror the nested dict/list pytrees
of weights and statistics (a list becomes a group with attribute container="list" and children
"0000", "0001", ...; a dict a group with container="dict"; arrays are float64 datasets).  The
JSON header keeps the file readable with h5dump; the tree mirror keeps any future parameter
added to the model storable without a format change.  This module knows nothing about what the
arrays mean (cathodeml.model does): it stores and returns plain dicts, lists and numpy arrays.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from cathodeml import __version__
from cathodeml.errors import InputFormatError
from cathodeml.io.atomic import atomic_output

FORMAT_VERSION = 1


def _write_tree(group: h5py.Group, tree) -> None:
    if isinstance(tree, dict):
        group.attrs["container"] = "dict"
        for key, value in tree.items():
            _write_child(group, str(key), value)
    elif isinstance(tree, (list, tuple)):
        group.attrs["container"] = "list"
        for n, value in enumerate(tree):
            _write_child(group, f"{n:04d}", value)
    else:
        raise TypeError(f"cannot store {type(tree)} as a tree")


def _write_child(group, name, value):
    if isinstance(value, (dict, list, tuple)):
        _write_tree(group.create_group(name), value)
    else:
        group.create_dataset(name, data=np.asarray(value))


def _read_tree(group: h5py.Group):
    kind = group.attrs.get("container", "dict")
    children = {k: (_read_tree(v) if isinstance(v, h5py.Group) else np.asarray(v[()])) for k, v in group.items()}
    if kind == "list":
        return [children[k] for k in sorted(children)]
    return children


def write_model_file(path: str | os.PathLike, *, config: dict, params, stats, spin: dict | None = None,
                     metadata: dict | None = None) -> None:
    """Write model.h5 atomically: config (JSON dict), params and stats (pytrees of arrays), spin settings."""
    header = {"kind": "model", "format_version": FORMAT_VERSION, "cathodeml_version": __version__,
              "config": config, "spin": spin, "metadata": metadata or {}}
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["cathodeml"] = json.dumps(header, default=_json_default)
            _write_tree(f.create_group("params"), _to_numpy(params))
            _write_tree(f.create_group("stats"), _to_numpy(stats))


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj)} is not JSON serialisable")


def _to_numpy(tree):
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_to_numpy(v) for v in tree]
    return np.asarray(tree)


def read_model_file(path: str | os.PathLike) -> dict:
    """{"config", "params", "stats", "spin", "metadata", "format_version", "cathodeml_version"} of a model.h5."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("cathodeml")
            header = json.loads(raw) if raw is not None else {}
            if header.get("kind") != "model":
                raise InputFormatError(f"{path}: not a cathodeml model file (kind {header.get('kind')!r}); "
                                       "give a model.h5 written by `cathodeml train` or `cathodeml import`")
            if header.get("format_version", 0) > FORMAT_VERSION:
                raise InputFormatError(f"{path}: model format {header['format_version']} is newer than this "
                                       f"cathodeml understands ({FORMAT_VERSION}); upgrade cathodeml")
            if "params" not in f or "stats" not in f:
                raise InputFormatError(f"{path}: model file lacks /params or /stats (truncated?)")
            header["params"] = _read_tree(f["params"])
            header["stats"] = _read_tree(f["stats"])
            return header
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot be opened as HDF5 ({exc}); give a model.h5") from exc
