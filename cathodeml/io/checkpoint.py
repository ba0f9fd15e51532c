"""Checkpoint files of `train` and `md`: nested dicts of arrays saved by name, plus a JSON record.

Why by name.  A checkpoint used to store parameters by their position in a flattened pytree
("00000", "00001", ...), so only the code that wrote it could say which array was which.  Here
every array is an HDF5 dataset whose path is its place in the nested structure the trainer
hands over (e.g. params/embedding/0/1/w, opt_state/inner_state/0/mu/fitting/2/b), so h5py alone
can read a file and a person can find a weight in it.  This module knows files, not models: it
takes and returns plain nested dicts of numpy arrays (lists appear as groups "0", "1", ...) and
never imports model/ or train/; the trainer converts its pytrees to and from these dicts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
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
