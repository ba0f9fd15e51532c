"""Many VASP runs into one dataset: parsing in a process pool, the plan for adding to a file, and
automag's single-point tables.

OUTCARs are parsed independently, so a pool of worker processes reads them in parallel; the
result is put back in the order of the input list, so the dataset does not depend on which
worker finished first.  Workers are forked when that is safe (no other thread, no JAX runtime)
and started from a clean forkserver otherwise.  Appending never rewrites what is in the file: the
plan checks that the file is a plain dataset with the same energy label, keeps its type map
first, and lists the sha256 of every source already in it so no run is ingested twice.  Progress
and skipped files are reported through callbacks; this module prints nothing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import h5py

from cathodeml.errors import CathodemlError, TypeMapError
from cathodeml.io.dataset import read_frame_column
from cathodeml.io.outcar import OutcarRun, check_species, read_outcar


@dataclasses.dataclass(frozen=True)
class AppendPlan:
    """How to add to an existing dataset: `type_map` the species order to enforce (None: any, the
    file's own map stays first anyway), `file_type_map` the file's map, `known_sources`
    {sha256: why it is skipped} of every source already in the file."""

    type_map: list[str] | None
    file_type_map: list[str]
    known_sources: dict[str, str]


def check_output(output: Path, inputs) -> None:
    """Refuse an output path that is one of the inputs, a directory, or in a folder that does not exist."""
    if output.resolve() in {Path(p).resolve() for p in inputs}:
        raise CathodemlError(f"{output}: the output is also an input; choose another -o")
    if output.is_dir() or not output.resolve().parent.is_dir():
        raise CathodemlError(f"{output}: not a writable file path (a directory, or its folder does not exist); fix -o")


def plan_append(output: str | os.PathLike, energy: str, type_map: list[str] | None) -> AppendPlan:
    """The plan for appending runs with `energy` labels ("free" or "sigma0") and the requested
    `type_map` (or None) to the dataset file `output`; a CathodemlError says why it cannot be."""
    output = Path(output)
    if not h5py.is_hdf5(output):
        raise CathodemlError(f"{output}: exists but is not an HDF5 dataset; cannot --append to it")
    attrs, shas = read_frame_column(output, "source_sha256")
    if attrs.get("kind", "dataset") != "dataset":
        raise CathodemlError(f"{output}: is a {attrs['kind']} file, not a dataset; cannot --append to it")
    if attrs.get("spin") is not None or any(t.endswith("_spin") for t in attrs.get("type_map", [])):
        raise CathodemlError(f"{output} holds virtual spin atoms (augment-spin output); append to the plain "
                             "dataset it came from and run augment-spin again")
    if attrs.get("energy", energy) != energy:
        raise CathodemlError(f"{output} holds energy={attrs['energy']} labels; pass --energy {attrs['energy']} to append")
    existing = list(attrs.get("type_map", []))
    if type_map is not None:
        if type_map[: len(existing)] != existing[: len(type_map)]:
            raise TypeMapError(f"{output} has type map {','.join(existing)}; --type-map must start with it (new species may follow)")
        type_map = existing + [s for s in type_map if s not in existing]
    return AppendPlan(type_map, existing, {sha: f"already in {output}" for sha in shas.tolist()})


def drop_duplicate_sources(runs, known: dict[str, str]):
    """(runs to keep, skipped duplicates [{path, reason}]): a run whose sha256 is in `known` (updated
    in place) or was seen earlier in `runs` is a duplicate."""
    kept, duplicates = [], []
    for run in runs:
        if run.sha256 in known:
            duplicates.append({"path": run.path, "reason": known[run.sha256]})
            continue
        known[run.sha256] = f"same content as {run.path}"
        kept.append(run)
    return kept, duplicates


def _fork_is_safe() -> bool:
    """Fork copies only the calling thread: safe while no other Python thread runs and JAX has
    not started its runtime (its threads would be lost in the child)."""
    if threading.active_count() > 1:
        return False
    xla_bridge = sys.modules.get("jax._src.xla_bridge")
    return not getattr(xla_bridge, "_backends", None)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


def read_outcar_or_error(path: str, energy: str, progress: Callable[[int], None] | None = None):
    """(run, None) for a readable OUTCAR, (None, message) for a user-caused failure; top-level so a
    worker process can run it.  `progress(n_bytes)` reports the bytes read so far."""
    try:
        return read_outcar(path, energy=energy, progress=progress), None
    except CathodemlError as exc:
        return None, str(exc)


def read_outcars(files: Sequence[Path], energy: str = "free", *, jobs: int = 1, skip_bad: bool = False,
                 type_map: list[str] | None = None,
                 progress: Callable[[int, int, int, int], None] | None = None,
                 on_skip: Callable[[str, str], None] | None = None,
                 read_file=read_outcar_or_error) -> tuple[list[OutcarRun], list[dict]]:
    """Parse `files` (in a pool of `jobs` processes when jobs > 1) → (runs in input order, failed).

    A file that cannot be read stops the run with its CathodemlError, or with `skip_bad` is left
    out, listed in failed [{path, reason}] and passed to `on_skip(path, message)`.  A file with
    species outside `type_map` stops the run as soon as it is read.  `progress(bytes_done,
    bytes_total, files_done, n_files)` is first called once the worker processes have started,
    so a caller may start its own threads (a progress bar) from there.  `read_file(path, energy[,
    progress])` reads one file (a top-level function: it is sent to the workers).
    """
    sizes = {str(f): max(f.stat().st_size, 1) if f.exists() else 1 for f in files}
    total = sum(sizes.values())
    runs, failed = {}, []
    advanced: dict[str, int] = {}

    def report() -> None:
        if progress is not None:
            progress(sum(advanced.values()), total, len(runs) + len(failed), len(files))

    def advance(path: str, n_done: int) -> None:
        step = min(n_done, sizes[path]) - advanced.get(path, 0)
        if step > 0:  # a compressed file reports more text than its size on disk: capped
            advanced[path] = advanced.get(path, 0) + step
            report()

    def take(path: str, result) -> None:
        run, error = result
        if error is not None:
            if not skip_bad:
                raise CathodemlError(error)
            failed.append({"path": path, "reason": error})
            if on_skip is not None:
                on_skip(path, error)
        else:
            if type_map is not None:
                check_species(run, type_map)
            runs[path] = run
        advance(path, sizes[path])
        report()

    pool, pending = None, {}
    if jobs > 1 and len(files) > 1:
        # Fork is cheapest (workers forked before the caller's progress thread starts); with other
        # threads alive (e.g. JAX used as a library) a forkserver starts workers from a clean process.
        ctx = multiprocessing.get_context("fork" if _fork_is_safe() else "forkserver")
        pool = ProcessPoolExecutor(max_workers=min(jobs, len(files)), mp_context=ctx, initializer=_worker_init)
    try:
        if pool is not None:
            pending = {pool.submit(read_file, str(f), energy): str(f) for f in files}
        report()
        if pool is None:
            for f in files:
                take(str(f), read_file(str(f), energy, lambda n, f=str(f): advance(f, n)))
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                take(pending.pop(fut), fut.result())
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    if pool is not None:
        pool.shutdown()
    return [runs[str(f)] for f in files if str(f) in runs], failed


def ingest_summary(output, files, stats, duplicates, failed, dataset, groups, energy: str) -> dict:
    """The ingest record (what `cathodeml ingest --json` prints): file and frame counts, the systems
    written (`groups`, their names in the file), type map, elements, per-source `stats` of
    `runs_to_dataset`, the duplicates and failed files."""
    kept = sum(s["frames_kept"] for s in stats)
    elements = sorted({e for s in stats if s["frames_kept"] for e in s["species"]})
    return {
        "output": str(output),
        "energy": energy,
        "files": {"found": len(files), "ingested": sum(1 for s in stats if s["frames_kept"]),
                  "duplicates_skipped": len(duplicates), "failed": len(failed)},
        "frames": {"read": sum(s["frames_read"] for s in stats), "kept": kept,
                   "skipped_unconverged": sum(s["unconverged_skipped"] for s in stats),
                   "unconverged_kept": sum(s["unconverged"] - s["unconverged_skipped"] for s in stats),
                   "incomplete_dropped": sum(s["incomplete"] for s in stats),
                   "malformed_dropped": sum(s["malformed"] for s in stats)},
        "systems": [{"name": g, "frames": s.n_frames, "atoms": s.n_atoms} for g, s in zip(groups, dataset.systems)],
        "type_map": dataset.type_map,
        "elements": elements,
        "sources": stats,
        "duplicates": duplicates,
        "failed": failed,
    }


# ----------------------------------------------------------------------------- automag single points


def ingest_automag(paths, output: Path, *, type_map: list[str] | None = None, poscars: Path | None = None,
                   append: bool = False, energy: str = "free", keep_unconverged: bool = False,
                   skip_missing: bool = False, orderings=None, exclude=None,
                   on_skip: Callable[[str, dict], None] | None = None,
                   on_nothing_new: Callable[[], None] | None = None) -> dict:
    """Read automag *_singlepoint.txt files (energies and moments of magnetic orderings, no forces)
    with their enumlib POSCARs and write them to `output`; returns the summary `ingest --json` prints.

    With `append`, orderings whose source (sha256 of the record) is already in the file are left
    out, like OUTCARs; `orderings`/`exclude` are name patterns (a held-out split).
    """
    import numpy as np

    from cathodeml.io.automag import read_automag
    from cathodeml.io.dataset import Dataset, write_dataset

    check_output(output, paths)
    known = {}
    if append and output.exists():
        plan = plan_append(output, energy, type_map)
        type_map, known = plan.type_map, dict(plan.known_sources)
    systems, sources = [], []
    for p in paths:
        read = read_automag(p, poscars, type_map=type_map, keep_unconverged=keep_unconverged, skip_missing=skip_missing,
                            orderings=orderings, exclude=exclude)
        type_map = read.dataset.type_map
        for skipped in read.skipped:
            if on_skip:
                on_skip(str(p), skipped)
        system = read.dataset.systems[0]
        fresh = np.array([sha not in known for sha in system.frame_data["source_sha256"]])
        known.update({sha: f"already in {output}" for sha in system.frame_data["source_sha256"]})
        sources.append({"path": str(p), "poscars": str(read.poscar_dir), "orderings": len(read.orderings),
                        "new": int(fresh.sum()), "skipped": read.skipped})
        if fresh.any():
            systems.append(system.select(np.flatnonzero(fresh)))
    groups = write_dataset(output, Dataset(type_map, systems, {"source_format": "automag/singlepoint"}),
                           append=append) if systems else []
    if not systems and on_nothing_new:
        on_nothing_new()
    return {
        "output": str(output), "source_format": "automag/singlepoint",
        "files": {"found": len(paths), "ingested": sum(1 for s in sources if s["new"])},
        "frames": {"kept": sum(s.n_frames for s in systems), "skipped": sum(len(s["skipped"]) for s in sources),
                   "already_in_output": sum(s["orderings"] - s["new"] for s in sources)},
        "labels": ["energies", "magnetic moments"], "forces": "absent (energy-only data)",
        "systems": [{"name": g, "frames": s.n_frames, "atoms": s.n_atoms} for g, s in zip(groups, systems)],
        "type_map": list(type_map), "sources": sources,
    }
