"""A one-page markdown summary of a run of the chain, built from the JSON files the commands wrote.

Why it looks like this: every number a user cares about at the end of the chain (energy and force
errors, D, σ, Haven ratio, Eₐ) is already in machine-readable files — `test_results.json` from
`cathodeml test` and `results.json` from `cathodeml analyze` — so the summary recomputes nothing.
It only reads those dicts and lays them out, with relative links to the figures next to them, so
the page stays true to the files it links and can be regenerated at any time.  Several test
results side by side (e.g. with and without virtual spin atoms) become columns of one table, which
is the comparison the spin paper makes.  Pure functions over dicts; the CLI command reads and writes.

Units: energies meV/atom, forces meV/Å (as `cathodeml test` writes them), D cm²/s, σ mS/cm,
Eₐ eV, temperatures K.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

from cathodeml.errors import CathodemlError

TEST_RESULTS = "test_results.json"
ANALYSIS_RESULTS = "results.json"
PARITY_FIGURES = ("parity_energy.png", "parity_force.png")


@dataclasses.dataclass(frozen=True)
class TestRun:
    """One `cathodeml test` output: a label for the table column, its JSON dict, and the folder
    holding its parity plots."""

    label: str
    results: dict
    folder: Path


@dataclasses.dataclass(frozen=True)
class AnalysisRun:
    """One `cathodeml analyze` output: its results.json dict and the folder with the CSV/PNG files."""

    results: dict
    folder: Path


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CathodemlError(f"{path}: no such file; run `cathodeml {what}` first or fix the path") from None
    except (OSError, ValueError) as exc:
        raise CathodemlError(f"{path}: not readable JSON ({exc}); point to the file `cathodeml {what}` wrote") from exc
    if not isinstance(data, dict):
        raise CathodemlError(f"{path}: not a `cathodeml {what}` result (a JSON object was expected)")
    return data


def _resolve(path: Path, default_name: str) -> Path:
    return path / default_name if path.is_dir() else path


def load_test_run(spec: str) -> TestRun:
    """A test result from "LABEL=PATH" or "PATH", where PATH is the `cathodeml test -o` folder or its
    test_results.json; the label defaults to the folder name."""
    label, _, path_text = spec.rpartition("=") if "=" in spec else ("", "", spec)
    path = _resolve(Path(path_text), TEST_RESULTS)
    data = _read_json(path, "test")
    if "overall" not in data or "energy" not in data.get("overall", {}):
        raise CathodemlError(f"{path}: not a `cathodeml test` result (no 'overall' energy errors)")
    return TestRun(label=label or path.parent.name or "model", results=data, folder=path.parent)


def load_analysis_run(path: Path) -> AnalysisRun:
    """An analysis result from the `cathodeml analyze -o` folder or its results.json."""
    path = _resolve(Path(path), ANALYSIS_RESULTS)
    data = _read_json(path, "analyze")
    if data.get("kind") != "analysis" or not isinstance(data.get("runs"), list):
        raise CathodemlError(f"{path}: not a `cathodeml analyze` results.json (kind 'analysis' with 'runs' expected)")
    return AnalysisRun(results=data, folder=path.parent)


# ------------------------------------------------------------------------------------- formatting


def format_estimate(entry: dict | float | None, digits: int = 3) -> str:
    """"value ± err" from a {"value", "err"} dict (or a bare number) with `digits` significant
    digits; "–" when the value is missing or not finite."""
    if isinstance(entry, dict):
        value, err = entry.get("value"), entry.get("err")
    else:
        value, err = entry, None
    if value is None or not math.isfinite(float(value)):
        return "–"
    if err is None or not math.isfinite(float(err)):
        return f"{float(value):.{digits}g}"
    return f"{float(value):.{digits}g} ± {float(err):.2g}"


def _link(target: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(target, page_dir)).as_posix()


def _errors(block: dict | None, key: str) -> str:
    if not block or key not in block:
        return "–"
    e = block[key]
    if e.get("rmse") is None or not e.get("n", 1):  # no labels of that kind (energy-only data: no forces)
        return "–"
    return f"{e['rmse']:.2f} / {e['mae']:.2f}"


# ------------------------------------------------------------------------------------- sections


def accuracy_section(tests: list[TestRun], page_dir: Path) -> list[str]:
    """Markdown lines: overall and per-system RMSE/MAE (one column per model), errors per spin
    configuration, and the parity plots side by side."""
    head = "| | " + " | ".join(t.label for t in tests) + " |"
    rule = "|---|" + "---:|" * len(tests)
    lines = ["## Model accuracy", "",
             "RMSE / MAE of `cathodeml test` on the labelled data (energies meV/atom, forces meV/Å).", "",
             head, rule,
             "| frames | " + " | ".join(str(t.results["overall"].get("frames", "–")) for t in tests) + " |",
             "| spin | " + " | ".join(_spin_text(t.results.get("spin")) for t in tests) + " |",
             "| energy (all) | " + " | ".join(_errors(t.results["overall"], "energy") for t in tests) + " |",
             "| force (all) | " + " | ".join(_errors(t.results["overall"], "force") for t in tests) + " |"]
    for name in _ordered_union(s["name"] for t in tests for s in t.results.get("systems", [])):
        per = [next((s for s in t.results.get("systems", []) if s["name"] == name), None) for t in tests]
        lines.append(f"| energy {name} | " + " | ".join(_errors(s, "energy") for s in per) + " |")
        lines.append(f"| force {name} | " + " | ".join(_errors(s, "force") for s in per) + " |")
    configs = _ordered_union(c for t in tests for c in t.results.get("spin_configurations", {}))
    if configs:
        lines += ["", "Energy RMSE / MAE (meV/atom) per spin configuration (atoms × |moment| μB):", "",
                  head.replace("| |", "| spin configuration |", 1), rule]
        for c in configs:
            lines.append(f"| {c} | " + " | ".join(
                _errors(t.results.get("spin_configurations", {}).get(c), "energy") for t in tests) + " |")
    figures = [(t, [t.folder / f for f in PARITY_FIGURES if (t.folder / f).is_file()]) for t in tests]
    if any(files for _, files in figures):
        lines += ["", "Parity plots:", "", head, rule]
        for name in PARITY_FIGURES:
            if not any((t.folder / name).is_file() for t in tests):
                continue
            cells = [f"![{t.label} {name}]({_link(t.folder / name, page_dir)})" if (t.folder / name).is_file() else "–"
                     for t in tests]
            lines.append(f"| {name.removesuffix('.png').replace('_', ' ')} | " + " | ".join(cells) + " |")
    return lines + [""]


def transport_section(analysis: AnalysisRun, page_dir: Path) -> list[str]:
    """Markdown lines: per-temperature D_self, D_σ, Haven ratio, σ, the Arrhenius fit, and links to
    the analysis figures and tables."""
    r = analysis.results
    species = r.get("species", "Li")
    lines = [f"## {species}-ion transport", "",
             "| run | T (K) | ions | frames | fit window (ps) | D_self (cm²/s) | D_σ (cm²/s) | Haven ratio | σ (mS/cm) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for run in r["runs"]:
        window = run.get("fit_window", {})
        span = (f"{window['start']['value']:.3g}–{window['end']['value']:.3g}"
                if window.get("start") and window.get("end") else "–")
        lines.append(f"| {run.get('label', run.get('file', ''))} | {format_estimate(run['temperature_K'], 4)} | "
                     f"{run.get('n_ions', '–')} | {run.get('n_frames', '–')} | {span} | "
                     f"{format_estimate(run['D_self'])} | {format_estimate(run['D_sigma'])} | "
                     f"{format_estimate(run['haven_ratio'])} | {format_estimate(run['sigma'])} |")
    fit = r.get("arrhenius")
    lines.append("")
    if fit:
        ext = fit["extrapolated"]
        lines += [f"Arrhenius fit of {fit['fit']} over {fit['n_points']} temperatures: "
                  f"**Eₐ = {format_estimate(fit['Ea'])} eV**; {fit['quantity']}({ext['temperature_K']:g} K) = "
                  f"{format_estimate(ext)} {ext['unit']} (95% interval {ext['ci_low']:.3g}–{ext['ci_high']:.3g}).", ""]
    else:
        lines += ["No Arrhenius fit (fewer than two temperatures).", ""]
    files = sorted(p for p in analysis.folder.iterdir() if p.suffix in (".png", ".csv"))
    pictures = [p for p in files if p.suffix == ".png"]
    for p in pictures:
        lines += [f"![{p.stem}]({_link(p, page_dir)})", ""]
    tables = [p for p in files if p.suffix == ".csv"] + [analysis.folder / ANALYSIS_RESULTS]
    lines += ["Tables: " + ", ".join(f"[{p.name}]({_link(p, page_dir)})" for p in tables), ""]
    return lines


def summary_markdown(page: Path, *, title: str, tests: list[TestRun] = (), analysis: AnalysisRun | None = None,
                     notes: list[str] = (), files: list[Path] = ()) -> str:
    """The whole page (markdown) to be written at `page`; links are relative to its folder."""
    if not tests and analysis is None:
        raise CathodemlError("nothing to summarise: give --test and/or --analysis")
    page_dir = page.parent
    lines = [f"# {title}", ""]
    for note in notes:
        lines += [f"> {note}", ""]
    if tests:
        lines += accuracy_section(list(tests), page_dir)
    if analysis is not None:
        lines += transport_section(analysis, page_dir)
    if files:
        lines += ["## Files of the chain", ""]
        lines += [f"- [{p.name}]({_link(p, page_dir)})" for p in files]
        lines.append("")
    return "\n".join(lines)


def _spin_text(spin: dict | None) -> str:
    if not spin:
        return "no virtual atoms"
    eta = ", ".join(f"{el} η={spin['eta'][el]:g}" for el in spin.get("elements", []) if el in spin.get("eta", {}))
    return f"{spin.get('mode', '')}: {eta}"


def _ordered_union(items) -> list[str]:
    seen: dict[str, None] = {}
    for item in items:
        seen.setdefault(item, None)
    return list(seen)
