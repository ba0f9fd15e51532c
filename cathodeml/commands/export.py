"""Export a cathodeml model.h5 as a DeePMD-kit `.dp` file (runs in `dp test`, DeepPot, LAMMPS pair_style deepmd
after `dp convert-backend model.dp model.pth`; spin models as DeePMD-kit spin models, for pair_style deepspin)."""

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

    from cathodeml.model.compress import uncompress_model

    model = uncompress_model(load_model(model_path))  # a compressed model exports its exact nets
    # float32 models are written as float32 arrays: compare to single-precision rounding
    rtol = 1e-7 if model.config.precision == "float32" else 0.0
    with atomic_output(output) as tmp:  # the .dp appears only once it has read back identical
        export_deepmd(tmp, model)
        back = import_deepmd(tmp)
        if not parameters_identical(model, back, rtol=rtol) or back.spin != model.spin:
            # not the user's doing: a writer/reader mismatch, so a traceback, not a one-line error
            raise RuntimeError(f"{output}: the exported file does not read back identical to {model_path}")
    summary = {"model": str(model_path), "output": str(output), "type_map": list(model.type_map),
               "n_parameters": model.n_parameters(), "round_trip_identical": True,
               "kind": "spin_ener (DeePMD-kit spin model)" if model.spin else "standard"}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        table = Table("model", "DeePMD-kit file", "types", "parameters", "read-back")
        table.add_row(str(model_path), str(output), ",".join(model.type_map), f"{model.n_parameters():,}", "identical")
        Console().print(table)
