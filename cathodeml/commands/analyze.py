"""Li-ion transport and structure from MD trajectories: MSD (self, distinct), D, Haven ratio,
Nernst–Einstein σ, Arrhenius Eₐ with extrapolation, partial RDFs.  Writes results.json, CSV tables
and PNG figures to the output folder.

Without trajectories, `cathodeml analyze --arrhenius D_T.csv -o out` fits Eₐ from a table of T (K), D (cm²/s) and optionally D_err: a header row (T/T_K/temperature, D/D_cm2_s, D_err/err) or 2-3 bare numeric columns, comma- or whitespace-separated, '#' comments; with D_err the fit is weighted by 1/σ²(ln D). Tables also add points to a fit over trajectories."""

from __future__ import annotations

import math
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.analysis.pipeline import AnalysisSettings, analyze_trajectory, parse_fit_window, parse_time
from cathodeml.analysis.results import (TemperatureMean, TransportResults, check_fit_kind, format_estimate,
                                       summarize_analysis, write_analysis)
from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError
from cathodeml.io.results import ArrheniusPoint, read_arrhenius_points, results_json_text
from cathodeml.io.trajectory import open_trajectory


def analyze(
    inputs: list[Path] = typer.Argument(None, help="Trajectories (H5MD from `md`, XDATCAR[.gz], vasprun.xml, extxyz) "
                                                   "and/or earlier results.json files to include in the Arrhenius fit; "
                                                   "optional with --arrhenius TABLE.", show_default=False),
    species: str = typer.Option("Li", "--species", help="Mobile ion (element symbol)."),
    charge: float = typer.Option(1.0, "--charge", help="Charge number Z of the mobile ion."),
    temperature: str = typer.Option(None, "--temperature", help="Temperature in K when the file lacks it; one value, "
                                                                 "or one per trajectory separated by commas."),
    timestep: str = typer.Option(None, "--timestep", help="Time between STORED frames in fs when the file lacks it; "
                                                           "one value or one per trajectory."),
    fit_window: str = typer.Option("auto", "--fit-window", help="START:END of the linear fit, e.g. 2ps:T/2, 1ps:20ps, "
                                                                 "auto:0.4T; 'auto' = where the MSD turns linear (≥1 ps) to T/2."),
    skip: str = typer.Option("0", "--skip", help="Equilibration to leave out at the start of every trajectory, "
                                                  "e.g. 5ps (bare numbers are fs)."),
    blocks: int = typer.Option(5, "--blocks", help="Time blocks for the error bars (≥2; 1 = no block errors)."),
    drift: bool = typer.Option(True, "--drift-correction/--no-drift-correction",
                               help="Remove the centre-of-mass drift of the framework (all non-mobile atoms)."),
    rdf: str = typer.Option(None, "--rdf", help="Partial RDF pairs, e.g. Li-Cl,Ti-Cl."),
    rdf_rmax: float = typer.Option(None, "--rdf-rmax", help="RDF range in Å (default min(10, half the cell width))."),
    rdf_bins: int = typer.Option(200, "--rdf-bins", help="RDF histogram bins."),
    rdf_frames: int = typer.Option(100, "--rdf-frames", help="At most this many evenly spaced frames go into the RDF."),
    arrhenius: list[Path] = typer.Option(None, "--arrhenius", help="Arrhenius points from a table of T (K), D (cm²/s)"
                                                                    "[, D_err] (header T/T_K/temperature, D/D_cm2_s, "
                                                                    "D_err/err, or bare columns; optionally sigma, "
                                                                    "sigma_err) or a results.json; repeatable; alone "
                                                                    "it fits Eₐ without trajectories."),
    arrhenius_fit_kind: str = typer.Option("lnD", "--arrhenius-fit", help="What to fit against 1/T: lnD, lnsigmaT or "
                                                                          "lnsigmaT-tracer."),
    at: float = typer.Option(300.0, "--at", help="Temperature (K) to extrapolate D or σ to."),
    output: Path = typer.Option(Path("analysis"), "-o", "--output", help="Output folder (created if missing)."),
    no_plots: bool = typer.Option(False, "--no-plots", help="Skip the PNG figures."),
    as_json: AsJson = False,
    quiet: Quiet = False,
) -> None:
    """Analyse Li-ion transport: MSD self/distinct, D_self, D_σ, Haven ratio, σ, Arrhenius Eₐ, RDF."""
    inputs = list(inputs or [])
    trajectories = [p for p in inputs if p.suffix.lower() != ".json"]
    earlier = [p for p in inputs if p.suffix.lower() == ".json"] + list(arrhenius or [])
    tables = [p for p in trajectories if p.suffix.lower() in TABLE_SUFFIXES]
    if tables:
        raise CathodemlError(f"{tables[0]} looks like a table, not a trajectory: pass it as --arrhenius {tables[0]}")
    check_fit_kind(arrhenius_fit_kind)
    if at <= 0:
        raise CathodemlError("--at must be a positive temperature in K")
    settings = AnalysisSettings(species=species, charge=charge, fit_window=parse_fit_window(fit_window), blocks=blocks,
                                remove_drift=drift, rdf_pairs=_parse_pairs(rdf), rdf_rmax=rdf_rmax, rdf_bins=rdf_bins,
                                rdf_frames=rdf_frames, skip_fs=parse_time(skip, "--skip"))
    temperatures = _per_trajectory(temperature, len(trajectories), "--temperature")
    timesteps = _per_trajectory(timestep, len(trajectories), "--timestep")
    points_in = [pt for p in earlier for pt in read_arrhenius_points(p)]
    if not trajectories and not earlier:
        raise CathodemlError("nothing to analyse: give trajectories, or a table of T, D[, D_err] with --arrhenius D_T.csv")
    if not trajectories:
        _check_enough_temperatures(points_in, earlier)

    runs = _analyze_all(trajectories, settings, temperatures, timesteps, show=not (quiet or as_json))
    results = summarize_analysis(runs, points_in, species=species, charge=charge, fit=arrhenius_fit_kind, at_K=at)
    write_analysis(output, results, figures=not no_plots)
    if as_json:
        typer.echo(results_json_text(results.to_dict()))
    elif not quiet:
        _render(Console(), results, output)


