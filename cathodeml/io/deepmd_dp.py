"""Read and write DeePMD-kit's backend-neutral `.dp` model files.

A `.dp` file (what `dp convert-backend model.pth model.dp` writes, DeePMD-kit ≥ 3) is an HDF5
file whose root attribute "json" holds the serialized model tree; every array of that tree sits
in a root dataset (`/variable_0000`, ...) and the tree refers to it by that path in place of the
array.  This module only turns such a file into the plain nested dict with numpy arrays put back
(and the reverse); what the dict means is `cathodeml.model.deepmd_format`'s business, so the
file format stays separate from the physics.
"""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from cathodeml.errors import InputFormatError
from cathodeml.io.atomic import atomic_output


def read_dp(path: str | os.PathLike) -> dict:
    """The serialized DeePMD-kit tree of a `.dp` file, arrays resolved to numpy arrays."""
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("json")
            if raw is None:
                raise InputFormatError(f"{path}: not a DeePMD-kit .dp model (no 'json' attribute); "
                                       "make one with `dp convert-backend model.pth model.dp`")
            tree = json.loads(raw)
            return _resolve(tree, f, path)
    except OSError as exc:
        raise InputFormatError(f"{path}: cannot be opened as HDF5 ({exc}); give a DeePMD-kit .dp file") from exc


def _resolve(node, f, path):
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "@variables" and isinstance(v, dict):
                out[k] = {name: _dataset(f, ref, path) for name, ref in v.items()}
            else:
                out[k] = _resolve(v, f, path)
        return out
    if isinstance(node, list):
        return [_resolve(v, f, path) for v in node]
    return node


def _dataset(f, ref, path):
    if ref is None:
        return None
    if isinstance(ref, str) and ref.startswith("/"):
        if ref not in f:
            raise InputFormatError(f"{path}: the model tree refers to {ref}, which the file lacks (truncated file?)")
        return np.asarray(f[ref][()])
    return np.asarray(ref)


def write_dp(path: str | os.PathLike, tree: dict) -> None:
    """Write a serialized DeePMD-kit tree (arrays as numpy) as a `.dp` file, atomically."""
    arrays: list[np.ndarray] = []

    def strip(node):
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "@variables" and isinstance(v, dict):
                    refs = {}
                    for name, arr in v.items():
                        if arr is None:
                            refs[name] = None
                        else:
                            refs[name] = f"/variable_{len(arrays):04d}"
                            arrays.append(np.asarray(arr))
                    out[k] = refs
                else:
                    out[k] = strip(v)
            return out
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    stripped = strip(tree)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for n, arr in enumerate(arrays):
                f.create_dataset(f"variable_{n:04d}", data=arr)
            f.attrs["json"] = json.dumps(stripped)
