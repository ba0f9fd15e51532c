"""Starting structures for MD: crystal files through ASE, or one frame of a cathodeml dataset.

`md` needs symbols, positions, a periodic cell and -- for spin models -- per-atom magnetic
moments.  ASE already reads POSCAR/CONTCAR, cif and extxyz well, so those go through `ase.io`;
a frame of a dataset (`data.h5:SYSTEM:FRAME`, cathodeml's or dpdata's deepmd/hdf5 in either
layout) is read with `cathodeml.io.dataset`, dropping any
virtual spin atoms (md recomputes them from the hosts) but keeping their moments.  Moments can
also come from `--magmom Ni=1.0,Mn=3.0` or a text file with one value (or three) per atom.
Supercells repeat the cell along a, b, c and carry the moments with them.

Units: positions and cells Å (cell rows are lattice vectors), moments μB.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError


@dataclasses.dataclass(frozen=True)
class Structure:
    """symbols [N], positions [N,3] Å, cell [3,3] Å (rows are lattice vectors), moments [N] or
    [N,3] μB or None, and where it came from."""

    symbols: tuple[str, ...]
    positions: np.ndarray
    cell: np.ndarray
    moments: np.ndarray | None = None
    source: str = ""

    @property
    def n_atoms(self) -> int:
        return len(self.symbols)

    def with_moments(self, moments) -> "Structure":
        return dataclasses.replace(self, moments=None if moments is None else np.asarray(moments, dtype=float))


def read_structure(spec: str | os.PathLike) -> Structure:
    """Read a structure from a file ASE reads (POSCAR, CONTCAR, cif, extxyz, ...) or from a
    dataset frame written `data.h5:SYSTEM:FRAME` (FRAME may be negative, counted from the end)."""
    spec = str(spec)
    path = Path(spec)
    if not path.exists():
        parts = spec.rsplit(":", 2)
        if len(parts) == 3 and Path(parts[0]).exists():
            return _dataset_frame(Path(parts[0]), parts[1], parts[2])
        raise CathodemlError(f"{spec}: no such structure file (give a POSCAR/cif/extxyz file or data.h5:SYSTEM:FRAME)")
    from cathodeml.io.dataset import file_kind

    if path.is_file() and file_kind(path) == "dataset":  # by content: a dpdata file may be called anything
        names = _system_names(path)
        raise CathodemlError(f"{spec} is a dataset: choose a frame as {spec}:SYSTEM:FRAME, e.g. {spec}:{names[0]}:0 "
                             f"(systems: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''})")
    return _ase_structure(path)


def _system_names(path: Path) -> list[str]:
    """The names `read_dataset` gives the systems of an HDF5 dataset, without reading their frames."""
    import h5py

    from cathodeml.io.dataset import root_system_name, system_groups

    with h5py.File(path, "r") as f:
        return [name or root_system_name(path) for name in system_groups(f)]


def _ase_structure(path: Path) -> Structure:
    import ase.io

    try:
        atoms = ase.io.read(path, index=-1)
    except Exception as exc:  # ase raises many types for unreadable files
        raise InputFormatError(f"{path}: cannot read a structure from it ({type(exc).__name__}: {exc})") from exc
    if not all(atoms.pbc) or atoms.cell.rank < 3:
        raise CathodemlError(f"{path}: md needs a 3D periodic cell, and this structure has none")
    moments = None
    if atoms.has("initial_magmoms"):
        moments = np.asarray(atoms.get_initial_magnetic_moments(), dtype=float)
    return Structure(tuple(atoms.get_chemical_symbols()), np.asarray(atoms.positions, dtype=float),
                     np.asarray(atoms.cell.array, dtype=float), moments, str(path))


def _dataset_frame(path: Path, system_name: str, frame_text: str) -> Structure:
    from cathodeml.io.dataset import read_dataset
    from cathodeml.spin import read_spin_layout

    try:
        frame = int(frame_text)
    except ValueError:
        raise CathodemlError(f"{path}:{system_name}:{frame_text}: FRAME must be an integer") from None
    ds = read_dataset(path)
    names = [s.name for s in ds.systems]
    if system_name not in names:
        raise CathodemlError(f"{path}: no system {system_name!r}; systems are {', '.join(names)}")
    system = ds.systems[names.index(system_name)]
    if not -system.n_frames <= frame < system.n_frames:
        raise CathodemlError(f"{path}:{system_name}: frame {frame} out of range (it has {system.n_frames} frames)")
    if system.nopbc:
        raise CathodemlError(f"{path}:{system_name} is not periodic; md needs a 3D periodic cell")
    layout = read_spin_layout(system, ds.type_map)
    n_real = system.n_atoms if layout is None else layout.n_real
    symbols = tuple(ds.type_map[t] for t in system.atom_types[:n_real])
    moments = None
    if layout is not None:
        m = layout.moments[frame]
        moments = np.zeros((n_real,) + m.shape[1:])
        moments[layout.host_index] = m
    elif "magmom" in system.frame_data and np.all(np.isfinite(system.frame_data["magmom"][frame])):
        moments = np.asarray(system.frame_data["magmom"][frame], dtype=float)
    elif "spin" in system.frame_data:
        spin = np.asarray(system.frame_data["spin"][frame], dtype=float).reshape(system.n_atoms, 3)
        moments = spin if np.any(spin[:, :2]) else spin[:, 2]
    return Structure(symbols, np.asarray(system.coords[frame, :n_real], dtype=float),
                     np.asarray(system.cells[frame], dtype=float), moments, f"{path}:{system_name}:{frame}")


def parse_supercell(text: str | None) -> tuple[int, int, int]:
    """"4x4x2" → (4, 4, 2); "3" → (3, 3, 3); None → (1, 1, 1)."""
    if text is None or text == "":
        return (1, 1, 1)
    parts = re.split(r"[x×,]", text.strip().lower())
    try:
        reps = tuple(int(p) for p in parts)
    except ValueError:
        raise CathodemlError(f"--supercell {text!r}: write it as NAxNBxNC, e.g. 4x4x2") from None
    if len(reps) == 1:
        reps = reps * 3
    if len(reps) != 3 or min(reps) < 1:
        raise CathodemlError(f"--supercell {text!r}: three positive integers, e.g. 4x4x2")
    return reps


def supercell(structure: Structure, reps: tuple[int, int, int]) -> Structure:
    """Repeat the structure na×nb×nc times along its lattice vectors (atoms ordered cell by cell,
    the same order as ASE's `Atoms.repeat`); moments repeat with their atoms."""
    if tuple(reps) == (1, 1, 1):
        return structure
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in reps], indexing="ij"), axis=-1).reshape(-1, 3)
    offsets = grid @ structure.cell
    positions = (offsets[:, None, :] + structure.positions[None, :, :]).reshape(-1, 3)
    cell = structure.cell * np.asarray(reps, dtype=float)[:, None]
    moments = None
    if structure.moments is not None:
        moments = np.concatenate([structure.moments] * len(grid), axis=0)
    return Structure(structure.symbols * len(grid), positions, cell, moments, structure.source)


