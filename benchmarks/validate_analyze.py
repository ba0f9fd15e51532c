"""Validate `cathodeml analyze` on a real AIMD trajectory against kinisi, pymatgen's
DiffusionAnalyzer and ASE (benchmark-only peers; never runtime dependencies).

    python benchmarks/validate_analyze.py [--xdatcar tests/data/trajectories/Li6PS5Cl_XDATCAR.gz]

The file is kinisi's own example (VASP AIMD of Li6PS5Cl, 140 frames 100 fs apart).  Compared:
the Li MSD curve and D* (kinisi 2.x: Bayesian GLS fit of the MSD with its covariance; pymatgen
DiffusionAnalyzer: OLS over its own window, if pymatgen-analysis-diffusion is installed) with
cathodeml on the same fit start (4 ps), and the partial RDFs with ASE's `get_rdf`.  Prints a
Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from cathodeml.analysis.pipeline import AnalysisSettings, analyze_trajectory, parse_fit_window
from cathodeml.io.trajectory import open_trajectory

ROOT = Path(__file__).resolve().parents[1]
DT_FS = 100.0  # 50 steps of 2 fs between stored frames
START_PS = 4.0


def cathodeml_runs(path: Path) -> dict:
    out = {}
    for label, window in (("auto window", "auto"), (f"{START_PS:g} ps → end", f"{START_PS:g}ps:T")):
        t = time.perf_counter()
        settings = AnalysisSettings(species="Li", fit_window=parse_fit_window(window), blocks=4)
        with open_trajectory(path) as traj:
            r = analyze_trajectory(traj, settings, temperature_k=600.0, timestep_fs=DT_FS)
        out[label] = (r, time.perf_counter() - t)
    return out


def kinisi_run(path: Path):
    try:
        import scipp as sc
        from kinisi.analyze import DiffusionAnalyzer
        from pymatgen.io.vasp.outputs import Xdatcar
    except ImportError as exc:
        return None, f"kinisi not available ({exc})"
    t = time.perf_counter()
    xd = Xdatcar(str(path))
    a = DiffusionAnalyzer.from_xdatcar(xd, specie="Li", time_step=2.0 * sc.Unit("fs"),
                                       step_skip=50 * sc.Unit("dimensionless"), progress=False)
    a.diffusion(start_dt=START_PS * sc.Unit("ps"), progress=False, random_state=np.random.RandomState(0))
    samples = np.asarray(a.D.values)
    return {"D": float(samples.mean()), "D_err": float(samples.std()), "dt_fs": np.asarray(a.dt.values),
            "msd": np.asarray(a.msd.values), "seconds": time.perf_counter() - t}, None


def pymatgen_run(path: Path):
    try:
        from pymatgen.analysis.diffusion.analyzer import DiffusionAnalyzer
        from pymatgen.io.vasp.outputs import Xdatcar
    except ImportError:
        return None, "pymatgen DiffusionAnalyzer not installed (pip install pymatgen-analysis-diffusion)"
    t = time.perf_counter()
    structures = Xdatcar(str(path)).structures
    da = DiffusionAnalyzer.from_structures(structures, "Li", 600, time_step=2, step_skip=50, smoothed=False)
    return {"D": da.diffusivity, "D_err": da.diffusivity_std_dev, "seconds": time.perf_counter() - t}, None


def rdf_check(path: Path) -> list[tuple[str, float, float]]:
    """Max |g_cathodeml − g_ASE| per pair over 20 frames (ASE normalises like pairs by N², so
    its g is scaled by N/(N−1) to compare)."""
    import ase.io
    from ase.geometry.rdf import get_rdf

    from cathodeml.analysis.rdf import RdfAccumulator

    frames = ase.io.read(str(path), index="::7", format="vasp-xdatcar")
    symbols = np.array(frames[0].get_chemical_symbols())
    pairs = [("Li", "S"), ("Li", "Cl"), ("P", "S"), ("Li", "Li")]
    acc = RdfAccumulator(symbols, pairs, r_max=8.0, n_bins=160)
    for f in frames:
        acc.add_frame(f.positions, f.cell[:])
    ours = acc.result()
    rows = []
    for a, b in pairs:
        theirs = np.mean([get_rdf(f, 8.0, 160, elements=(a, b), no_dists=True) for f in frames], axis=0)
        n = np.count_nonzero(symbols == a)
        scale = n / (n - 1) if a == b else 1.0
        rows.append((f"{a}-{b}", float(np.max(np.abs(ours[(a, b)]["g"] - scale * theirs))),
                     float(np.max(ours[(a, b)]["g"]))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--xdatcar", type=Path, default=ROOT / "tests/data/trajectories/Li6PS5Cl_XDATCAR.gz")
    args = ap.parse_args()
    ours = cathodeml_runs(args.xdatcar)
    kin, kin_note = kinisi_run(args.xdatcar)
    pmg, pmg_note = pymatgen_run(args.xdatcar)

    print("| tool | fit | D* (cm²/s) | ± | time (s) |")
    print("|---|---|---|---|---|")
    for label, (r, sec) in ours.items():
        w = r.window_fs
        print(f"| cathodeml (OLS, block+ion errors) | {w[0] / 1000:.2f}–{w[1] / 1000:.2f} ps ({label}) | "
              f"{r.D_self.value:.3e} | {r.D_self.err:.1e} | {sec:.2f} |")
    if kin:
        print(f"| kinisi {__import__('kinisi').__version__} (Bayesian GLS) | {START_PS:g}–14.0 ps | {kin['D']:.3e} | "
              f"{kin['D_err']:.1e} | {kin['seconds']:.2f} |")
    else:
        print(f"| kinisi | — | {kin_note} | | |")
    if pmg:
        print(f"| pymatgen DiffusionAnalyzer (smoothed=False) | its own | {pmg['D']:.3e} | {pmg['D_err']:.1e} | "
              f"{pmg['seconds']:.2f} |")
    else:
        print(f"| pymatgen DiffusionAnalyzer | — | {pmg_note} | | |")

    if kin:
        r = ours[f"{START_PS:g} ps → end"][0]
        t_ours = r.time_fs
        m_ours = r.msd_self.sum(axis=1)
        # kinisi prepends a copy of frame 0, so its interval k·100 fs spans frames (k−1 → …); compare on
        # each tool's own time axis by interpolation, over the fit range.
        sel = (kin["dt_fs"] >= 1000) & (kin["dt_fs"] <= t_ours[-1])
        rel = np.abs(np.interp(kin["dt_fs"][sel], t_ours, m_ours) / kin["msd"][sel] - 1)
        print(f"\nMSD_self(Li) vs kinisi over 1–{t_ours[-1] / 1000:.1f} ps: max relative difference {rel.max():.3%}, "
              f"median {np.median(rel):.3%}")
        z = (r.D_self.value - kin["D"]) / np.hypot(r.D_self.err, kin["D_err"])
        print(f"D* difference cathodeml − kinisi on the same start: {z:+.2f} combined σ")
    print("\n| RDF pair | max |g_cathodeml − g_ASE| | max g |")
    print("|---|---|---|")
    for pair, diff, gmax in rdf_check(args.xdatcar):
        print(f"| {pair} | {diff:.2e} | {gmax:.2f} |")


if __name__ == "__main__":
    main()
