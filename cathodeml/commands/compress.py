"""Compress a model: tabulate its embedding nets (DeePMD-kit's `dp compress`) for faster md, test and the calculator.

The embedding nets become piecewise fifth-order polynomials over the normalised radial input, with DeePMD-kit's
table ranges and strides (model/compress.py); the fitting nets are unchanged.  The table range needs the shortest
pair distance of the training data: from --min-distance, else from the frames of --data, else the one `train`
recorded in the model.  With --data the command also reports how far the compressed model's energies (meV/atom)
and forces (meV/Å) are from the uncompressed model's on those frames (up to --check-frames per system).
The output is a model.h5 that every command reads; `cathodeml export` writes its exact nets to a .dp.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def compress(
    model_path: Path = typer.Argument(..., metavar="MODEL", help="model.h5 (or a DeePMD-kit .dp) to compress."),
    output: Path = typer.Option(..., "-o", "--output", help="The compressed model.h5 to write."),
    data: list[Path] = typer.Option(None, "--data", help="Training data (.h5 or deepmd/npy; repeat): sets the table range from its shortest pair distance and checks the accuracy on its frames."),
    min_distance: float = typer.Option(None, "--min-distance", help="Shortest pair distance of the training data (Å), instead of --data."),
    stride: float = typer.Option(0.01, "--stride", "-s", help="Table stride in the normalised input (DeePMD-kit's -s); the extrapolated part uses 10× it."),
    extrapolate: float = typer.Option(5.0, "--extrapolate", "-e", help="The table reaches this multiple of the trained range (DeePMD-kit's -e)."),
    check_frames: int = typer.Option(20, "--check-frames", help="Frames per --data system on which compressed and exact model are compared (0: none)."),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Tabulate the embedding nets of MODEL (DeePMD-kit's compression) into a faster model.h5."""
    from cathodeml.io.atomic import atomic_output
    from cathodeml.model.compress import compress_model
    from cathodeml.model.store import load_model, save_model

    model = load_model(model_path)
    if model.config.tables:
        raise CathodemlError(f"{model_path}: this model is already compressed")
    systems = _data_systems(model, data or [])
    source, d_min = _min_distance(model, systems, min_distance, model_path)
    compressed = compress_model(model, d_min, stride=stride, extrapolate=extrapolate)
    check = _accuracy(model, compressed, systems, check_frames) if systems and check_frames > 0 else None
    if check is not None:
        compressed.metadata["compression"]["check"] = check
    compressed.metadata["compression"]["min_nbor_dist_from"] = source
    with atomic_output(output) as tmp:
        save_model(tmp, compressed)
    grids = compressed.config.tables
    summary = {"model": str(model_path), "output": str(output), "min_nbor_dist_A": d_min, "min_nbor_dist_from": source,
               "stride": stride, "extrapolate": extrapolate,
               "tables": [{"lower": g[0], "upper": g[1], "max": g[2], "stride0": g[3], "stride1": g[4],
                           "intervals": int(np.shape(t)[0])} for g, t in zip(grids, compressed.stats["tables"])],
               "check": check}
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _render(summary)


def _data_systems(model, paths):
    from cathodeml.io.dataset import read_dataset
    from cathodeml.train.evaluate import systems_for_model

    systems = []
    for p in paths:
        systems += systems_for_model(model, read_dataset(p, model.config.type_map), str(p))
    return systems


def _min_distance(model, systems, given, model_path) -> tuple[str, float]:
    from cathodeml.model.compress import min_neighbor_distance

    if given is not None:
        return "--min-distance", float(given)
    if systems:
        # the environment the nets saw: virtual spin atoms included, as in training
        return "--data", min_neighbor_distance((s.all_coords(), None if s.nopbc else s.cells, s.all_types())
                                               for s in systems)
    if "min_nbor_dist" in model.metadata:
        return "model (train)", float(model.metadata["min_nbor_dist"])
    raise CathodemlError(f"{model_path}: the model does not record the shortest pair distance of its training data; "
                         "give the training data with --data (or the distance with --min-distance)")


def _accuracy(model, compressed, systems, frames: int) -> dict:
    """Largest and RMS differences, compressed − exact, on the first `frames` frames of each system."""
    from cathodeml.train.evaluate import predict_system

    de, df = [], []
    for s in systems:
        part = s.select(np.arange(min(frames, s.n_frames)))
        e0, f0, _ = predict_system(model, part, want_virial=False)
        e1, f1, _ = predict_system(compressed, part, want_virial=False)
        de.append((np.asarray(e1) - np.asarray(e0)) / part.n_real)
        df.append((np.asarray(f1) - np.asarray(f0)).ravel())
    de, df = np.concatenate(de) * 1e3, np.concatenate(df) * 1e3
    return {"frames": int(de.size), "energy_max_meV_per_atom": float(np.max(np.abs(de))),
            "energy_rms_meV_per_atom": float(np.sqrt(np.mean(de ** 2))), "force_max_meV_per_A": float(np.max(np.abs(df))),
            "force_rms_meV_per_A": float(np.sqrt(np.mean(df ** 2)))}


def _render(summary: dict) -> None:
    console = Console()
    table = Table("net", "lower", "upper", "max", "strides", "intervals", title=f"compressed → {summary['output']}")
    for i, t in enumerate(summary["tables"]):
        table.add_row(str(i), f"{t['lower']:g}", f"{t['upper']:g}", f"{t['max']:g}", f"{t['stride0']:g} / {t['stride1']:g}",
                      str(t["intervals"]))
    console.print(table)
    console.print(f"shortest pair distance {summary['min_nbor_dist_A']:.4f} Å (from {summary['min_nbor_dist_from']})")
    if summary["check"]:
        c = summary["check"]
        console.print(f"compressed − exact on {c['frames']} frames: energy max {c['energy_max_meV_per_atom']:.2e} meV/atom, "
                      f"force max {c['force_max_meV_per_A']:.2e} meV/Å")
