"""Analysis outputs: results.json, CSV tables, and the Arrhenius points read back from them.

results.json is the stable, machine-readable record of `cathodeml analyze`: every quantity is
{"value", "err", "unit"} so a later run (or another program) never has to guess units or drop
uncertainties.  Earlier results and plain CSV tables (columns T, D, D_err; optionally sigma,
sigma_err) are read back as Arrhenius points, so runs analysed at different times combine into
one fit.  Every file is written through `atomic_output`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.io.atomic import atomic_output

KIND = "analysis"
FORMAT_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ArrheniusPoint:
    """One temperature: T (K), D_self (cm²/s) and σ, σ_tracer (mS/cm) with standard errors
    (NaN when unknown), and where it came from."""

    temperature_K: float
    D: float
    D_err: float
    sigma: float = float("nan")
    sigma_err: float = float("nan")
    sigma_tracer: float = float("nan")
    sigma_tracer_err: float = float("nan")
    source: str = ""


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def results_json_text(results: dict) -> str:
    """The JSON text of a results dict (NaN/inf become null, numpy types become Python)."""
    return json.dumps(_clean({"kind": KIND, "format_version": FORMAT_VERSION, **results}), indent=2, ensure_ascii=False)


def write_results_json(path: str | os.PathLike, results: dict) -> None:
    """Write results.json atomically."""
    text = results_json_text(results)
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text + "\n", encoding="utf-8")


def write_csv(path: str | os.PathLike, columns: dict[str, np.ndarray], *, comment: str | None = None) -> None:
    """Write columns (name → 1-D array, equal lengths; names carry units, e.g. time_fs) as CSV."""
    names = list(columns)
    data = [np.asarray(columns[n]) for n in names]
    n = len(data[0]) if data else 0
    if any(len(d) != n for d in data):
        raise ValueError("CSV columns must have equal lengths")
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            if comment:
                fh.write(f"# {comment}\n")
            w = csv.writer(fh)
            w.writerow(names)
            for row in zip(*data):
                w.writerow([_cell(v) for v in row])


def _cell(v):
    if isinstance(v, (float, np.floating)):
        return "" if not math.isfinite(v) else f"{float(v):.10g}"
    return v


def _number(entry) -> tuple[float, float]:
    if entry is None:
        return float("nan"), float("nan")
    if isinstance(entry, dict):
        v, e = entry.get("value"), entry.get("err")
        return (float("nan") if v is None else float(v)), (float("nan") if e is None else float(e))
    return float(entry), float("nan")


def read_arrhenius_points(path: str | os.PathLike) -> list[ArrheniusPoint]:
    """Arrhenius points from an earlier results.json (one per run) or a CSV table with columns
    T (K), D (cm²/s), D_err and optionally sigma, sigma_err (mS/cm)."""
    path = Path(path)
    if not path.exists():
        raise CathodemlError(f"{path}: no such file")
    if path.suffix.lower() == ".json":
        return _points_from_json(path)
    return _points_from_csv(path)


def _points_from_json(path: Path) -> list[ArrheniusPoint]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputFormatError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != KIND or not isinstance(data.get("runs"), list):
        raise InputFormatError(f"{path}: not a cathodeml analysis results.json (no kind='analysis' with runs)")
    points = []
    for run in data["runs"]:
        t, _ = _number(run.get("temperature_K"))
        d, de = _number(run.get("D_self"))
        s, se = _number(run.get("sigma"))
        st, ste = _number(run.get("sigma_tracer"))
        points.append(ArrheniusPoint(t, d, de, s, se, st, ste, source=f"{path}:{run.get('file', '')}"))
    return points


def _points_from_csv(path: Path) -> list[ArrheniusPoint]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(line for line in fh if not line.lstrip().startswith("#")) if r]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: not a readable CSV table ({exc})") from exc
    if not rows:
        raise InputFormatError(f"{path}: empty table; expected columns T, D, D_err")
    header = [h.strip() for h in rows[0]]
    lower = {h.lower().split("(")[0].strip(): k for k, h in enumerate(header)}
    aliases = {"t": ("t", "t_k", "temperature", "temperature_k"), "d": ("d", "d_cm2_s", "d_self"),
               "d_err": ("d_err", "derr", "d_self_err"), "sigma": ("sigma", "sigma_ms_cm"),
               "sigma_err": ("sigma_err",)}
    col = {}
    for key, names in aliases.items():
        for n in names:
            if n in lower:
                col[key] = lower[n]
                break
    if not {"t", "d", "d_err"} <= set(col):
        raise InputFormatError(f"{path}: columns {header}; a table needs T, D and D_err (and optionally sigma, sigma_err)")
    points = []
    for line, row in enumerate(rows[1:], start=2):
        try:
            vals = {k: float(row[i]) if i < len(row) and row[i].strip() else float("nan") for k, i in col.items()}
        except ValueError as exc:
            raise InputFormatError(f"{path} line {line}: not a number ({exc})") from exc
        points.append(ArrheniusPoint(vals["t"], vals["d"], vals["d_err"], vals.get("sigma", float("nan")),
                                     vals.get("sigma_err", float("nan")), source=f"{path}:{line}"))
    return points
