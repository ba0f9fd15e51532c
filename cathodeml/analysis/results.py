"""From per-trajectory analyses to the record `cathodeml analyze` writes.

`analyze_trajectory` gives one `RunAnalysis` per file; what a study reports is one value per
temperature and the Arrhenius line through them.  This module does those two steps — replicas
(runs within 0.5 K of each other) merged into one mean per temperature, then the fit of ln D or
ln σT against 1/T over those means and any earlier points (tables, older results.json) — and
lays the outcome out as the results.json schema, CSV tables and figures.  It is the library
behind the command: a script that calls `summarize_analysis` and `write_analysis` on the same
runs writes the same files as `cathodeml analyze`, and the command only parses options, opens
the trajectories and renders the tables.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from cathodeml import __version__
from cathodeml.analysis import plots
from cathodeml.analysis.arrhenius import ArrheniusFit, arrhenius_fit
from cathodeml.analysis.pipeline import D_UNIT, SIGMA_UNIT, RunAnalysis
from cathodeml.analysis.transport import Estimate, combine_replicas, haven_ratio
from cathodeml.errors import CathodemlError
from cathodeml.io.results import ArrheniusPoint, write_csv, write_results_json

# fit kind → (ArrheniusPoint attribute, fit Q·T rather than Q, axis label, unit of Q)
ARRHENIUS_FITS = {"lnD": ("D", False, "D_self (cm²/s)", D_UNIT),
                  "lnsigmaT": ("sigma", True, "σ (mS/cm)", SIGMA_UNIT),
                  "lnsigmaT-tracer": ("sigma_tracer", True, "σ tracer (mS/cm)", SIGMA_UNIT)}

REPLICA_TOLERANCE_K = 0.5  # runs this close in temperature are replicas of one state point


def check_fit_kind(kind: str) -> None:
    """Raise a CathodemlError unless `kind` names an Arrhenius fit (a key of ARRHENIUS_FITS)."""
    if kind not in ARRHENIUS_FITS:
        raise CathodemlError(f"--arrhenius-fit {kind!r}: choose one of {', '.join(ARRHENIUS_FITS)}")


@dataclasses.dataclass(frozen=True)
class TemperatureMean:
    """The runs at one temperature (K) merged: D_self, D_σ (cm²/s), Haven ratio, σ, σ_tracer
    (mS/cm) as Estimates; one run is taken as it is, replicas through `combine_replicas`."""

    temperature_K: float
    n_replicas: int
    D_self: Estimate
    D_sigma: Estimate
    haven_ratio: Estimate
    sigma: Estimate
    sigma_tracer: Estimate
    files: tuple[str, ...]

    def to_dict(self) -> dict:
        """The entry of results.json["temperatures"]."""
        return {"temperature_K": {"value": self.temperature_K, "err": None, "unit": "K"},
                "n_replicas": self.n_replicas,
                **{k: getattr(self, k).to_dict() for k in ("D_self", "D_sigma", "haven_ratio", "sigma", "sigma_tracer")},
                "files": list(self.files)}

    def arrhenius_point(self) -> ArrheniusPoint:
        """This temperature as a point of the Arrhenius fit (D cm²/s, σ mS/cm, with errors)."""
        return ArrheniusPoint(self.temperature_K, self.D_self.value, self.D_self.err, self.sigma.value, self.sigma.err,
                              self.sigma_tracer.value, self.sigma_tracer.err, source=",".join(self.files))


def merge_replicas(runs: Sequence[RunAnalysis]) -> list[TemperatureMean]:
    """One `TemperatureMean` per temperature, sorted by T: runs within REPLICA_TOLERANCE_K of the
    first run seen at a temperature join it."""
    groups: dict[float, list] = {}
    for r in runs:
        key = next((k for k in groups if abs(k - r.temperature_K) <= REPLICA_TOLERANCE_K), r.temperature_K)
        groups.setdefault(key, []).append(r)
    out = []
    for t, members in sorted(groups.items()):
        if len(members) == 1:
            m = members[0]
            d_self, d_sigma, h, s, st = m.D_self, m.D_sigma, m.haven_ratio, m.sigma, m.sigma_tracer
        else:
            d_self = combine_replicas([m.D_self for m in members])
            d_sigma = combine_replicas([m.D_sigma for m in members])
            h = haven_ratio(d_self, d_sigma)  # of the merged D's: a mean of noisy ratios would be biased
            s = combine_replicas([m.sigma for m in members])
            st = combine_replicas([m.sigma_tracer for m in members])
        out.append(TemperatureMean(t, len(members), d_self, d_sigma, h, s, st, tuple(m.path for m in members)))
    return out


def run_labels(runs: Sequence[RunAnalysis]) -> list[str]:
    """A file-name label per run (traj_600K for traj_600K.h5), numbered when names repeat."""
    labels, seen = [], defaultdict(int)
    for r in runs:
        stem = Path(r.path).name.removesuffix(".gz").rsplit(".", 1)[0] or Path(r.path).name
        seen[stem] += 1
        labels.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return labels


def arrhenius_columns(points: Sequence[ArrheniusPoint], kind: str):
    """(T K, Q, δQ, fit Q·T?, unit of Q) of the fitted quantity of `kind` over `points`."""
    attr, times_t, _, unit = ARRHENIUS_FITS[kind]
    t = np.array([p.temperature_K for p in points])
    q = np.array([getattr(p, attr) for p in points])
    e = np.array([getattr(p, attr + "_err") for p in points])
    return t, q, e, times_t, unit


@dataclasses.dataclass(frozen=True)
class ArrheniusResult:
    """The fit of `kind` over some points and its results.json record (Ea eV, prefactor,
    value extrapolated to a temperature with its CI, the points in their units)."""

    kind: str
    fit: ArrheniusFit
    record: dict


def fit_arrhenius_points(points: Sequence[ArrheniusPoint], kind: str = "lnD",
                         at_K: float = 300.0) -> ArrheniusResult | None:
    """The Arrhenius fit of `kind` (a key of ARRHENIUS_FITS) extrapolated to `at_K` (K); None
    when the points span fewer than two temperatures (0.1 K apart)."""
    check_fit_kind(kind)
    if len({round(p.temperature_K, 1) for p in points}) < 2:
        return None
    t, q, e, times_t, unit = arrhenius_columns(points, kind)
    if not np.all(np.isfinite(q)):
        missing = [p.source for p, v in zip(points, q) if not math.isfinite(v)]
        raise CathodemlError(f"--arrhenius-fit {kind} needs {ARRHENIUS_FITS[kind][0]} for every point; "
                             f"missing for {', '.join(missing)}")
    fit = arrhenius_fit(t, q, e, times_T=times_t)
    q0, q0_err = fit.prefactor
    ext = fit.extrapolate(at_K)
    record = {"fit": kind, "quantity": ARRHENIUS_FITS[kind][0], "n_points": fit.n_points, "weighted": fit.weighted,
              "Ea": Estimate(fit.activation_energy_eV, fit.activation_energy_err_eV, "eV").to_dict(),
              "prefactor": {"value": q0, "err": q0_err, "unit": unit + (" K" if times_t else "")},
              "extrapolated": {"temperature_K": at_K, "value": ext["value"], "err": ext["err"], "unit": unit,
                               "ci_low": ext["ci_low"], "ci_high": ext["ci_high"], "confidence": ext["confidence"]},
              "points": [{"temperature_K": p.temperature_K, "value": v, "err": er, "unit": unit, "source": p.source}
                         for p, v, er in zip(points, q, e)]}
    return ArrheniusResult(kind, fit, record)


def run_record(r: RunAnalysis, label: str) -> dict:
    """The entry of results.json["runs"] for one trajectory: every quantity {value, err, unit}."""
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


@dataclasses.dataclass(frozen=True)
class TransportResults:
    """Everything `cathodeml analyze` reports: the runs with their labels, one mean per
    temperature, the Arrhenius points (those means, then the earlier points) and the fit."""

    species: str
    charge: float
    runs: list[RunAnalysis]
    labels: list[str]
    temperatures: list[TemperatureMean]
    points: list[ArrheniusPoint]
    arrhenius: ArrheniusResult | None

    def to_dict(self) -> dict:
        """The results.json record (`io.results.write_results_json` adds kind and format_version)."""
        fit = None if self.arrhenius is None else self.arrhenius.record
        return {"cathodeml_version": __version__, "species": self.species, "charge": self.charge,
                "Ea": None if fit is None else fit["Ea"],
                "runs": [run_record(r, label) for r, label in zip(self.runs, self.labels)],
                "temperatures": [t.to_dict() for t in self.temperatures],
                "arrhenius": fit}


def summarize_analysis(runs: Sequence[RunAnalysis], earlier_points: Sequence[ArrheniusPoint] = (), *,
                       species: str = "Li", charge: float = 1.0, fit: str = "lnD",
                       at_K: float = 300.0) -> TransportResults:
    """Merge replicas, add `earlier_points` (from tables or earlier results.json) and fit
    Arrhenius (`fit` a key of ARRHENIUS_FITS, extrapolated to `at_K` K).  species and charge
    (the mobile ion, Z) are recorded as given, so a fit over tables alone still names its ion."""
    runs = list(runs)
    temperatures = merge_replicas(runs)
    points = [t.arrhenius_point() for t in temperatures] + list(earlier_points)
    return TransportResults(species, charge, runs, run_labels(runs), temperatures, points,
                            fit_arrhenius_points(points, fit, at_K))


def format_estimate(e: Estimate | dict, digits: int = 3) -> str:
    """'v ± err' with `digits` significant figures for v and 2 for err; '-' when v is unknown."""
    v, err = (e.value, e.err) if isinstance(e, Estimate) else (e["value"], e["err"])
    if v is None or not math.isfinite(v):
        return "-"
    if err is None or not math.isfinite(err):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}g} ± {err:.2g}"


def write_analysis(output: str | os.PathLike, results: TransportResults, *, figures: bool = True) -> None:
    """Write results.json, msd_<label>.csv, rdf.csv, arrhenius.csv and (with `figures`) the PNGs
    into the folder `output` (created if missing); every file atomically."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    _write_tables(output, results)
    if figures:
        _write_figures(output, results)
    write_results_json(output / "results.json", results.to_dict())


