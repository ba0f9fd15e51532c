"""Describe any file of the chain: dataset, model or trajectory (H5MD or a LAMMPS dump)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import typer
from rich.console import Console

from cathodeml.commands.options import AsJson
from cathodeml.errors import CathodemlError

# kind → (module, function) of the describer: imported only when asked for, so `info` on a dataset
# does not load JAX.
DESCRIBERS = {
    "dataset": ("cathodeml.commands.describe", "describe_dataset"),
    "model": ("cathodeml.commands.describe_model", "describe_model"),
    "trajectory": ("cathodeml.commands.describe_trajectory", "describe_trajectory"),
    "checkpoint": ("cathodeml.commands.train", "describe_checkpoint"),
}


def _describer(kind: str):
    if kind not in DESCRIBERS:
        raise CathodemlError(f"no describer for files of kind {kind!r}")
    module, name = DESCRIBERS[kind]
    return getattr(importlib.import_module(module), name)


def info(
    path: Path = typer.Argument(..., help="A dataset (.h5 or deepmd/npy folder), model (model.h5 or .dp) or trajectory."),
    as_json: AsJson = False,
) -> None:
    """Describe a cathodeml file: systems, frames, type map, moments; model architecture; trajectory."""
    from cathodeml.io.dataset import file_kind

    if not path.exists():
        raise CathodemlError(f"{path}: no such file or directory")
    kind = "dataset" if path.is_dir() else file_kind(path)
    if kind is None:
        from cathodeml.io.lammps import is_lammps_dump

        kind = "trajectory" if is_lammps_dump(path) else None
    if kind is None:
        raise CathodemlError(f"{path}: not a cathodeml dataset, model or trajectory")
    summary, render = _describer(kind)(path)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=float))
    else:
        render(Console())
