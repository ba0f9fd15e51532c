"""Read VASP OUTCARs (with their magnetic moments) into a deepmd/hdf5 dataset.

Every complete ionic step becomes a frame (cell, positions, TOTEN or E(sigma→0), forces, virial,
per-atom moments, SCF flag, provenance).  Files are parsed in worker processes and written once,
at the end, through a temporary file: a bad file, a type-map clash or Ctrl-C leaves the previous
output exactly as it was.  Sources are identified by the sha256 of their text, so --append never
ingests the same run twice, even from a recompressed copy.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError, TypeMapError
from cathodeml.io.ingest import check_output, drop_duplicate_sources, ingest_automag, ingest_summary, plan_append, read_outcars
from cathodeml.io.ingest import read_outcar_or_error as _read_one  # a module attribute: tests interrupt it


def ingest(
    paths: list[str] = typer.Argument(..., help="OUTCAR files (plain, .gz, .bz2, .xz), directories (searched recursively for files whose name contains OUTCAR) or quoted globs; or automag *_singlepoint.txt files (magnetic orderings, energies and moments, no forces) with their enumlib/ POSCARs beside them."),
    output: Path = typer.Option(..., "-o", "--output", help="Dataset file to write (deepmd/hdf5 layout)."),
    type_map: str = typer.Option(None, "--type-map", help="Comma-separated species order, e.g. Li,Ni,Co,Mn,O."),
    append: bool = typer.Option(False, "--append", help="Add to an existing file; sources already in it (same sha256) are skipped."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=0, help="Parse this many files in parallel (0: one per CPU core)."),
    keep_unconverged: bool = typer.Option(False, "--keep-unconverged", help="Keep ionic steps whose SCF loop hit NELM."),
    energy: str = typer.Option("free", "--energy", help="Energy label: free (TOTEN) or sigma0 (E(sigma→0))."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip unreadable or damaged files (listed) instead of stopping."),
    poscars: Path = typer.Option(None, "--poscars", help="automag input only: the folder of enumlib POSCARs (vasp.N); default: enumlib/ beside the .txt file."),
    orderings: str = typer.Option(None, "--orderings", help="automag input only: keep these orderings (comma-separated names or shell patterns, e.g. 'afm*0,afm*5')."),
    exclude_orderings: str = typer.Option(None, "--exclude-orderings", help="automag input only: leave out these orderings (names or patterns); with --orderings, a held-out split."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Ingest VASP OUTCARs (energies, forces, virials, magnetic moments) into a dataset file."""
    from cathodeml.io.dataset import write_dataset
    from cathodeml.io.outcar import ENERGY_KINDS, find_outcars, runs_to_dataset

    if energy not in ENERGY_KINDS:
        raise CathodemlError(f"--energy must be one of {', '.join(ENERGY_KINDS)}, not {energy!r}")
    order = _parse_type_map(type_map)
    selection = {"orderings": _patterns(orderings), "exclude": _patterns(exclude_orderings)}
    if _automag_inputs(paths, poscars, selection):
        console = Console(stderr=True, quiet=quiet, soft_wrap=True)
        summary = ingest_automag(paths, output, type_map=order, poscars=poscars, append=append, energy=energy,
                                 keep_unconverged=keep_unconverged, skip_missing=skip_bad, **selection,
                                 on_skip=lambda p, s: console.print(f"[yellow]skipped[/yellow] {p}: ordering "
                                                                    f"{s['ordering']}: {s['reason']}"),
                                 on_nothing_new=lambda: console.print(f"nothing new to add; {output} left as it was"))
        if as_json:
            typer.echo(json.dumps(summary, indent=2))
        elif not quiet:
            _render_automag(Console(), summary)
        return
    files = find_outcars(paths)
    check_output(output, files)

    known, base_map = {}, []
    if append and output.exists():
        plan = plan_append(output, energy, order)
        order, base_map, known = plan.type_map, plan.file_type_map, dict(plan.known_sources)

    console = Console(stderr=True, quiet=quiet, soft_wrap=True)
    with _progress_bar(console) as progress:
        runs, failed = read_outcars(files, energy, jobs=jobs or os.cpu_count() or 1, skip_bad=skip_bad, type_map=order,
                                    progress=progress, read_file=_read_one,
                                    on_skip=lambda path, error: console.print(f"[red]skipped bad file[/red] {error}"))
    kept_runs, duplicates = drop_duplicate_sources(runs, known)
    _print_notes(console, kept_runs, duplicates, keep_unconverged)

    dataset, stats = runs_to_dataset(kept_runs, type_map=order, base_map=base_map, keep_unconverged=keep_unconverged)
    if not dataset.systems:
        _explain_nothing_to_write(runs, kept_runs, output, console)
    groups = write_dataset(output, dataset, append=append) if dataset.systems else []

    summary = ingest_summary(output, files, stats, duplicates, failed, dataset, groups, energy)
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        _render(Console(), summary)