def _write_tables(output: Path, results: TransportResults) -> None:
    runs, labels, points, fit = results.runs, results.labels, results.points, results.arrhenius
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
        # runs with different cells have different r grids: one table, shorter columns padded
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
            comment=None if fit is None else f"fit {fit.kind}: Ea = {format_estimate(fit.record['Ea'], 4)} eV")


def _write_figures(output: Path, results: TransportResults) -> None:
    runs, labels, fit = results.runs, results.labels, results.arrhenius
    if runs:
        plots.plot_msd(output / "msd.png", [
            {"label": f"{label} ({r.temperature_K:g} K)", "time_fs": r.time_fs, "self": r.msd_self.sum(axis=1),
             "distinct": r.msd_distinct.sum(axis=1), "window_fs": r.window_fs} for r, label in zip(runs, labels)])
    pairs = sorted({pair for r in runs for pair in r.rdf})
    for a, b in pairs:
        plots.plot_rdf(output / f"rdf_{a}-{b}.png", f"{a}-{b}", [
            {"label": f"{label} ({r.temperature_K:g} K)", **r.rdf[(a, b)]} for r, label in zip(runs, labels) if (a, b) in r.rdf])
    if fit is not None:
        t, q, e, _, _ = arrhenius_columns(results.points, fit.kind)
        f = fit.fit
        extrapolated = fit.record["extrapolated"]
        grid = np.linspace(min(t.min(), extrapolated["temperature_K"]), t.max(), 100)
        line = np.exp(f.intercept + f.slope / grid) / (grid if f.times_T else 1.0)
        plots.plot_arrhenius(output / "arrhenius.png", t, q, e, ylabel=ARRHENIUS_FITS[fit.kind][2],
                             fit_line=(grid, line), extrapolated=extrapolated)
