"""Describe any file of the chain: dataset, model or trajectory."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from cathodeml.commands.options import AsJson
from cathodeml.errors import CathodemlError

# kind → function(path) -> dict summary; each part of the chain adds its describer here.
DESCRIBERS: dict = {}


def _describer(kind: str):
    if kind not in DESCRIBERS:
        if kind == "dataset":
            from cathodeml.commands.describe import describe_dataset as fn
        elif kind == "model":
            from cathodeml.commands.describe_model import describe_model as fn
        elif kind == "trajectory":
            from cathodeml.commands.describe_trajectory import describe_trajectory as fn
        elif kind == "checkpoint":
            from cathodeml.commands.train import describe_checkpoint as fn
        else:
            raise CathodemlError(f"no describer for files of kind {kind!r}")
        DESCRIBERS[kind] = fn
    return DESCRIBERS[kind]


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
        raise CathodemlError(f"{path}: not a cathodeml dataset, model or trajectory")
    summary, render = _describer(kind)(path)
    if as_json:
        typer.echo(json.dumps(summary, indent=2, default=float))
    else:
        render(Console())
