"""Ingest throughput: MB/s of OUTCAR text, cathodeml vs dpdata (+ pymatgen for the moments).

A large OUTCAR is built from a real one (tests/data/outcars) by repeating its ionic steps between
the original header and footer, so every byte is genuine VASP output.  Timed on the same plain
files, each tool once (the machine is shared; ratios are what matter):

  cathodeml parse    cathodeml.io.outcar.read_outcar: frames, energies, forces, virials, moments,
                     SCF flags, provenance (sha256 of the text)
  cathodeml ingest   the full `cathodeml ingest` command (parse + HDF5 write), --jobs 1 and N
  dpdata             dpdata.LabeledSystem(fmt="vasp/outcar"): cells, coords, energies, forces,
                     virials (no moments)
  pymatgen           pymatgen.io.vasp.Outcar: the moment parse dpdata lacks (final moments only)

Run:  python benchmarks/bench_ingest.py [--size-mb 100] [--jobs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "FeO (4 atoms, 28 steps, LORBIT=11)": ROOT / "tests/data/outcars/custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz",
    "LiNi2O4 (7 atoms, 5 steps, verbose)": ROOT / "tests/data/outcars/pmg_LiNi2O4_relax5_ispin2_v5.2.11.OUTCAR.gz",
}


def repeated_outcar(source: Path, size_bytes: float, repeat_shift: int = 0) -> bytes:
    """Header + the run's ionic steps repeated until ~size_bytes + footer (all real VASP text)."""
    text = gzip.decompress(source.read_bytes())
    first = re.search(rb"-{3,} Iteration", text).start()
    first = text.rfind(b"\n", 0, first) + 1
    last = text.rfind(b"free  energy   TOTEN")
    end = text.find(b"\n", text.find(b"energy(sigma->0)", last)) + 1
    head, steps, foot = text[:first], text[first:end], text[end:]
    k = max(1, int(size_bytes / len(steps))) + repeat_shift
    return head + steps * k + foot


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run_cli(args: list[str]) -> None:
    from cathodeml.cli import app

    try:
        app(args, standalone_mode=False)
    except SystemExit as exc:  # pragma: no cover
        if exc.code:
            raise


def bench_single(name: str, path: Path, with_pymatgen: bool) -> dict:
    import dpdata

    from cathodeml.io.outcar import read_outcar

    mb = path.stat().st_size / 1e6
    t_ours, run = timed(lambda: read_outcar(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_dp, ref = timed(lambda: dpdata.LabeledSystem(str(path), fmt="vasp/outcar"))
    keep = run.scf_converged
    assert ref.get_nframes() == keep.sum(), "frame counts differ from dpdata"
    assert np.allclose(ref["energies"], run.energies[keep], atol=1e-8), "energies differ from dpdata"
    row = {"file": name, "MB": round(mb, 1), "frames": run.n_frames, "atoms": run.n_atoms,
           "cathodeml_parse_s": t_ours, "dpdata_s": t_dp}
    if with_pymatgen:
        from pymatgen.io.vasp import Outcar

        t_pmg, out = timed(lambda: Outcar(str(path)))
        final = np.array([m["tot"] for m in out.magnetization])
        assert np.allclose(final, run.magmom[-1], atol=1e-9) or not run.has_moments[-1], "moments differ from pymatgen"
        row["pymatgen_s"] = t_pmg
    with tempfile.TemporaryDirectory() as tmp:
        t_ing, _ = timed(lambda: run_cli(["ingest", str(path), "-o", f"{tmp}/d.h5", "--quiet"]))
    row["cathodeml_ingest_s"] = t_ing
    return row


def bench_jobs(paths: list[Path], jobs: int) -> dict:
    import dpdata

    mb = sum(p.stat().st_size for p in paths) / 1e6
    row = {"files": len(paths), "MB": round(mb, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        for j in sorted({1, jobs}):
            t, _ = timed(lambda: run_cli(["ingest", *map(str, paths), "-o", f"{tmp}/d{j}.h5", "--jobs", str(j), "--quiet"]))
            row[f"cathodeml_ingest_jobs{j}_s"] = t
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, _ = timed(lambda: [dpdata.LabeledSystem(str(p), fmt="vasp/outcar") for p in paths])
    row["dpdata_s"] = t
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=100.0, help="size of each large OUTCAR (MB)")
    parser.add_argument("--jobs", type=int, default=2, help="jobs for the several-files run")
    parser.add_argument("--no-pymatgen", action="store_true", help="skip the pymatgen moment parse")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    results = {"single": [], "several": None}
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: imports (typer, rich, h5py) are paid once, not by the first timed run
        warm = next(iter(SOURCES.values()))
        run_cli(["ingest", str(warm), "-o", f"{tmp}/warm.h5", "--quiet"])
        for name, source in SOURCES.items():
            path = Path(tmp) / "OUTCAR"
            path.write_bytes(repeated_outcar(source, args.size_mb * 1e6))
            row = bench_single(name, path, not args.no_pymatgen)
            results["single"].append(row)
            path.unlink()
        source = next(iter(SOURCES.values()))
        paths = []
        for i in range(4):  # four different files (different repeat counts → different sha256)
            p = Path(tmp) / f"run{i}" / "OUTCAR"
            p.parent.mkdir()
            p.write_bytes(repeated_outcar(source, args.size_mb * 1e6 / 4, repeat_shift=i))
            paths.append(p)
        results["several"] = bench_jobs(paths, args.jobs)

    print("| file | MB | frames | cathodeml parse MB/s | cathodeml ingest MB/s | dpdata MB/s | pymatgen MB/s | parse ÷ dpdata | ingest ÷ (dpdata+pymatgen) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results["single"]:
        mb = r["MB"]
        pmg = r.get("pymatgen_s")
        peers = r["dpdata_s"] + (pmg or 0.0)
        print(f"| {r['file']} | {mb} | {r['frames']} | {mb / r['cathodeml_parse_s']:.0f} | {mb / r['cathodeml_ingest_s']:.0f} | "
              f"{mb / r['dpdata_s']:.1f} | {mb / pmg if pmg else float('nan'):.1f} | "
              f"{r['dpdata_s'] / r['cathodeml_parse_s']:.1f}× | {peers / r['cathodeml_ingest_s']:.1f}× |")
    s = results["several"]
    print()
    print("| several files | MB | " + " | ".join(k.replace("_s", " MB/s") for k in s if k.endswith("_s")) + " |")
    print("|---|---|" + "---|" * sum(k.endswith("_s") for k in s))
    print(f"| {s['files']} files | {s['MB']} | " + " | ".join(f"{s['MB'] / v:.0f}" for k, v in s.items() if k.endswith("_s")) + " |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