# ------------------------------------------------------------------------------ parsing options

TABLE_SUFFIXES = (".csv", ".tsv")


def _check_enough_temperatures(points: list[ArrheniusPoint], sources: list[Path]) -> None:
    """Without trajectories the only result is the Arrhenius fit: it needs two temperatures."""
    temps = sorted({round(p.temperature_K, 1) for p in points})
    if len(temps) < 2:
        found = f"only T = {temps[0]:g} K" if temps else "no rows"
        raise CathodemlError(f"{', '.join(map(str, sources))}: {found}; an Arrhenius fit needs D at two or more "
                             "different temperatures")


def _parse_pairs(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    pairs = []
    for item in text.split(","):
        parts = [p.strip() for p in item.strip().split("-")]
        if len(parts) != 2 or not all(parts):
            raise CathodemlError(f"--rdf {text!r}: write pairs as A-B separated by commas, e.g. Li-Cl,Ti-Cl")
        pairs.append((parts[0], parts[1]))
    return tuple(pairs)


def _per_trajectory(text: str | None, n: int, name: str) -> list[float | None]:
    if text is None:
        return [None] * n
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise CathodemlError(f"{name} {text!r}: give a number or comma-separated numbers") from exc
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise CathodemlError(f"{name} has {len(values)} values for {n} trajectories: give one, or one per trajectory")
    return values


# ---------------------------------------------------------------------------------- load and report


def _analyze_all(paths, settings, temperatures, timesteps, *, show: bool):
    runs = []
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}% (read, then MSD)"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not show, transient=False) as progress:
        for path, temp, dt in zip(paths, temperatures, timesteps):
            with open_trajectory(path) as traj:
                task = progress.add_task(path.name, total=2 * traj.header.n_frames)
                runs.append(analyze_trajectory(traj, settings, temperature_k=temp, timestep_fs=dt,
                                               progress=lambda done, total, task=task: progress.update(task, completed=done,
                                                                                                       total=total)))
    return runs


def _render(console: Console, results: TransportResults, output: Path) -> None:
    runs, labels = results.runs, results.labels
    fit = None if results.arrhenius is None else results.arrhenius.record
    columns = [(label, r.temperature_K, r) for r, label in zip(runs, labels)]
    columns += [(f"mean of {t.n_replicas}", t.temperature_K, t) for t in results.temperatures if t.n_replicas > 1]
    table = Table(title=f"{runs[0].settings.species if runs else ''}-ion transport")
    table.add_column("quantity")
    for label, temp, _ in columns:
        table.add_column(f"{label}\n{temp:g} K", justify="right")
    is_mean = lambda c: isinstance(c, TemperatureMean)  # noqa: E731
    rows = [("ions", lambda c: "" if is_mean(c) else str(c.n_ions)),
            ("fit window (ps)", lambda c: "" if is_mean(c) else f"{c.window_fs[0] / 1000:.3g}–{c.window_fs[1] / 1000:.3g}"),
            ("D_self (cm²/s)", lambda c: format_estimate(c.D_self)),
            ("D_σ (cm²/s)", lambda c: format_estimate(c.D_sigma)),
            ("Haven ratio", lambda c: format_estimate(c.haven_ratio)),
            ("σ (mS/cm)", lambda c: format_estimate(c.sigma)),
            ("σ tracer, H_R=1 (mS/cm)", lambda c: format_estimate(c.sigma_tracer))]
    for name, cell in rows:
        table.add_row(name, *[cell(c) for _, _, c in columns])
    if columns:
        console.print(table)
    shells = [(label, pair, s) for r, label in zip(runs, labels) for pair, s in r.rdf_shells.items()]
    if shells:
        rt = Table(title="RDF first shells")
        for col in ("run", "pair", "r_peak (Å)", "r_min (Å)", "CN"):
            rt.add_column(col)
        for label, (a, b), s in shells:
            rt.add_row(label, f"{a}-{b}", f"{s['r_peak']:.2f}", f"{s['r_min']:.2f}", f"{s['cn']:.2f}")
        console.print(rt)
    if fit is not None and not runs:
        weighting = "weighted" if fit["weighted"] else "unweighted"
        pt = Table(title=f"{fit['quantity']} ({fit['points'][0]['unit']}), {weighting} fit")
        for col in ("T (K)", fit["quantity"], "source"):
            pt.add_column(col, justify="left" if col == "source" else "right")
        for p in fit["points"]:
            pt.add_row(f"{p['temperature_K']:g}", format_estimate(p), p["source"])
        console.print(pt)
    if fit is not None:
        ext = fit["extrapolated"]
        console.print(f"Arrhenius ({fit['fit']}, {fit['n_points']} points): Eₐ = {format_estimate(fit['Ea'], 3)} eV; "
                      f"{fit['quantity']}({ext['temperature_K']:g} K) = {ext['value']:.3g} {ext['unit']} "
                      + (f"(95% CI {ext['ci_low']:.3g}–{ext['ci_high']:.3g})" if math.isfinite(ext["ci_low"])
                         else "(no error bars: two points without errors fix the line exactly)"))
    console.print(f"wrote {output}/results.json and CSV/PNG files")
