"""Export a cathodeml model.h5 as a DeePMD-kit `.dp` file (runs in `dp test`, DeepPot, LAMMPS pair_style deepmd
after `dp convert-backend model.dp model.pth`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def export(
    model_path: Path = typer.Argument(..., help="model.h5 written by `cathodeml train` or `cathodeml import` (or a .dp)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .dp file to write."),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Export model.h5 as a DeePMD-kit .dp model (se_e2_a + ener); checks the written file reads back identical."""
    from cathodeml.model.store import export_deepmd, import_deepmd, load_model, parameters_identical  # JAX loads only when the command runs

    if output.suffix != ".dp":
        raise CathodemlError(f"{output}: the output must end in .dp (DeePMD-kit picks the backend by suffix)")
    from cathodeml.io.atomic import atomic_output

    model = load_model(model_path)
    # float32 models are written as float32 arrays: compare to single-precision rounding
    rtol = 1e-7 if model.config.precision == "float32" else 0.0
    with atomic_output(output) as tmp:  # the .dp appears only once it has read back identical
        export_deepmd(tmp, model)
        if not parameters_identical(model, import_deepmd(tmp), rtol=rtol):
            # not the user's doing: a writer/reader mismatch, so a traceback, not a one-line error
            raise RuntimeError(f"{output}: the exported file does not read back identical to {model_path}")
    summary = {"model": str(model_path), "output": str(output), "type_map": list(model.type_map),
               "n_parameters": model.n_parameters(), "round_trip_identical": True,
               "dropped": ["spin settings"] if model.spin else []}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        table = Table("model", "DeePMD-kit file", "types", "parameters", "read-back")
        table.add_row(str(model_path), str(output), ",".join(model.type_map), f"{model.n_parameters():,}", "identical")
        Console().print(table)
        if model.spin:
            Console(stderr=True).print("note: the .dp file holds the network only; DeePMD-kit sees the virtual spin "
                                       "atoms as ordinary types (pass their positions yourself)")
