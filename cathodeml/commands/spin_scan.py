"""Scan the virtual-spin-atom settings: train and test one model per (η, d) on a grid, as the spin paper's Fig. S1.

Every point augments the plain data with its η (Å/μB) and d (Å), trains with the same config, seed and batches (one sel and one neighbour capacity for the whole grid, so the network is the same and compiles once), and is tested on the held-out data (--valid, augmented with the point's settings) or on the config's validation fraction. Pairs whose virtual atoms come closer than --min-distance to another atom (or --min-host-distance to their host) are marked as overlapping (0 in the heat map) instead of stopping the scan. Writes OUTDIR/spin_scan.csv, spin_scan_energy.png (and spin_scan_force.png when the data has forces), each through a temporary file; --json prints the table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def spin_scan(
    data: Path = typer.Argument(..., metavar="DATA", help="Plain training dataset with magnetic moments (ingest output, no virtual atoms)."),
    magnetic: str = typer.Option(..., "--magnetic", help="Magnetic elements that get a virtual atom, e.g. Fe or Ni,Co,Mn."),
    eta: str = typer.Option("0.1:0.5:5", "--eta", help="η grid in Å/μB: start:stop:count, a list 0.1,0.3 or one value."),
    d: str = typer.Option("0.1:0.5:5", "--d", help="d grid in Å: start:stop:count, a list or one value."),
    config_path: Path = typer.Option(..., "--config", help="Training config (.toml preset or DeePMD-kit input.json) used at every point."),
    valid: Path = typer.Option(None, "--valid", help="Held-out plain dataset to test on; default: the config's validation fraction."),
    steps: int = typer.Option(None, "--steps", help="Training steps per point (overrides training.steps)."),
    seed: int = typer.Option(None, "--seed", help="Data shuffling seed (overrides training.seed)."),
    mode: str = typer.Option("collinear", "--mode", help="collinear: z' = z + η·S + d; vector: R' = R + η·S (then give --d 0)."),
    min_distance: float = typer.Option(0.5, "--min-distance", help="A virtual atom closer than this (Å) to another atom marks the pair as overlapping."),
    min_host_distance: float = typer.Option(0.05, "--min-host-distance", help="A virtual atom closer than this (Å) to its own host marks the pair as overlapping."),
    out_dir: Path = typer.Option(..., "-o", "--output", help="Folder for spin_scan.csv and the heat maps."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Train and test one model per (η, d) grid point; CSV table and heat maps, overlaps marked."""
    from cathodeml.io.dataset import read_dataset
    from cathodeml.signals import stop_on_signals
    from cathodeml.train.config import read_config, with_overrides
    from cathodeml.train.spin_scan import heat_map, parse_grid, run_spin_scan, write_csv

    etas, ds = parse_grid(eta, "--eta"), parse_grid(d, "--d")
    elements = [e.strip() for e in magnetic.split(",") if e.strip()]
    if out_dir.exists() and not out_dir.is_dir():
        raise CathodemlError(f"{out_dir} exists and is not a folder; give a folder for the scan outputs")
    settings, _ = read_config(config_path)
    settings = with_overrides(settings, training__steps=steps, training__seed=seed)
    dataset = read_dataset(data)
    held_out = read_dataset(valid) if valid is not None else None
    out_dir.mkdir(parents=True, exist_ok=True)

    err = Console(stderr=True)
    columns = [TextColumn("spin scan"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[last]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=err, disable=quiet or as_json) as bar, stop_on_signals() as should_stop:
        task = bar.add_task("grid", total=etas.size * ds.size, last="")

        def progress(done, total, point):
            what = "overlap" if point.overlap else f"E {point.energy_rmse:.2f} meV/atom"
            bar.update(task, completed=done, last=f"η={point.eta:g} d={point.d:g}: {what}")

        points = run_spin_scan(dataset, elements, etas, ds, settings, valid=held_out, mode=mode,
                               min_distance=min_distance, min_host_distance=min_host_distance, workdir=out_dir,
                               progress=progress, should_stop=should_stop)

    files = [out_dir / "spin_scan.csv", out_dir / "spin_scan_energy.png"]
    write_csv(files[0], points)
    heat_map(files[1], points, "energy_rmse", "held-out energy RMSE (meV/atom)")
    if any(math.isfinite(p.force_rmse) for p in points):
        files.append(out_dir / "spin_scan_force.png")
        heat_map(files[2], points, "force_rmse", "held-out force RMSE (meV/Å)")
    summary = {"data": str(data), "valid": str(valid) if valid else None, "magnetic": elements, "mode": mode,
               "steps": settings.training.steps, "seed": settings.training.seed, "config": str(config_path),
               "points": [p.row() for p in points], "files": [str(f) for f in files]}
    if as_json:
        typer.echo(json.dumps(_nan_to_null(summary), indent=2))
    elif not quiet:
        _render(Console(), summary)


def _nan_to_null(value):
    """NaN (not trained, no forces) as JSON null, so strict JSON readers (jq) accept the output."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_null(v) for v in value]
    return value


def _render(console: Console, summary: dict) -> None:
    table = Table("η (Å/μB)", "d (Å)", "E RMSE meV/atom", "F RMSE meV/Å", "overlap", "s",
                  title=f"spin scan: {summary['steps']} steps per point on {summary['data']}")
    trained = [p for p in summary["points"] if not p["overlap"] and math.isfinite(p["energy_rmse_meV_per_atom"])]
    best = min(trained, key=lambda p: p["energy_rmse_meV_per_atom"]) if trained else None
    for p in summary["points"]:
        fmt = lambda v, spec: "-" if not math.isfinite(v) else format(v, spec)  # noqa: E731
        mark = " ←" if p is best else ""
        table.add_row(f"{p['eta_A_per_muB']:g}", f"{p['d_A']:g}", fmt(p["energy_rmse_meV_per_atom"], ".2f") + mark,
                      fmt(p["force_rmse_meV_per_A"], ".1f"), "yes" if p["overlap"] else "", f"{p['seconds']:.0f}")
    console.print(table)
    for f in summary["files"]:
        console.print(f"wrote {f}", highlight=False)
