"""Add virtual spin atoms (collinear DeePSPIN) to a dataset, or strip them off again.

Each magnetic atom with moment S (μB) gets a virtual atom <El>_spin at z' = z + η·S + d (collinear) or R' = R + η·S (vector), so DFT+U frames of one structure in different spin states become different geometries the potential can tell apart. Energies and virials stay as they are; virtual atoms carry no force label (atom_pref = 0). The physics lives in cathodeml.spin: this module only parses options, reports and writes, so the output is all-or-nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import read_dataset, write_dataset
from cathodeml.spin import SpinSettings, augment_dataset, strip_dataset

DEFAULT_ETA = 0.3  # Å/μB, middle of the 0.1–0.5 range the spin paper found stable
DEFAULT_D_COLLINEAR = 0.2  # Å


def augment_spin(
    input_path: Path = typer.Argument(..., metavar="INPUT", help="Dataset: ingest/deepmd-hdf5 .h5 file or deepmd/npy folder (with spin.npy)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output dataset (.h5, deepmd/hdf5 layout)."),
    magnetic: str = typer.Option(None, "--magnetic", help="Magnetic elements that get a virtual atom, e.g. Ni,Co,Mn."),
    eta: str = typer.Option(str(DEFAULT_ETA), "--eta", help="Virtual length η in Å/μB: one value or per element (Ni=0.3,Mn=0.4)."),
    d: str = typer.Option(None, "--d", help=f"Offset d in Å (collinear only): one value or per element; default {DEFAULT_D_COLLINEAR}."),
    mode: str = typer.Option("collinear", "--mode", help="collinear: z' = z + η·S + d; vector: R' = R + η·S (moment vectors)."),
    min_distance: float = typer.Option(0.5, "--min-distance", help="Error if a virtual atom is closer than this (Å) to any other atom, under PBC."),
    min_host_distance: float = typer.Option(0.05, "--min-host-distance", help="Error if a virtual atom is closer than this (Å) to its own host."),
    state_tolerance: float = typer.Option(0.1, "--state-tolerance", help="Warn when two spin states of an element are closer than this (Å) in η·S."),
    strip: bool = typer.Option(False, "--strip", help="Remove the virtual atoms instead (recovers the original dataset exactly)."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Add virtual spin atoms <El>_spin for magnetic atoms (collinear DeePSPIN), or --strip them."""
    if output.is_dir():
        raise CathodemlError(f"{output} is a directory; give a file name for the output dataset, e.g. spin.h5")
    dataset = read_dataset(input_path)
    if strip:
        stripped = strip_dataset(dataset)
        write_dataset(output, stripped)
        summary = {"input": str(input_path), "output": str(output), "action": "strip",
                   "n_systems": len(stripped.systems), "n_frames": stripped.n_frames, "type_map": stripped.type_map,
                   "virtual_atoms_removed": sum(a.n_atoms - b.n_atoms for a, b in zip(dataset.systems, stripped.systems))}
        _finish(summary, [], quiet, as_json, lambda c: c.print(
            f"stripped {_plural(summary['virtual_atoms_removed'], 'virtual atom')} from "
            f"{_plural(summary['n_systems'], 'system')} ({_plural(summary['n_frames'], 'frame')}) → {output}",
            highlight=False))
        return

    settings = _settings(magnetic, eta, d, mode, dataset.type_map)
    err = Console(stderr=True)
    with Progress(TextColumn("checking virtual atoms"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True, disable=quiet or as_json or not err.is_terminal) as bar:
        task = bar.add_task("frames", total=dataset.n_frames)
        augmented, report = augment_dataset(dataset, settings, min_distance=min_distance,
                                            min_host_distance=min_host_distance, state_tolerance=state_tolerance,
                                            progress=lambda n: bar.advance(task, n))
    write_dataset(output, augmented)
    summary = {"input": str(input_path), "output": str(output), "action": "augment", "settings": settings.to_dict(),
               "n_systems": len(augmented.systems), "n_frames": augmented.n_frames, "type_map": augmented.type_map,
               "n_virtual_atoms": report.n_virtual, "elements": report.elements, "warnings": report.warnings}
    _finish(summary, report.warnings, quiet, as_json, lambda c: _render(c, summary))


def _settings(magnetic, eta, d, mode, type_map) -> SpinSettings:
    if not magnetic:
        raise CathodemlError(f"name the magnetic elements with --magnetic (elements in the data: {','.join(type_map)})")
    elements = [e.strip() for e in magnetic.split(",") if e.strip()]
    if d is None:
        d = str(DEFAULT_D_COLLINEAR) if mode == "collinear" else "0"
    return SpinSettings.create(elements, _per_element(eta, "--eta"), _per_element(d, "--d"), mode)


def _per_element(text: str, option: str):
    """'0.3' → 0.3; 'Ni=0.3,Mn=0.4' → {'Ni': 0.3, 'Mn': 0.4}."""
    try:
        if "=" not in text:
            return float(text)
        out = {}
        for part in text.split(","):
            key, value = part.split("=")
            out[key.strip()] = float(value)
        return out
    except ValueError:
        raise CathodemlError(f"{option} {text!r}: give a number or Element=number pairs, e.g. {option} Ni=0.3,Mn=0.4") from None


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _finish(summary, warnings, quiet, as_json, render) -> None:
    err = Console(stderr=True)
    for w in warnings:
        err.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        render(Console())


def _render(console: Console, summary: dict) -> None:
    s = summary["settings"]
    console.print(f"{summary['input']} → {summary['output']}: {summary['n_virtual_atoms']} virtual atoms "
                  f"({s['mode']}) in {_plural(summary['n_systems'], 'system')}, {_plural(summary['n_frames'], 'frame')}; "
                  f"type map {','.join(summary['type_map'])}", highlight=False)
    label = "S" if s["mode"] == "collinear" else "|S|"
    table = Table("element", "η Å/μB", "d Å", f"{label} μB", "spin states μB (count)", "|R'−R| Å",
                  title="virtual spin atoms")
    for el, e in summary["elements"].items():
        lo, hi = e["moment_range_muB"]
        states = ", ".join(f"{st['center']:.2f} ({st['count']})" for st in e["spin_states"])
        dlo, dhi = e["displacement_range_A"]
        table.add_row(f"{el} → {e['virtual_type']}", f"{e['eta_A_per_muB']:g}", f"{e['d_A']:g}",
                      f"{lo:.2f}…{hi:.2f}", states, f"{dlo:.3f}…{dhi:.3f}")
    console.print(table)
    for el, e in summary["elements"].items():
        h = e["moment_histogram"]
        bars = "  ".join(f"[{lo:g},{hi:g}):{n}" for lo, hi, n in zip(h["edges"][:-1], h["edges"][1:], h["counts"]) if n)
        console.print(f"{label} {el} (μB): {bars}", highlight=False)
