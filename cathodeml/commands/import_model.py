"""Import a DeePMD-kit `.dp` se_e2_a energy model as a cathodeml model.h5 (`dp convert-backend x.pth x.dp`
makes a .dp from a PyTorch or TensorFlow model)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet


def import_model(
    dp_path: Path = typer.Argument(..., help="DeePMD-kit .dp model (se_e2_a descriptor, ener fitting)."),
    output: Path = typer.Option(..., "-o", "--output", help="The model.h5 to write."),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Import a DeePMD-kit .dp se_e2_a energy model as model.h5 (usable by test and md)."""
    from cathodeml.model.store import load_model, parameters_identical, save_model  # JAX loads only when the command runs

    from cathodeml.io.atomic import atomic_output

    model = load_model(dp_path)  # the one loader: refuses a missing file or a .pth with the convert hint
    with atomic_output(output) as tmp:  # model.h5 appears only once it has read back identical
        save_model(tmp, model)
        if not parameters_identical(model, load_model(tmp)):
            # not the user's doing: a writer/reader mismatch, so a traceback, not a one-line error
            raise RuntimeError(f"{output}: the written model does not read back identical to {dp_path}")
    identical = True
    c = model.config
    summary = {"input": str(dp_path), "output": str(output), "type_map": list(c.type_map), "rcut": c.rcut,
               "sel": list(c.sel), "embedding_neurons": list(c.embedding_neurons),
               "fitting_neurons": list(c.fitting_neurons), "type_one_side": c.type_one_side,
               "n_parameters": model.n_parameters(), "round_trip_identical": identical}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        table = Table("setting", "value", title=f"{dp_path.name} → {output.name}")
        for key, value in (("types", ",".join(c.type_map)), ("rcut_smth → rcut", f"{c.rcut_smth:g} → {c.rcut:g} Å"),
                           ("sel", ",".join(map(str, c.sel))), ("embedding", "-".join(map(str, c.embedding_neurons))),
                           ("type_one_side", str(c.type_one_side)), ("fitting", "-".join(map(str, c.fitting_neurons))),
                           ("parameters", f"{model.n_parameters():,}"), ("read-back", "identical")):
            table.add_row(key, value)
        Console().print(table)
