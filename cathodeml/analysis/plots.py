"""Figures of `cathodeml analyze`: MSD self/distinct, Arrhenius plot with its fit, RDF overlays.

Matplotlib with the non-interactive Agg backend (no display needed on clusters); each function
takes plain arrays, draws one figure and saves it through `atomic_output`, so a failed plot never
leaves a truncated PNG.  Styling is deliberately plain: these are working figures, and the CSV
tables next to them hold the numbers for publication plots.
"""

from __future__ import annotations

import os

import numpy as np

from cathodeml.io.atomic import atomic_output


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> None:
    plt = _pyplot()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)


def plot_msd(path: str | os.PathLike, curves: list[dict]) -> None:
    """MSD_self (left) and MSD_distinct (right) against time in ps, one line per run.

    curves: [{"label", "time_fs" [T], "self" [T] Å², "distinct" [T] Å², "window_fs" (start, end)}].
    """
    plt = _pyplot()
    fig, (ax_s, ax_d) = plt.subplots(1, 2, figsize=(10, 4))
    for c in curves:
        t = np.asarray(c["time_fs"]) / 1000.0
        line, = ax_s.plot(t, c["self"], label=c["label"])
        ax_d.plot(t, c["distinct"], color=line.get_color(), label=c["label"])
        if c.get("window_fs"):
            ax_s.axvspan(c["window_fs"][0] / 1000, c["window_fs"][1] / 1000, color=line.get_color(), alpha=0.08)
    ax_s.set(xlabel="time (ps)", ylabel="MSD self (Å²)", title="self")
    ax_d.axhline(0.0, color="grey", lw=0.8)
    ax_d.set(xlabel="time (ps)", ylabel="MSD distinct (Å²)", title="distinct = total − self")
    ax_s.legend(fontsize=8)
    _save(fig, path)


def plot_arrhenius(path: str | os.PathLike, temperature_k, values, errors, *, ylabel: str,
                   fit_line: tuple[np.ndarray, np.ndarray] | None = None, extrapolated: dict | None = None) -> None:
    """log Q against 1000/T (K⁻¹) with error bars; fit_line (T [K], Q) drawn through; the
    extrapolated point {"temperature_K", "value", "ci_low", "ci_high"} marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    t = np.asarray(temperature_k, dtype=float)
    ax.errorbar(1000.0 / t, values, yerr=np.nan_to_num(np.asarray(errors, dtype=float)), fmt="o", capsize=3, label="runs")
    if fit_line is not None:
        ax.plot(1000.0 / fit_line[0], fit_line[1], "-", label="Arrhenius fit")
    if extrapolated is not None:
        v = extrapolated["value"]
        ax.errorbar([1000.0 / extrapolated["temperature_K"]], [v],
                    yerr=[[v - extrapolated["ci_low"]], [extrapolated["ci_high"] - v]], fmt="s", capsize=3,
                    label=f"{extrapolated['temperature_K']:g} K (95% CI)")
    ax.set_yscale("log")
    ax.set(xlabel="1000/T (K⁻¹)", ylabel=ylabel)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_rdf(path: str | os.PathLike, pair: str, curves: list[dict]) -> None:
    """g(r) (left axis) and running coordination number (right axis) for one pair, overlaying
    several runs: curves [{"label", "r" [n] Å, "g" [n], "cn" [n]}]."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax_cn = ax.twinx()
    for c in curves:
        line, = ax.plot(c["r"], c["g"], label=c["label"])
        ax_cn.plot(c["r"], c["cn"], "--", color=line.get_color(), lw=0.8)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set(xlabel="r (Å)", ylabel=f"g(r) {pair}", title=pair)
    ax_cn.set_ylabel("coordination number (dashed)")
    ax.legend(fontsize=8)
    _save(fig, path)
