"""Pick frames of an MD trajectory for new DFT calculations, by the model deviation of an ensemble.

Frames whose max force deviation (OUTPUT.model_devi.out of `md --models`, or any DeePMD-kit /
LAMMPS model_devi.out) lies in [lo, hi) are candidates, as in DP-GEN: below lo the ensemble
agrees (the model knows the region), at or above hi it is too far off to be worth a DFT
calculation.  Of the candidates, N diverse ones are kept by farthest-point sampling on per-frame
pair-distance histograms, starting from the most deviating one.  Each is written as DIR/NNN/POSCAR
(VASP 5, Cartesian, atoms wrapped into the cell) and DIR/selected.json records its provenance:
trajectory, frame, step, time and deviation.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cathodeml.commands.options import AsJson, Quiet
from cathodeml.errors import CathodemlError


def select(
    trajectory: Path = typer.Argument(..., metavar="TRAJ", help="H5MD trajectory of `cathodeml md`."),
    lo: float = typer.Option(0.05, "--lo", help="Trust level low, eV/Å: frames with max_devi_f below it are accurate."),
    hi: float = typer.Option(0.25, "--hi", help="Trust level high, eV/Å: frames at or above it are failed, not candidates."),
    n: int = typer.Option(50, "-n", "--number", min=1, help="How many candidates to keep (at most)."),
    output: Path = typer.Option(Path("candidates"), "-o", "--output", help="Folder for NNN/POSCAR and selected.json."),
    devi: Path = typer.Option(None, "--devi", help="model_devi.out (default: TRAJ with suffix .model_devi.out)."),
    rcut: float = typer.Option(6.0, "--rcut", help="Range of the pair-distance fingerprints, Å."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    quiet: Quiet = False,
    as_json: AsJson = False,
) -> None:
    """Candidate frames between two model-deviation trust levels, diverse, as POSCARs for VASP."""
    import numpy as np
    from ase import Atoms
    from ase.io import write

    from cathodeml import ensemble as E
    from cathodeml.io.trajectory import read_trajectory

    if output.exists() and not overwrite:
        raise CathodemlError(f"{output} exists: pass --overwrite to replace it")
    devi_path = devi or trajectory.with_suffix(".model_devi.out")
    rows = E.read_model_devi(devi_path)
    levels = E.trust_levels(rows[:, 4], lo, hi)
    if not trajectory.exists():
        raise CathodemlError(f"{trajectory}: no such trajectory")
    t = read_trajectory(trajectory, velocities=False)
    frame_of = {int(s): i for i, s in enumerate(t["step"])}
    missing = [int(s) for s in rows[:, 0] if int(s) not in frame_of]
    if missing:
        raise CathodemlError(f"{devi_path} has steps the trajectory lacks (first {missing[0]}); give the "
                             "model_devi.out of this trajectory")
    candidates = np.flatnonzero(levels == 1)
    type_map = list(t["type_map"])
    frames = [frame_of[int(rows[c, 0])] for c in candidates]
    picked = []
    if len(candidates):
        fps = E.structure_fingerprints(t["positions"][frames], t["cells"][frames], t["species"], len(type_map), rcut)
        order = E.farthest_point_selection(fps, n, first=int(np.argmax(rows[candidates, 4])))
        picked = [int(candidates[i]) for i in order]

    symbols = [type_map[s] for s in t["species"]]
    records = []
    parent = output.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=parent))  # renamed into place when whole
    try:
        for k, c in enumerate(picked):
            f = frame_of[int(rows[c, 0])]
            atoms = Atoms(symbols, positions=t["positions"][f], cell=t["cells"][f], pbc=True)
            atoms.wrap()
            (staging / f"{k:03d}").mkdir()
            write(staging / f"{k:03d}" / "POSCAR", atoms, format="vasp", direct=False, sort=False)
            records.append({"folder": f"{k:03d}", "frame": f, "step": int(rows[c, 0]),
                            "time_fs": float(t["time"][f]) if t["time"] is not None else None,
                            "max_devi_f": float(rows[c, 4]), "devi_e": float(rows[c, 7])})
        summary = {"trajectory": str(trajectory), "model_devi": str(devi_path), "lo": lo, "hi": hi,
                   "frames": int(len(rows)), "accurate": int(np.sum(levels == 0)), "candidates": int(len(candidates)),
                   "failed": int(np.sum(levels == 2)), "selected": records, "output": str(output)}
        (staging / "selected.json").write_text(json.dumps(summary, indent=2))
        if output.exists():
            shutil.rmtree(output)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
    elif not quiet:
        table = Table("frames", "accurate", "candidates", "failed", "selected", title=f"model deviation {lo:g} ≤ ε < {hi:g} eV/Å")
        table.add_row(str(summary["frames"]), str(summary["accurate"]), str(summary["candidates"]), str(summary["failed"]),
                      str(len(records)))
        Console().print(table)
        Console().print(f"wrote {len(records)} POSCARs and selected.json to {output}", highlight=False)
