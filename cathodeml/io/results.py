"""Analysis outputs: results.json, CSV tables, and the Arrhenius points read back from them.

results.json is the stable, machine-readable record of `cathodeml analyze`: every quantity is
{"value", "err", "unit"} so a later run (or another program) never has to guess units or drop
uncertainties.  Earlier results and plain tables (T, D[, D_err] with or without a header row,
comma- or whitespace-separated; optionally sigma, sigma_err) are read back as Arrhenius points,
so runs analysed at different times, or D values from another code, combine into one fit.
Every file is written through `atomic_output`.
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


def strict_json_text(obj) -> str:
    """JSON that strict readers (jq, JavaScript) accept: NaN/inf become null, numpy types Python."""
    return json.dumps(_clean(obj), indent=2, ensure_ascii=False)


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
    """Arrhenius points from an earlier results.json (one per run, or the fitted points of a
    table-only analysis) or a table of T (K), D (cm²/s)[, D_err] (see `_points_from_csv`)."""
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
    fit = data.get("arrhenius")
    if not points and isinstance(fit, dict) and fit.get("quantity") in ("D", "sigma", "sigma_tracer"):
        # a table-only analysis has no runs: its fitted points are what it knows
        nan = float("nan")
        for p in fit.get("points") or []:
            v, e = _number(p)
            q = {"D": (nan, nan), "sigma": (nan, nan), "sigma_tracer": (nan, nan), fit["quantity"]: (v, e)}
            points.append(ArrheniusPoint(float(p["temperature_K"]), *q["D"], *q["sigma"], *q["sigma_tracer"],
                                         source=f"{path}:{p.get('source', '')}"))
    return points


# Column names a table may use (case-insensitive; a unit in brackets, "D (cm2/s)", is ignored).
TABLE_COLUMNS = {"t": ("t", "t_k", "temperature", "temperature_k"),
                 "d": ("d", "d_cm2_s", "d_self", "d_self_cm2_s"),
                 "d_err": ("d_err", "err", "derr", "d_err_cm2_s", "d_self_err", "d_self_err_cm2_s"),
                 "sigma": ("sigma", "sigma_ms_cm"), "sigma_err": ("sigma_err", "sigma_err_ms_cm"),
                 "sigma_tracer": ("sigma_tracer", "sigma_tracer_ms_cm"),
                 "sigma_tracer_err": ("sigma_tracer_err", "sigma_tracer_err_ms_cm")}
HEADERLESS_COLUMNS = {2: ("t", "d"), 3: ("t", "d", "d_err")}


def _split(line: str) -> list[str]:
    """Fields of one table line: comma-separated when it has a comma, else whitespace-separated."""
    return [f.strip() for f in next(csv.reader([line]))] if "," in line else line.split()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _points_from_csv(path: Path) -> list[ArrheniusPoint]:
    """A table of T (K), D (cm²/s)[, D_err] (and optionally sigma, sigma_err, sigma_tracer,
    sigma_tracer_err in mS/cm): a header row naming the columns, or no header and 2 (T, D) or 3
    (T, D, D_err) numeric columns; comma- or whitespace-separated; '#' starts a comment."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [(n, line.split("#", 1)[0].strip()) for n, line in enumerate(fh, start=1)]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: not a readable table ({exc})") from exc
    rows = [(n, _split(text)) for n, text in lines if text]
    if not rows:
        raise InputFormatError(f"{path}: empty table; expected columns T (K), D (cm²/s) and optionally D_err")
    first = rows[0][1]
    if all(_is_number(f) for f in first):
        if len(first) not in HEADERLESS_COLUMNS:
            raise InputFormatError(f"{path} line {rows[0][0]}: {len(first)} columns without a header; give 2 (T, D) "
                                   "or 3 (T, D, D_err), or a header row naming the columns")
        col = {key: i for i, key in enumerate(HEADERLESS_COLUMNS[len(first)])}
        data = rows
    else:
        lower = {h.lower().split("(")[0].strip(): k for k, h in reversed(list(enumerate(first)))}
        col = {key: next(lower[n] for n in names if n in lower)
               for key, names in TABLE_COLUMNS.items() if any(n in lower for n in names)}
        missing = [name for name, key in (("T", "t"), ("D", "d")) if key not in col]
        if missing:
            raise InputFormatError(f"{path}: header {first} has no {' or '.join(missing)} column; name them "
                                   "T (or T_K, temperature), D (or D_cm2_s) and optionally D_err (or err)")
        data = rows[1:]
        if not data:
            raise InputFormatError(f"{path}: a header but no rows of numbers")
    points = []
    for line, row in data:
        if len(row) > len(first):
            raise InputFormatError(f"{path} line {line}: {len(row)} columns where the table has {len(first)}")
        row = row + [""] * (len(first) - len(row))
        try:
            vals = {k: float(row[i]) if row[i] else float("nan") for k, i in col.items()}
        except ValueError as exc:
            raise InputFormatError(f"{path} line {line}: not a number ({exc})") from exc
        if not (math.isfinite(vals["t"]) and vals["t"] > 0):
            raise InputFormatError(f"{path} line {line}: T = {row[col['t']] or 'empty'}; temperatures must be "
                                   "positive, in K")
        if any(vals.get(k, 0.0) < 0 for k in ("d_err", "sigma_err", "sigma_tracer_err")):
            raise InputFormatError(f"{path} line {line}: a negative error bar; errors are standard errors (≥ 0)")
        nan = float("nan")
        points.append(ArrheniusPoint(vals["t"], vals["d"], vals.get("d_err", nan), vals.get("sigma", nan),
                                     vals.get("sigma_err", nan), vals.get("sigma_tracer", nan),
                                     vals.get("sigma_tracer_err", nan), source=f"{path}:{line}"))
    return points
