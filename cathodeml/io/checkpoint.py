"""Checkpoint files of `train` and `md`: nested dicts of arrays saved by name, plus a JSON record.

Why by name.  A checkpoint used to store parameters by their position in a flattened pytree
("00000", "00001", ...), so only the code that wrote it could say which array was which.  Here
every array is an HDF5 dataset whose path is its place in the nested structure the trainer
hands over (e.g. params/embedding/0/1/w, opt_state/inner_state/0/mu/fitting/2/b), so h5py alone
can read a file and a person can find a weight in it.  This module knows files, not models: it
takes and returns plain nested dicts of numpy arrays (lists appear as groups "0", "1", ...) and
never imports model/ or train/.  How any JAX pytree becomes such a dict and back (`named_arrays`,
`from_named`, and `from_leaf_positions` for the older layout) is written here too, so the naming
of a file's arrays has one place; the trainer only says which pytrees to store.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import jax
import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.io.atomic import atomic_output

CHECKPOINT_KIND = "checkpoint"  # `cathodeml train`
MD_CHECKPOINT_KIND = "md-checkpoint"  # `cathodeml md`
_WRITTEN_BY = {CHECKPOINT_KIND: "the checkpoint.h5 written by `cathodeml train`",
               MD_CHECKPOINT_KIND: "the traj.h5.ckpt written by `cathodeml md`"}
# "by-name": arrays at their structure's path; files without it are the older leaf-position layout.
LAYOUT = "by-name"


def write_checkpoint(path: str | os.PathLike, trees: dict, meta: dict, kind: str = CHECKPOINT_KIND) -> None:
    """Atomically write `trees` (a dict of arrays and nested dicts/lists/tuples of arrays, any
    units; each array becomes the dataset at its key path, top-level arrays at the file's root)
    and the JSON-serialisable `meta` (step, configs, sampler state, data fingerprint) as the file's
    "cathodeml" attribute, marked with `kind` (CHECKPOINT_KIND or MD_CHECKPOINT_KIND)."""
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["cathodeml"] = json.dumps({"kind": kind, "layout": LAYOUT, **meta})
            _write_group(f, trees)


def _write_group(group: h5py.Group, tree) -> None:
    items = tree.items() if isinstance(tree, dict) else enumerate(tree)
    for key, value in items:
        key = str(key)
        if "/" in key or key in ("", ".", ".."):
            raise ValueError(f"checkpoint key {key!r} cannot be an HDF5 name")  # a bug, not user input
        if isinstance(value, (dict, list, tuple)):
            _write_group(group.create_group(key), value)
        else:
            group.create_dataset(key, data=np.asarray(value))


def read_checkpoint(path: str | os.PathLike, kind: str = CHECKPOINT_KIND) -> tuple[dict, dict]:
    """(trees, meta) from a file written by `write_checkpoint` with this `kind`: trees is the
    nested dict of numpy arrays (list items keyed "0", "1", ...); meta is the JSON record, with
    "layout" absent for a file of the older leaf-position layout."""
    path = Path(path)
    if not path.exists():
        run = "run without --restart first" if kind == MD_CHECKPOINT_KIND else "check the path"
        raise CathodemlError(f"{path}: no checkpoint to restart from; {run}")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise InputFormatError(f"{path}: not a cathodeml checkpoint (cannot open as HDF5)") from None
    with f:
        try:
            meta = json.loads(f.attrs.get("cathodeml", "{}"))
        except json.JSONDecodeError:
            meta = {}
        if meta.get("kind") != kind:
            raise InputFormatError(f"{path}: not a cathodeml checkpoint of this kind (kind {meta.get('kind')!r}); "
                                   f"give {_WRITTEN_BY[kind]}")
        trees = _read_group(f)
    return trees, meta


def _read_group(group: h5py.Group) -> dict:
    return {key: _read_group(item) if isinstance(item, h5py.Group) else item[()] for key, item in group.items()}


def _key_name(key) -> str:
    """The name of one pytree key (dict key, list index, NamedTuple field) as an HDF5 name."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise TypeError(f"unsupported pytree key {key!r}")


def named_arrays(tree) -> dict:
    """A pytree as nested dicts of numpy arrays keyed by its dict keys, list indices ("0", ...)
    and NamedTuple fields: what `write_checkpoint` stores by name."""
    out: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        *parents, last = [_key_name(k) for k in path]
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = np.asarray(leaf)
    return out


def from_named(template, named: dict):
    """`template`'s pytree with every leaf read from `named` (see `named_arrays`) at its path;
    KeyError for a missing array, ValueError for a shape that differs from the template's."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in paths:
        node = named
        for key in path:
            node = node[_key_name(key)]
        if np.shape(node) != np.shape(like):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shape {np.shape(node)}, expected {np.shape(like)}")
        leaves.append(np.asarray(node))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def from_leaf_positions(template, group: dict):
    """`template`'s pytree from arrays named by leaf position ("00000", ...): older checkpoints."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = [group[f"{i:05d}"] for i in range(len(group))]
    if len(stored) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(stored, leaves)):
        raise ValueError("leaf count or shapes differ from the template's")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(a) for a in stored])