def _explain_nothing_to_write(runs, kept_runs, output: Path, console: Console) -> None:
    """No frame survived: an error if that is a surprise, a note if every source was already in."""
    if kept_runs:
        raise CathodemlError("no frames to write: every ionic step hit NELM (SCF unconverged); "
                             "pass --keep-unconverged to keep them")
    if not runs:
        raise CathodemlError("no file could be read (see the messages above); nothing written")
    console.print(f"nothing new to add; {output} left as it was")


@contextlib.contextmanager
def _progress_bar(console: Console):
    """A `read_outcars` progress callback drawing a bar with ETA on `console` (a terminal only).

    The bar (and rich's refresh thread) starts at the first report, which comes after the pool's
    workers are forked: forking with that thread alive would make the pool fall back to forkserver."""
    bar = Progress(TextColumn("[bold]ingest[/bold] {task.fields[done]}/{task.fields[n]} files"),
                   BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
                   console=console, transient=False, disable=console.quiet or not console.is_terminal)
    task = None

    def report(bytes_done: int, bytes_total: int, files_done: int, n_files: int) -> None:
        nonlocal task
        if task is None:
            bar.start()
            task = bar.add_task("ingest", total=bytes_total, done=0, n=n_files)
        bar.update(task, completed=bytes_done, done=files_done)

    try:
        yield report
    finally:
        bar.stop()


def _print_notes(console: Console, runs, duplicates, keep_unconverged: bool) -> None:
    """Per-source messages on stderr: duplicates skipped, parser warnings, unconverged steps."""
    for d in duplicates:
        console.print(f"[yellow]skipped[/yellow] {d['path']}: {d['reason']} (same sha256)")
    for run in runs:
        for note in run.notes:
            console.print(f"[yellow]warning[/yellow] {run.path}: {note}")
        n_unconverged = int((~run.scf_converged).sum())
        if n_unconverged:
            what = "kept (--keep-unconverged)" if keep_unconverged else "skipped; keep them with --keep-unconverged"
            console.print(f"[yellow]note[/yellow] {run.path}: {n_unconverged} ionic step(s) hit NELM={run.nelm} "
                          f"(SCF not converged): {what}")


def _parse_type_map(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise TypeMapError("--type-map is empty; give species like Li,Ni,Co,Mn,O")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise TypeMapError(f"--type-map lists {','.join(dup)} twice; give each species once")
    return names


def _render(console: Console, summary: dict) -> None:
    f, fr = summary["files"], summary["frames"]
    table = Table(title=f"ingest → {summary['output']}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("files", f"{f['ingested']} ingested of {f['found']}"
                  + (f", {f['duplicates_skipped']} already ingested (same sha256)" if f["duplicates_skipped"] else "")
                  + (f", {f['failed']} failed" if f["failed"] else ""))
    table.add_row("frames kept", str(fr["kept"]) + (f" (incl. {fr['unconverged_kept']} unconverged)" if fr["unconverged_kept"] else ""))
    table.add_row("frames skipped", f"{fr['skipped_unconverged']} SCF hit NELM, {fr['incomplete_dropped']} incomplete (cut-off run)"
                  + (f", {fr['malformed_dropped']} unreadable" if fr["malformed_dropped"] else ""))
    table.add_row("systems", ", ".join(f"{s['name']} ({s['frames']})" for s in summary["systems"]) or "-")
    table.add_row("elements", ",".join(summary["elements"]) or "-")
    table.add_row("type map", ",".join(summary["type_map"]))
    table.add_row("energy", "TOTEN (free energy)" if summary["energy"] == "free" else "E(sigma→0)")
    console.print(table)


# ----------------------------------------------------------------------------- automag single points


def _patterns(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _automag_inputs(paths: list[str], poscars: Path | None, selection: dict) -> bool:
    """True when every path is an automag singlepoint file (mixing them with OUTCARs is an error)."""
    from cathodeml.io.automag import is_singlepoint_file

    flags = [is_singlepoint_file(p) for p in paths]
    if any(v is not None for v in selection.values()) and not any(flags):
        raise CathodemlError("--orderings/--exclude-orderings select automag orderings; the input has none")
    if any(flags) and not all(flags):
        raise CathodemlError("automag singlepoint files and OUTCARs in one ingest: ingest them separately "
                             "(the second with --append)")
    if poscars is not None and not any(flags):
        raise CathodemlError("--poscars is for automag *_singlepoint.txt input only")
    if poscars is not None and len(paths) > 1:
        raise CathodemlError("--poscars names the POSCAR folder of one singlepoint file; ingest the files one at a time")
    return bool(flags) and all(flags)


def _render_automag(console: Console, summary: dict) -> None:
    table = Table(title=f"ingest (automag single points) → {summary['output']}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    fr = summary["frames"]
    table.add_row("orderings kept", str(fr["kept"]) + (f", {fr['skipped']} skipped" if fr["skipped"] else "")
                  + (f", {fr['already_in_output']} already in the file" if fr["already_in_output"] else ""))
    table.add_row("systems", ", ".join(f"{s['name']} ({s['frames']})" for s in summary["systems"]) or "-")
    table.add_row("type map", ",".join(summary["type_map"]))
    table.add_row("labels", "energies, magnetic moments; no forces (energy-only training)")
    console.print(table)
