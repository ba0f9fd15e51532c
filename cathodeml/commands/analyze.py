"""Li-ion transport and structure from MD trajectories: MSD (self, distinct), D, Haven ratio,
Nernst–Einstein σ, Arrhenius Eₐ with extrapolation, partial RDFs.  Writes results.json, CSV tables
and PNG figures to the output folder.

Without trajectories, `cathodeml analyze --arrhenius D_T.csv -o out` fits Eₐ from a table of T (K), D (cm²/s) and optionally D_err: a header row (T/T_K/temperature, D/D_cm2_s, D_err/err) or 2-3 bare numeric columns, comma- or whitespace-separated, '#' comments; with D_err the fit is weighted by 1/σ²(ln D). Tables also add points to a fit over trajectories."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml import __version__
from cathodeml.analysis import plots
from cathodeml.analysis.arrhenius import arrhenius_fit
from cathodeml.analysis.pipeline import (D_UNIT, SIGMA_UNIT, AnalysisSettings, analyze_trajectory, parse_fit_window,
                                        parse_time)
from cathodeml.analysis.transport import Estimate, combine_replicas, haven_ratio
from cathodeml.errors import CathodemlError
from cathodeml.io.results import ArrheniusPoint, read_arrhenius_points, results_json_text, write_csv, write_results_json
from cathodeml.io.trajectory import open_trajectory

FITS = {"lnD": ("D", False, "D_self (cm²/s)", D_UNIT),
        "lnsigmaT": ("sigma", True, "σ (mS/cm)", SIGMA_UNIT),
        "lnsigmaT-tracer": ("sigma_tracer", True, "σ tracer (mS/cm)", SIGMA_UNIT)}


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
    if arrhenius_fit_kind not in FITS:
        raise CathodemlError(f"--arrhenius-fit {arrhenius_fit_kind!r}: choose one of {', '.join(FITS)}")
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
    labels = _labels(runs)
    per_temperature = _combine_by_temperature(runs)
    points = [_point(t) for t in per_temperature] + points_in
    fit = _arrhenius(points, arrhenius_fit_kind, at)
    results = {"cathodeml_version": __version__, "species": species, "charge": charge,
               "Ea": None if fit is None else fit["Ea"],
               "runs": [_run_dict(r, label) for r, label in zip(runs, labels)],
               "temperatures": [_temperature_dict(t) for t in per_temperature],
               "arrhenius": None if fit is None else {k: v for k, v in fit.items() if k != "_fit"}}

    output.mkdir(parents=True, exist_ok=True)
    _write_tables(output, runs, labels, points, fit)
    if not no_plots:
        _write_figures(output, runs, labels, points, fit, arrhenius_fit_kind)
    write_results_json(output / "results.json", results)
    if as_json:
        typer.echo(results_json_text(results))
    elif not quiet:
        _render(Console(), runs, labels, per_temperature, fit, output)


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


# ------------------------------------------------------------------------------------- compute


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


def _labels(runs) -> list[str]:
    labels, seen = [], defaultdict(int)
    for r in runs:
        stem = Path(r.path).name.removesuffix(".gz").rsplit(".", 1)[0] or Path(r.path).name
        seen[stem] += 1
        labels.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return labels


def _combine_by_temperature(runs) -> list[dict]:
    """Replicas (runs at the same temperature within 0.5 K) merged into one entry per temperature."""
    groups: dict[float, list] = {}
    for r in runs:
        key = next((k for k in groups if abs(k - r.temperature_K) <= 0.5), r.temperature_K)
        groups.setdefault(key, []).append(r)
    out = []
    for t, members in sorted(groups.items()):
        if len(members) == 1:
            m = members[0]
            d_self, d_sigma, h, s, st = m.D_self, m.D_sigma, m.haven_ratio, m.sigma, m.sigma_tracer
        else:
            d_self = combine_replicas([m.D_self for m in members])
            d_sigma = combine_replicas([m.D_sigma for m in members])
            h = haven_ratio(d_self, d_sigma)
            s = combine_replicas([m.sigma for m in members])
            st = combine_replicas([m.sigma_tracer for m in members])
        out.append({"temperature_K": t, "n_replicas": len(members), "D_self": d_self, "D_sigma": d_sigma,
                    "haven_ratio": h, "sigma": s, "sigma_tracer": st, "files": [m.path for m in members]})
    return out


def _point(t: dict) -> ArrheniusPoint:
    return ArrheniusPoint(t["temperature_K"], t["D_self"].value, t["D_self"].err, t["sigma"].value, t["sigma"].err,
                          t["sigma_tracer"].value, t["sigma_tracer"].err, source=",".join(t["files"]))


def _arrhenius_columns(points, kind):
    attr, times_t, _, unit = FITS[kind]
    t = np.array([p.temperature_K for p in points])
    q = np.array([getattr(p, attr) for p in points])
    e = np.array([getattr(p, attr + "_err") for p in points])
    return t, q, e, times_t, unit


def _arrhenius(points, kind: str, at: float) -> dict | None:
    if len({round(p.temperature_K, 1) for p in points}) < 2:
        return None
    t, q, e, times_t, unit = _arrhenius_columns(points, kind)
    if not np.all(np.isfinite(q)):
        missing = [p.source for p, v in zip(points, q) if not math.isfinite(v)]
        raise CathodemlError(f"--arrhenius-fit {kind} needs {FITS[kind][0]} for every point; missing for {', '.join(missing)}")
    fit = arrhenius_fit(t, q, e, times_T=times_t)
    q0, q0_err = fit.prefactor
    ext = fit.extrapolate(at)
    return {"fit": kind, "quantity": FITS[kind][0], "n_points": fit.n_points, "weighted": fit.weighted,
            "Ea": Estimate(fit.activation_energy_eV, fit.activation_energy_err_eV, "eV").to_dict(),
            "prefactor": {"value": q0, "err": q0_err, "unit": unit + (" K" if times_t else "")},
            "extrapolated": {"temperature_K": at, "value": ext["value"], "err": ext["err"], "unit": unit,
                             "ci_low": ext["ci_low"], "ci_high": ext["ci_high"], "confidence": ext["confidence"]},
            "points": [{"temperature_K": p.temperature_K, "value": v, "err": er, "unit": unit, "source": p.source}
                       for p, v, er in zip(points, q, e)],
            "_fit": fit}


# -------------------------------------------------------------------------------------- output


def _run_dict(r, label: str) -> dict:
    ps = lambda fs: {"value": fs / 1000.0, "err": None, "unit": "ps"}  # noqa: E731
    return {
        "file": r.path, "label": label, "species": r.settings.species, "charge": r.settings.charge,
        "temperature_K": {"value": r.temperature_K, "err": None, "unit": "K"},
        "n_ions": r.n_ions, "n_atoms": r.n_atoms, "n_frames": r.n_frames,
        "timestep": {"value": r.timestep_fs, "err": None, "unit": "fs"},
        "duration": ps(float(r.time_fs[-1])),
        "skipped": ps(r.settings.skip_fs),
        "volume": {"value": r.volume_A3, "err": None, "unit": "Å^3"},
        "fit_window": {"start": ps(r.window_fs[0]), "end": ps(r.window_fs[1])},
        "blocks": r.settings.blocks, "drift_corrected": r.settings.remove_drift,
        "D_self": r.D_self.to_dict(),
        "D_self_axes": {ax: e.to_dict() for ax, e in zip("xyz", r.D_self_axes)},
        "D_sigma": r.D_sigma.to_dict(), "haven_ratio": r.haven_ratio.to_dict(),
        "sigma": r.sigma.to_dict(), "sigma_tracer": r.sigma_tracer.to_dict(),
        "rdf": {f"{a}-{b}": {"r_peak": {"value": s["r_peak"], "err": None, "unit": "Å"},
                             "r_min": {"value": s["r_min"], "err": None, "unit": "Å"},
                             "coordination_number": {"value": s["cn"], "err": None, "unit": ""}}
                for (a, b), s in r.rdf_shells.items()},
    }


def _temperature_dict(t: dict) -> dict:
    return {"temperature_K": {"value": t["temperature_K"], "err": None, "unit": "K"}, "n_replicas": t["n_replicas"],
            **{k: t[k].to_dict() for k in ("D_self", "D_sigma", "haven_ratio", "sigma", "sigma_tracer")},
            "files": t["files"]}


def _write_tables(output: Path, runs, labels, points, fit) -> None:
    for r, label in zip(runs, labels):
        write_csv(output / f"msd_{label}.csv", {
            "time_fs": r.time_fs,
            "msd_self_x_A2": r.msd_self[:, 0], "msd_self_y_A2": r.msd_self[:, 1], "msd_self_z_A2": r.msd_self[:, 2],
            "msd_self_A2": r.msd_self.sum(axis=1), "msd_total_A2": r.msd_total.sum(axis=1),
            "msd_distinct_A2": r.msd_distinct.sum(axis=1)},
            comment=f"{r.path} T={r.temperature_K:g} K species={r.settings.species} n_ions={r.n_ions}; per ion")
    rdf_columns = {}
    for r, label in zip(runs, labels):
        for (a, b), v in r.rdf.items():
            rdf_columns[f"r_A_{a}-{b}_{label}"] = v["r"]
            rdf_columns[f"g_{a}-{b}_{label}"] = v["g"]
            rdf_columns[f"cn_{a}-{b}_{label}"] = v["cn"]
    if rdf_columns:
        n = max(len(c) for c in rdf_columns.values())
        padded = {k: np.pad(np.asarray(v, float), (0, n - len(v)), constant_values=np.nan) for k, v in rdf_columns.items()}
        write_csv(output / "rdf.csv", padded)
    if points:
        write_csv(output / "arrhenius.csv", {
            "T_K": np.array([p.temperature_K for p in points]),
            "inv_T_1000_per_K": np.array([1000.0 / p.temperature_K for p in points]),
            "D_cm2_s": np.array([p.D for p in points]), "D_err_cm2_s": np.array([p.D_err for p in points]),
            "sigma_mS_cm": np.array([p.sigma for p in points]), "sigma_err_mS_cm": np.array([p.sigma_err for p in points]),
            "sigma_tracer_mS_cm": np.array([p.sigma_tracer for p in points]),
            "sigma_tracer_err_mS_cm": np.array([p.sigma_tracer_err for p in points]),
            "source": np.array([p.source for p in points], dtype=object)},
            comment=None if fit is None else f"fit {fit['fit']}: Ea = {_fmt(fit['Ea'], 4)} eV")


def _write_figures(output: Path, runs, labels, points, fit, kind: str) -> None:
    if runs:
        plots.plot_msd(output / "msd.png", [
            {"label": f"{label} ({r.temperature_K:g} K)", "time_fs": r.time_fs, "self": r.msd_self.sum(axis=1),
             "distinct": r.msd_distinct.sum(axis=1), "window_fs": r.window_fs} for r, label in zip(runs, labels)])
    pairs = sorted({pair for r in runs for pair in r.rdf})
    for a, b in pairs:
        plots.plot_rdf(output / f"rdf_{a}-{b}.png", f"{a}-{b}", [
            {"label": f"{label} ({r.temperature_K:g} K)", **r.rdf[(a, b)]} for r, label in zip(runs, labels) if (a, b) in r.rdf])
    if fit is not None:
        t, q, e, _, _ = _arrhenius_columns(points, kind)
        f = fit["_fit"]
        grid = np.linspace(min(t.min(), fit["extrapolated"]["temperature_K"]), t.max(), 100)
        line = np.exp(f.intercept + f.slope / grid) / (grid if f.times_T else 1.0)
        plots.plot_arrhenius(output / "arrhenius.png", t, q, e, ylabel=FITS[kind][2], fit_line=(grid, line),
                             extrapolated=fit["extrapolated"])


def _fmt(e: Estimate | dict, digits: int = 3) -> str:
    v, err = (e.value, e.err) if isinstance(e, Estimate) else (e["value"], e["err"])
    if v is None or not math.isfinite(v):
        return "-"
    if err is None or not math.isfinite(err):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}g} ± {err:.2g}"


def _render(console: Console, runs, labels, per_temperature, fit, output: Path) -> None:
    columns = [(label, r.temperature_K, r) for r, label in zip(runs, labels)]
    columns += [(f"mean of {t['n_replicas']}", t["temperature_K"], t) for t in per_temperature if t["n_replicas"] > 1]
    table = Table(title=f"{runs[0].settings.species if runs else ''}-ion transport")
    table.add_column("quantity")
    for label, temp, _ in columns:
        table.add_column(f"{label}\n{temp:g} K", justify="right")
    get = lambda c, key: c[key] if isinstance(c, dict) else getattr(c, key)  # noqa: E731
    rows = [("ions", lambda c: str(c.n_ions) if not isinstance(c, dict) else ""),
            ("fit window (ps)", lambda c: "" if isinstance(c, dict) else f"{c.window_fs[0] / 1000:.3g}–{c.window_fs[1] / 1000:.3g}"),
            ("D_self (cm²/s)", lambda c: _fmt(get(c, "D_self"))), ("D_σ (cm²/s)", lambda c: _fmt(get(c, "D_sigma"))),
            ("Haven ratio", lambda c: _fmt(get(c, "haven_ratio"))), ("σ (mS/cm)", lambda c: _fmt(get(c, "sigma"))),
            ("σ tracer, H_R=1 (mS/cm)", lambda c: _fmt(get(c, "sigma_tracer")))]
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
            pt.add_row(f"{p['temperature_K']:g}", _fmt(p), p["source"])
        console.print(pt)
    if fit is not None:
        ext = fit["extrapolated"]
        console.print(f"Arrhenius ({fit['fit']}, {fit['n_points']} points): Eₐ = {_fmt(fit['Ea'], 3)} eV; "
                      f"{fit['quantity']}({ext['temperature_K']:g} K) = {ext['value']:.3g} {ext['unit']} "
                      + (f"(95% CI {ext['ci_low']:.3g}–{ext['ci_high']:.3g})" if math.isfinite(ext["ci_low"])
                         else "(no error bars: two points without errors fix the line exactly)"))
    console.print(f"wrote {output}/results.json and CSV/PNG files")