def parse_magmom(text: str, symbols) -> np.ndarray:
    """Per-atom moments (μB) from "Ni=1.0,Mn=3.0" (elements not named get 0) or from a text file
    with one value (collinear) or three (vector) per atom, in the structure's atom order."""
    path = Path(text)
    if path.exists():
        try:
            values = np.loadtxt(path, ndmin=2)
        except ValueError as exc:
            raise InputFormatError(f"{path}: expected one or three numbers per line ({exc})") from exc
        if values.shape[0] != len(symbols) or values.shape[1] not in (1, 3):
            raise CathodemlError(f"{path}: {values.shape[0]} rows × {values.shape[1]} columns; "
                                 f"the structure has {len(symbols)} atoms (one or three values per atom)")
        return values[:, 0] if values.shape[1] == 1 else values
    per_element = {}
    for item in text.split(","):
        el, sep, value = item.partition("=")
        try:
            per_element[el.strip()] = float(value)
        except ValueError:
            raise CathodemlError(f"--magmom {text!r}: write El=value pairs like Ni=1.0,Mn=3.0, or give a file") from None
        if not sep:
            raise CathodemlError(f"--magmom {text!r}: write El=value pairs like Ni=1.0,Mn=3.0, or give a file")
    unknown = sorted(set(per_element) - set(symbols))
    if unknown:
        raise CathodemlError(f"--magmom names {', '.join(unknown)}, which the structure does not contain")
    return np.array([per_element.get(s, 0.0) for s in symbols])
