"""Read MD trajectories frame-chunk by frame-chunk: cathodeml's H5MD files and anything ASE reads.

Transport analysis needs every frame of the mobile ions but only a reduction (the centre of
mass) of everything else, and a 20,000-atom × 5,000-frame run is 2.4 GB of float64 positions.
So a trajectory is not loaded: `open_trajectory` returns a small header (species, masses, times,
temperature) and `Trajectory.chunks()` yields consecutive blocks of frames whose size is set by a
memory budget.  H5MD files are sliced with h5py (positions, image counts, box edges per frame);
ASE formats (XDATCAR also gzipped, vasprun.xml, extxyz, ...) are streamed with `ase.io.iread`,
which holds only one frame at a time.  Positions come back as stored (Å); whether they are
wrapped is recorded in the header and unwrapping is physics, done in `cathodeml.analysis.msd`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.io import lammps

# Bytes of positions one chunk may hold (positions + image counts + a working copy fit in ~1 GiB).
DEFAULT_CHUNK_BYTES = 256 * 1024**2

_LENGTH_TO_ANGSTROM = {"angstrom": 1.0, "a": 1.0, "å": 1.0, "ang": 1.0, "nm": 10.0, "pm": 0.01}
_TIME_TO_FS = {"fs": 1.0, "ps": 1000.0, "ns": 1.0e6}


@dataclasses.dataclass(frozen=True)
class TrajectoryHeader:
    """What a trajectory says about itself, without its positions.

    symbols [N] element or type names; masses [N] amu; time_fs [nframes] fs or None when the
    file has no times (XDATCAR, extxyz); temperature_K the nominal temperature or None;
    has_images: image counts accompany the positions; positions_unwrapped: the stored positions
    are already continuous in time (cathodeml H5MD) rather than wrapped into the cell.
    """

    path: Path
    format: str
    symbols: tuple[str, ...]
    masses: np.ndarray
    n_frames: int
    time_fs: np.ndarray | None
    temperature_K: float | None
    has_images: bool
    positions_unwrapped: bool
    parameters: dict

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    @property
    def timestep_fs(self) -> float | None:
        """Time between stored frames in fs (None when the file does not say)."""
        if self.time_fs is None or len(self.time_fs) < 2:
            return None
        return float(np.median(np.diff(self.time_fs)))


@dataclasses.dataclass
class FrameChunk:
    """Consecutive frames [start, start + n): positions [n, N_sel, 3] Å, cells [n, 3, 3] Å (rows
    are lattice vectors), images [n, N_sel, 3] int or None."""

    start: int
    positions: np.ndarray
    cells: np.ndarray
    images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.positions)


class Trajectory:
    """An open trajectory: `header`, plus `chunks()` to stream frames. Use as a context manager."""

    def __init__(self, header: TrajectoryHeader, source):
        self.header = header
        self._source = source

    def __enter__(self) -> "Trajectory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if isinstance(self._source, h5py.File):
            self._source.close()

    def chunks(self, atoms: np.ndarray | None = None, *, frames: slice | None = None,
               chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[FrameChunk]:
        """Yield FrameChunks over `frames` (default all) for atom indices `atoms` (default all).

        The chunk length is chosen so that the positions of the *stored* atoms fit `chunk_bytes`.
        """
        n = self.header.n_frames
        start, stop, step = (frames or slice(None)).indices(n)
        per_frame = max(1, self.header.n_atoms * 3 * 8)
        length = max(1, int(chunk_bytes // per_frame))
        if isinstance(self._source, h5py.File):
            yield from _h5md_chunks(self._source, atoms, range(start, stop, step), length)
        elif isinstance(self._source, lammps.DumpIndex):
            for lo, fr in lammps.dump_chunks(self._source, atoms, range(start, stop, step), length):
                yield FrameChunk(start=lo, positions=fr.positions, cells=fr.cells, images=fr.images)
        else:
            yield from _ase_chunks(self._source, self.header.path, atoms, range(start, stop, step), length)


def open_trajectory(path: str | os.PathLike, format: str | None = None) -> Trajectory:
    """Open an H5MD trajectory written by `cathodeml md` (or any H5MD 1.x with one particle
    group), a LAMMPS text dump (what `export-lammps` decks write), or anything `ase.io` reads
    (XDATCAR[.gz], vasprun.xml, extxyz, ASE .traj ...).

    `format` forces an ASE format name; by default HDF5 files are read as H5MD and the rest
    are handed to ASE's format detection.
    """
    path = Path(path)
    if not path.exists():
        raise CathodemlError(f"{path}: no such trajectory file")
    if path.is_dir():
        raise CathodemlError(f"{path} is a folder: give a trajectory file (H5MD .h5, XDATCAR, vasprun.xml, extxyz)")
    if format in (None, "h5md") and h5py.is_hdf5(path):
        return _open_h5md(path)
    if format == "h5md":
        raise InputFormatError(f"{path} is not an HDF5/H5MD file")
    if format in (None, "lammps") and lammps.is_lammps_dump(path):
        return _open_lammps(path)
    return _open_ase(path, format)


# ---------------------------------------------------------------------------------------- H5MD


def _open_h5md(path: Path) -> Trajectory:
    # no lock: `md` holds its trajectory open (and flushed frame by frame) for the whole run, and
    # `info`/`analyze` on a running job should read the frames written so far
    f = h5py.File(path, "r", locking=False)
    try:
        if "h5md" not in f or "particles" not in f:
            raise InputFormatError(f"{path} is an HDF5 file but not an H5MD trajectory (no /h5md and /particles)")
        group = _particle_group(f, path)
        params = _parameters(f)
        if "position" not in group:
            raise InputFormatError(f"{path}: H5MD particle group has no position data")
        pos = _element_value(group["position"])
        if pos.ndim != 3 or pos.shape[2] != 3:
            raise InputFormatError(f"{path}: positions must have shape [frames, atoms, 3], found {pos.shape}")
        n_frames, n_atoms = pos.shape[0], pos.shape[1]
        symbols = _h5md_symbols(group, params, n_atoms, path)
        if "mass" in group:
            masses = np.asarray(_element_value(group["mass"])[()], dtype=float).reshape(-1)
            if masses.ndim != 1 or len(masses) != n_atoms:
                masses = _masses(symbols)
        else:
            masses = _masses(symbols)
        time_fs = _h5md_time(group["position"], n_frames)
        temperature = params.get("temperature_K")
        observed = "observables" in f and "temperature" in f["observables"]
        if observed and (temperature is None or str(params.get("ensemble", "")).lower() == "nve"):
            # NVE: the run's temperature is what it reached, not the one its velocities started from
            values = np.asarray(_element_value(f["observables/temperature"])[()], dtype=float)
            temperature = float(np.mean(values)) if values.size else temperature
        header = TrajectoryHeader(path=path, format="h5md", symbols=tuple(symbols), masses=masses,
                                  n_frames=n_frames, time_fs=time_fs,
                                  temperature_K=None if temperature is None else float(temperature),
                                  has_images="image" in group, positions_unwrapped=True, parameters=params)
        if "box" not in group:
            raise InputFormatError(f"{path}: H5MD particle group has no box")
        return Trajectory(header, f)
    except BaseException:
        f.close()
        raise


def read_trajectory(path: str | os.PathLike, *, velocities: bool = True) -> dict:
    """A whole H5MD trajectory in memory (small files: tests, restarts, `info`), read through the
    same H5MD reader as `analyze` (`open_trajectory`).

    Returns {"positions" [nf,N,3] Å, "image" [nf,N,3] or None, "velocities" [nf,N,3] Å/fs or None,
    "cells" [nf,3,3] Å, "step" [nf], "time" [nf] fs, "species" [N], "masses" [N] amu, "type_map",
    "parameters" dict, each observable of cathodeml md [nf] or None, and "spin_moments" [nf, N] μB
    or None (md --spin-search)}.
    """
    from cathodeml.io.h5md import OBSERVABLES

    path = Path(path)
    if not h5py.is_hdf5(path):
        raise InputFormatError(f"{path}: not an HDF5 file")
    with _open_h5md(path) as traj:
        f = traj._source
        group = _particle_group(f, path)
        chunks = list(traj.chunks())
        species = np.asarray(_element_value(group["species"])[()])
        out = {
            "positions": np.concatenate([c.positions for c in chunks]),
            "image": np.concatenate([c.images for c in chunks]) if traj.header.has_images else None,
            "velocities": (np.asarray(_element_value(group["velocity"])[()], dtype=float)
                           if velocities and "velocity" in group else None),
            "cells": np.concatenate([c.cells for c in chunks]),
            "step": np.asarray(group["position/step"][()]) if isinstance(group["position"], h5py.Group) else None,
            "time": traj.header.time_fs,
            "species": species[0] if species.ndim == 2 else species,
            "masses": traj.header.masses,
            "type_map": traj.header.parameters.get("type_map", []),
            "parameters": traj.header.parameters,
        }
        for name in (*OBSERVABLES, "spin_moments"):
            out[name] = _element_value(f[f"observables/{name}"])[()] if f"observables/{name}" in f else None
    return out


def _particle_group(f: h5py.File, path: Path) -> h5py.Group:
    groups = list(f["particles"].keys())
    if "all" in groups:
        return f["particles/all"]
    if len(groups) == 1:
        return f["particles"][groups[0]]
    raise InputFormatError(f"{path}: several particle groups {groups}; cathodeml reads /particles/all")


def _parameters(f: h5py.File) -> dict:
    raw = f["parameters"].attrs.get("cathodeml") if "parameters" in f else None
    if raw is None:
        return {}
    try:
        return json.loads(raw if isinstance(raw, str) else raw.decode())
    except (ValueError, AttributeError):
        return {}


def _element_value(obj):
    """An H5MD element is a dataset (time-independent) or a group with `value` (time series)."""
    return obj["value"] if isinstance(obj, h5py.Group) else obj


def _h5md_symbols(group, params, n_atoms, path) -> list[str]:
    type_map = params.get("type_map")
    if "species" not in group:
        raise InputFormatError(f"{path}: H5MD particle group has no species")
    species = np.asarray(_element_value(group["species"])[()])
    if species.ndim == 2:  # time-dependent species: take the first frame
        species = species[0]
    if species.dtype.kind in "SUO":
        return [s.decode() if isinstance(s, bytes) else str(s) for s in species]
    if not type_map:
        raise InputFormatError(f"{path}: species are type indices but /parameters has no type_map")
    if species.min() < 0 or species.max() >= len(type_map) or len(species) != n_atoms:
        raise InputFormatError(f"{path}: species indices do not fit type_map {type_map}")
    return [type_map[int(i)] for i in species]


def _h5md_time(element, n_frames: int) -> np.ndarray | None:
    if not isinstance(element, h5py.Group) or "time" not in element:
        return None
    t = element["time"]
    scale = _TIME_TO_FS.get(str(t.attrs.get("unit", "fs")).lower().strip(), 1.0)
    if t.shape == ():  # fixed sampling: time is the interval
        offset = float(t.attrs.get("offset", 0.0))
        return (offset + np.arange(n_frames) * float(t[()])) * scale
    return np.asarray(t[:n_frames], dtype=float) * scale


def _length_scale(dataset) -> float:
    unit = dataset.attrs.get("unit")
    if unit is None:
        return 1.0
    unit = unit.decode() if isinstance(unit, bytes) else str(unit)
    return _LENGTH_TO_ANGSTROM.get(unit.lower().strip(), 1.0)


def _h5md_cells(box: h5py.Group, frames: range) -> np.ndarray:
    edges = box["edges"]
    values = _element_value(edges)
    scale = _length_scale(values)
    if isinstance(edges, h5py.Group):
        idx = np.arange(frames.start, frames.stop, frames.step)
        e = np.asarray(values[frames.start:frames.stop:frames.step] if frames.step > 0 else values[idx], dtype=float)
    else:
        e = np.broadcast_to(np.asarray(values[()], dtype=float), (len(frames),) + values.shape)
    if e.shape[1:] == (3,):  # rectangular box given by its edge lengths
        e = np.einsum("fi,ij->fij", e, np.eye(3))
    return np.array(e, dtype=float) * scale


def _h5md_chunks(f: h5py.File, atoms, frames: range, length: int) -> Iterator[FrameChunk]:
    group = _particle_group(f, Path(f.filename))
    pos = _element_value(group["position"])
    scale = _length_scale(pos)
    img = _element_value(group["image"]) if "image" in group else None
    for lo in range(0, len(frames), length):
        sub = frames[lo:lo + length]
        sl = slice(sub.start, sub.start + len(sub) * sub.step, sub.step) if len(sub) else slice(0, 0)
        p = np.asarray(pos[sl], dtype=float) * scale
        i = np.asarray(img[sl]) if img is not None else None
        if atoms is not None:
            p = p[:, atoms]
            i = i[:, atoms] if i is not None else None
        yield FrameChunk(start=lo, positions=p, cells=_h5md_cells(group["box"], sub), images=i)


# -------------------------------------------------------------------------------------- LAMMPS


def _open_lammps(path: Path) -> Trajectory:
    index = lammps.index_dump(path)
    _, unwrapped, has_images = lammps.position_columns(index.columns)
    symbols = lammps.dump_symbols(index)
    temperature = index.metadata.get("temperature_K")
    header = TrajectoryHeader(path=path, format="lammps-dump", symbols=tuple(symbols), masses=_masses(symbols),
                              n_frames=len(index.offsets), time_fs=index.times_fs,
                              temperature_K=None if temperature is None else float(temperature),
                              has_images=has_images, positions_unwrapped=unwrapped,
                              parameters={"type_map": index.metadata.get("type_map"), "lammps_units": index.units})
    return Trajectory(header, index)


# ----------------------------------------------------------------------------------------- ASE


def _open_ase(path: Path, format: str | None) -> Trajectory:
    import ase.io

    fmt = format or _ase_format(path)
    count = 0
    first = None
    try:
        for atoms in ase.io.iread(str(path), index=":", format=fmt):
            if first is None:
                first = atoms
            elif len(atoms) != len(first):
                raise InputFormatError(f"{path}: frame {count} has {len(atoms)} atoms, the first has {len(first)}; "
                                       "transport analysis needs a fixed set of atoms")
            count += 1
    except CathodemlError:
        raise
    except Exception as exc:  # ASE raises many kinds for junk input
        raise InputFormatError(f"{path}: cannot be read as a trajectory ({type(exc).__name__}: {exc})") from exc
    if first is None:
        raise InputFormatError(f"{path}: no frames found")
    if not all(first.pbc):
        raise InputFormatError(f"{path}: the cell is not periodic in all three directions")
    header = TrajectoryHeader(path=path, format=fmt or "ase", symbols=tuple(first.get_chemical_symbols()),
                              masses=np.asarray(first.get_masses(), dtype=float), n_frames=count, time_fs=None,
                              temperature_K=None, has_images=False, positions_unwrapped=False, parameters={})
    return Trajectory(header, fmt)


def _ase_format(path: Path) -> str | None:
    from ase.io.formats import filetype

    name = path.name.lower()
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    if "xdatcar" in name:
        return "vasp-xdatcar"
    if name.endswith("vasprun.xml") or name.startswith("vasprun"):
        return "vasp-xml"
    try:
        return filetype(str(path), read=True)
    except Exception as exc:
        raise InputFormatError(f"{path}: unknown trajectory format ({exc}); pass an H5MD, XDATCAR, vasprun.xml "
                               "or extxyz file") from exc


def _ase_chunks(fmt, path: Path, atoms, frames: range, length: int) -> Iterator[FrameChunk]:
    import ase.io

    wanted = set(frames)
    pos, cells, first, k = [], [], None, 0
    for index, frame in enumerate(ase.io.iread(str(path), index=":", format=fmt)):
        if index >= frames.stop:
            break
        if index not in wanted:
            continue
        if first is None:
            first = k
        p = frame.get_positions()
        pos.append(p if atoms is None else p[atoms])
        cells.append(np.asarray(frame.cell[:], dtype=float))
        k += 1
        if len(pos) == length:
            yield FrameChunk(start=k - len(pos), positions=np.array(pos), cells=np.array(cells))
            pos, cells = [], []
    if pos:
        yield FrameChunk(start=k - len(pos), positions=np.array(pos), cells=np.array(cells))


def _masses(symbols) -> np.ndarray:
    from ase.data import atomic_masses, atomic_numbers

    out = []
    for s in symbols:
        element = s.split("_")[0]
        if element not in atomic_numbers:
            raise InputFormatError(f"unknown element {s!r}: the trajectory must store masses")
        out.append(atomic_masses[atomic_numbers[element]])
    return np.asarray(out, dtype=float)
