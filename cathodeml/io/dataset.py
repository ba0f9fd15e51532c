"""Datasets in DeePMD-kit's `deepmd/hdf5` layout (also read: `deepmd/npy` folders).

One HDF5 group per *system* -- frames with the same atoms in the same order -- holding
`type.raw`, `type_map.raw` and `set.NNN/` groups of `coord.npy` [nf, na*3], `box.npy` [nf, 9],
`energy.npy` [nf], `force.npy` [nf, na*3], `virial.npy` [nf, 9] and `spin.npy` [nf, na*3].
That is exactly what `dp train` and `dpdata.MultiSystems().from_deepmd_hdf5()` read, so a
cathodeml dataset feeds DeePMD-kit unchanged.  Everything cathodeml adds (per-atom moments,
provenance, SCF convergence ...) lives in extra `set.NNN/<name>.npy` arrays with frames on the
first axis, and in JSON attributes; peers ignore both.  Every system stores the file's global
type map, so type indices mean the same in every group.  The root holds only systems (dpdata
treats each root key as one), and the file-level metadata sits in root attributes.  Readers
also take the file `dpdata.System.to("deepmd/hdf5")` writes, one system at the root;
`system_groups` is the one test that tells the two layouts apart.

Appending adds a new `set.NNN` and never rewrites frames that are there.  Writers go through
`atomic_output`, so a failure leaves the previous file intact.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import h5py
import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError, TypeMapError
from cathodeml.io.atomic import atomic_output

FORMAT_VERSION = 1
KIND = "dataset"

# Per-frame arrays with a fixed DeePMD-kit name and a flattened on-disk shape.
_DEEPMD_NAMES = {"coords": "coord", "cells": "box", "energies": "energy", "forces": "force", "virials": "virial"}
# Extra per-frame arrays stored flattened per frame [nf, na*3] because DeePMD-kit reads them so.
_FLATTENED_EXTRAS = {"spin", "force_mag"}


@dataclasses.dataclass
class System:
    """Frames of one set of atoms (same count and order).

    Arrays (frames first): coords [nf, na, 3] Å; cells [nf, 3, 3] Å (rows are lattice vectors,
    zeros for a non-periodic system); energies [nf] eV; forces [nf, na, 3] eV/Å;
    virials [nf, 3, 3] eV.  `frame_data` holds any further per-frame array by name, e.g.
    "magmom" [nf, na] μB or "spin" [nf, na, 3] μB.  `attrs` is JSON-serialisable metadata.
    """

    atom_types: np.ndarray
    coords: np.ndarray
    cells: np.ndarray
    energies: np.ndarray | None = None
    forces: np.ndarray | None = None
    virials: np.ndarray | None = None
    frame_data: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    attrs: dict = dataclasses.field(default_factory=dict)
    name: str = ""
    nopbc: bool = False

    @property
    def n_frames(self) -> int:
        return int(self.coords.shape[0])

    @property
    def n_atoms(self) -> int:
        return int(self.atom_types.shape[0])

    def select(self, frames) -> "System":
        """A new System with only the given frames (index array, slice or boolean mask)."""
        pick = lambda a: None if a is None else a[frames]  # noqa: E731
        return dataclasses.replace(
            self,
            coords=self.coords[frames],
            cells=self.cells[frames],
            energies=pick(self.energies),
            forces=pick(self.forces),
            virials=pick(self.virials),
            frame_data={k: v[frames] for k, v in self.frame_data.items()},
        )


@dataclasses.dataclass
class Dataset:
    """Systems sharing one global type map; `attrs` is file-level JSON metadata."""

    type_map: list[str]
    systems: list[System]
    attrs: dict = dataclasses.field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return sum(s.n_frames for s in self.systems)


def formula_name(atom_types: np.ndarray, type_map: list[str]) -> str:
    """System name from composition in order of first appearance, e.g. 'Li1Ni2O4'."""
    order = list(dict.fromkeys(int(t) for t in atom_types))
    return "".join(f"{type_map[t]}{int(np.count_nonzero(atom_types == t))}" for t in order)


def concatenate(systems: list[System]) -> System:
    """Join systems with identical atom types frame-wise (frame_data keys must agree)."""
    first = systems[0]
    for s in systems[1:]:
        if not np.array_equal(s.atom_types, first.atom_types):
            raise ValueError("cannot concatenate systems with different atom types")
    cat = lambda name: (  # noqa: E731
        None if getattr(first, name) is None else np.concatenate([getattr(s, name) for s in systems])
    )
    keys = set(first.frame_data).intersection(*(s.frame_data for s in systems[1:]))
    return dataclasses.replace(
        first,
        coords=cat("coords"),
        cells=cat("cells"),
        energies=cat("energies"),
        forces=cat("forces"),
        virials=cat("virials"),
        frame_data={k: np.concatenate([s.frame_data[k] for s in systems]) for k in sorted(keys)},
    )


# ----------------------------------------------------------------------------- reading


def read_dataset(path: str | os.PathLike, type_map: list[str] | tuple[str, ...] | None = None) -> Dataset:
    """Read a cathodeml/deepmd-hdf5 file, a deepmd/npy system folder or a folder of them.

    `path` may be `file.h5`, `file.h5#group` (one system), a deepmd/npy system folder
    (with type.raw) or a directory containing such folders.  `type_map` names the types of
    systems that carry no type_map.raw (their type.raw then indexes it, as in DeePMD-kit);
    without it they are called Type_0, Type_1, ...
    """
    text = str(path)
    group = None
    if "#" in text and not Path(text).exists():
        text, group = text.split("#", 1)
    p = Path(text)
    if not p.exists():
        raise CathodemlError(f"{p}: no such file or directory")
    if p.is_dir():
        return _read_npy_tree(p, type_map)
    if not h5py.is_hdf5(p):
        raise InputFormatError(f"{p}: not an HDF5 file (expected a cathodeml/deepmd-hdf5 dataset)")
    with h5py.File(p, "r") as f:
        if group and group not in f:
            raise CathodemlError(f"{path}: the file has no group {group!r}")
        root = f[group] if group else f
        attrs = _json_attrs(root) if group is None else {}
        names = system_groups(root)
        if not names:
            raise InputFormatError(f"{path}: no systems found (no group holds type.raw)")
        unnamed = type_map
        type_map = attrs.get("type_map")
        systems = []
        for name in names:
            g = root[name] if name else root
            sys_map = _decode(g["type_map.raw"][()]) if "type_map.raw" in g else None
            system = _read_group(g, name or root_system_name(p, group))
            if type_map is None:
                type_map = sys_map or _index_names(system.atom_types, unnamed, f"{path}:{name}")
            if sys_map is not None and sys_map != type_map:
                system.atom_types = remap_types(system.atom_types, sys_map, type_map, where=f"{path}:{name}")
            systems.append(system)
    return Dataset(type_map=list(type_map), systems=systems, attrs=attrs)


@dataclasses.dataclass(frozen=True)
class SystemIndex:
    """Where one system of an HDF5 dataset lies, without its frames, so batches can be read on demand
    (`read_frames`): the group, the atom types (in the file's global type map), the system's JSON
    attributes and the frame count of each `set.NNN`."""

    path: str
    group: str
    name: str
    atom_types: np.ndarray
    attrs: dict
    nopbc: bool
    sets: tuple[str, ...]
    set_sizes: tuple[int, ...]

    @property
    def n_frames(self) -> int:
        return int(sum(self.set_sizes))


def index_dataset(path: str | os.PathLike, type_map: list[str] | tuple[str, ...] | None = None
                  ) -> tuple[list[str], list[SystemIndex], dict]:
    """(type map, systems, file attributes) of an HDF5 dataset, reading no frames: what `read_dataset`
    would return, as an index for `read_frames`.  Only HDF5 files can be read this way (a deepmd/npy
    folder is one array per column, read whole)."""
    p = Path(path)
    if not p.is_file() or not h5py.is_hdf5(p):
        raise CathodemlError(f"{p}: streaming reads HDF5 datasets only (convert deepmd/npy folders with "
                             "`cathodeml ingest` or dpdata's deepmd/hdf5 writer)")
    with h5py.File(p, "r") as f:
        attrs = _json_attrs(f)
        names = system_groups(f)
        if not names:
            raise InputFormatError(f"{p}: no systems found (no group holds type.raw)")
        file_map = attrs.get("type_map")
        out = []
        for name in names:
            g = f[name] if name else f
            atom_types = np.asarray(g["type.raw"][()], dtype=np.int64).reshape(-1)
            sys_map = _decode(g["type_map.raw"][()]) if "type_map.raw" in g else None
            if file_map is None:
                file_map = sys_map or _index_names(atom_types, type_map, f"{p}:{name}")
            if sys_map is not None and sys_map != file_map:
                atom_types = remap_types(atom_types, sys_map, file_map, where=f"{p}:{name}")
            sets = tuple(sorted(k for k in g.keys() if k.startswith("set.")))
            if any("coord.npy" not in g[s] for s in sets):
                raise InputFormatError(f"system {name or root_system_name(p)}: no coord.npy")
            out.append(SystemIndex(str(p), name, name or root_system_name(p), atom_types, _json_attrs(g),
                                   "nopbc" in g, sets, tuple(int(g[s]["coord.npy"].shape[0]) for s in sets)))
    return list(file_map), out, attrs


class FrameReader:
    """Reads chosen frames of one indexed system from an open file, the HDF5 datasets of its columns
    looked up once (a batch of a few frames costs a few fancy reads, not a walk of the groups)."""

    def __init__(self, f: h5py.File, index: SystemIndex):
        g = f[index.group] if index.group else f
        self.index = index
        self.starts = np.concatenate([[0], np.cumsum(index.set_sizes)])
        self.columns: dict[str, list] = {}
        for s in index.sets:
            for key, value in g[s].items():
                if key.endswith(".npy"):
                    self.columns.setdefault(key[:-4], []).append(value)

    def read(self, frames: np.ndarray) -> System:
        """The frames `frames` (increasing, distinct indices over the system's sets) as a System."""
        frames = np.asarray(frames, dtype=np.int64)
        if not frames.size or np.any(np.diff(frames) <= 0) or frames[0] < 0 or frames[-1] >= self.index.n_frames:
            raise ValueError("read_frames needs increasing, distinct frame indices within the system")
        parts: dict[str, list[np.ndarray]] = {}
        for k in range(len(self.index.sets)):
            local = frames[(frames >= self.starts[k]) & (frames < self.starts[k + 1])] - self.starts[k]
            if local.size:
                for key, datasets in self.columns.items():
                    parts.setdefault(key, []).append(datasets[k][local])
        index = self.index
        return _system_from_columns(parts, index.atom_types, index.name, index.attrs, index.nopbc)


def read_frames(f: h5py.File, index: SystemIndex, frames: np.ndarray) -> System:
    """The frames `frames` (increasing, distinct indices over the system's sets) of an indexed system,
    as a System, from the open file `f` (`FrameReader` for many reads)."""
    return FrameReader(f, index).read(frames)


def read_column(f: h5py.File, index: SystemIndex, key: str) -> np.ndarray | None:
    """One per-frame array (e.g. "energy") of an indexed system over all its sets, or None when absent."""
    g = f[index.group] if index.group else f
    if any(f"{key}.npy" not in g[s] for s in index.sets):
        return None
    return np.concatenate([g[s][f"{key}.npy"][()] for s in index.sets])


def system_groups(root: h5py.Group) -> list[str]:
    """The deepmd/hdf5 systems in `root`, as names relative to it; "" when `root` is itself one system.

    The one place the two layouts are told apart, for every reader: a group per system
    (cathodeml, `dpdata.MultiSystems.to("deepmd/hdf5")`) or one system at the root
    (`dpdata.System.to("deepmd/hdf5")` writes type.raw, type_map.raw and set.000 there).
    """
    if "type.raw" in root:
        return [""]
    return sorted(k for k, g in root.items() if isinstance(g, h5py.Group) and "type.raw" in g)


def root_system_name(path: str | os.PathLike, group: str | None = None) -> str:
    """The name a system stored at the root of `path` (or of `group`) goes by: the group's or the file's stem."""
    return group.strip("/").split("/")[-1] if group else Path(path).stem


def remap_types(atom_types: np.ndarray, old_map: list[str], new_map: list[str], where: str = "") -> np.ndarray:
    """Re-index `atom_types` from `old_map` to `new_map`; missing species are a TypeMapError."""
    missing = sorted({old_map[t] for t in np.unique(atom_types)} - set(new_map))
    if missing:
        raise TypeMapError(f"{where}: species {', '.join(missing)} not in type map {','.join(new_map)}")
    table = np.array([new_map.index(n) if n in new_map else -1 for n in old_map])
    return table[atom_types]


def _decode(raw) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in np.atleast_1d(raw)]


def _json_attrs(obj) -> dict:
    raw = obj.attrs.get("cathodeml")
    return json.loads(raw) if raw is not None else {}


def _read_group(g: h5py.Group, name: str) -> System:
    atom_types = np.asarray(g["type.raw"][()], dtype=np.int64).reshape(-1)
    sets = sorted(k for k in g.keys() if k.startswith("set."))
    columns: dict[str, list[np.ndarray]] = {}
    for s in sets:
        for key in g[s].keys():
            if key.endswith(".npy"):
                columns.setdefault(key[:-4], []).append(g[s][key][()])
    return _system_from_columns(columns, atom_types, name, _json_attrs(g), nopbc="nopbc" in g)


def _system_from_columns(columns, atom_types, name, attrs, nopbc) -> System:
    na = atom_types.size
    if "coord" not in columns:
        raise InputFormatError(f"system {name}: no coord.npy")
    arrays = {k: np.concatenate(v) for k, v in columns.items()}
    nf = arrays["coord"].shape[0]
    coords = arrays.pop("coord").reshape(nf, na, 3).astype(np.float64)
    cells = arrays.pop("box", np.zeros((nf, 9))).reshape(nf, 3, 3).astype(np.float64)
    energies = arrays.pop("energy", None)
    forces = arrays.pop("force", None)
    virials = arrays.pop("virial", None)
    frame_data = {}
    for key, value in arrays.items():
        if key in _FLATTENED_EXTRAS:
            value = value.reshape(nf, na, 3)
        if value.dtype.kind == "O":
            value = np.array([v.decode() if isinstance(v, bytes) else v for v in value], dtype=object)
        frame_data[key] = value
    return System(
        atom_types=atom_types,
        coords=coords,
        cells=cells,
        energies=None if energies is None else energies.reshape(nf).astype(np.float64),
        forces=None if forces is None else forces.reshape(nf, na, 3).astype(np.float64),
        virials=None if virials is None else virials.reshape(nf, 3, 3).astype(np.float64),
        frame_data=frame_data,
        attrs=attrs,
        name=name,
        nopbc=nopbc,
    )


def _index_names(atom_types: np.ndarray, names, where: str) -> list[str]:
    """Type names of a system without type_map.raw: `names` indexed by type.raw, else placeholders."""
    n = int(atom_types.max()) + 1
    if not names:
        return [f"Type_{i}" for i in range(n)]
    if n > len(names):
        raise TypeMapError(f"{where}: type.raw uses {n} types but the type map {','.join(names)} names {len(names)}")
    return list(names)


def _read_npy_tree(root: Path, unnamed=None) -> Dataset:
    folders = [root] if (root / "type.raw").exists() else sorted(p.parent for p in root.rglob("type.raw"))
    if not folders:
        raise InputFormatError(f"{root}: no deepmd/npy system (no type.raw) found")
    type_map: list[str] | None = None
    systems = []
    for folder in folders:
        atom_types = np.loadtxt(folder / "type.raw", dtype=np.int64, ndmin=1)
        sys_map = (folder / "type_map.raw").read_text().split() if (folder / "type_map.raw").exists() else None
        columns: dict[str, list[np.ndarray]] = {}
        for s in sorted(folder.glob("set.*")):
            for f in sorted(s.glob("*.npy")):
                columns.setdefault(f.stem, []).append(np.load(f))
        system = _system_from_columns(columns, atom_types, folder.name, {}, nopbc=(folder / "nopbc").exists())
        sys_map = sys_map or _index_names(atom_types, unnamed, str(folder))
        if type_map is None:
            type_map = list(sys_map)
        for name in sys_map:
            if name not in type_map:
                type_map.append(name)
        system.atom_types = remap_types(system.atom_types, sys_map, type_map, where=str(folder))
        systems.append(system)
    return Dataset(type_map=type_map, systems=systems, attrs={"source_format": "deepmd/npy"})


# ----------------------------------------------------------------------------- writing


def write_dataset(path: str | os.PathLike, dataset: Dataset, *, append: bool = False) -> list[str]:
    """Write (or, with `append`, add to) a dataset file atomically; return the group names written.

    Appending merges type maps (new species go at the end, so existing indices keep their
    meaning) and adds each system as a new `set.NNN` of the group holding the same atoms, or
    as a new group.  Frames already in the file are never rewritten.
    """
    path = Path(path)
    if append and path.exists() and file_format(path) == ("dataset", "deepmd/hdf5"):
        with h5py.File(path, "r") as f:
            if system_groups(f) == [""]:  # new groups would sit beside a root system no reader would then see
                raise CathodemlError(f"{path} holds one system at its root (dpdata's single-system layout); "
                                     "write to a new file instead of appending")
    written = []
    with atomic_output(path, copy_existing=append) as tmp:
        with h5py.File(tmp, "a" if append and path.exists() else "w") as f:
            attrs = _json_attrs(f)
            type_map = list(attrs.get("type_map", []))
            for name in dataset.type_map:
                if name not in type_map:
                    type_map.append(name)
            attrs.update(dataset.attrs)
            attrs.update({"kind": KIND, "format_version": FORMAT_VERSION, "type_map": type_map})
            f.attrs["cathodeml"] = json.dumps(attrs)
            for g in f.values():
                if isinstance(g, h5py.Group) and "type_map.raw" in g and _decode(g["type_map.raw"][()]) != type_map:
                    del g["type_map.raw"]
                    g.create_dataset("type_map.raw", data=np.array(type_map, dtype="S"))
            for system in dataset.systems:
                types = remap_types(system.atom_types, dataset.type_map, type_map)
                written.append(_write_system(f, system, types, type_map))
    return written


def _write_system(f: h5py.File, system: System, types: np.ndarray, type_map: list[str]) -> str:
    base = system.name or formula_name(types, type_map)
    name, suffix = base, 1
    while name in f and not np.array_equal(f[name]["type.raw"][()], types):
        suffix += 1
        name = f"{base}_{suffix}"
    if name not in f:
        g = f.create_group(name)
        g.create_dataset("type.raw", data=types.astype(np.int64))
        g.create_dataset("type_map.raw", data=np.array(type_map, dtype="S"))
        if system.nopbc:
            g.create_dataset("nopbc", data=True)
        g.attrs["cathodeml"] = json.dumps(system.attrs)
    else:
        g = f[name]
        merged = {**_json_attrs(g), **system.attrs}
        g.attrs["cathodeml"] = json.dumps(merged)
    n_sets = sum(1 for k in g.keys() if k.startswith("set."))
    s = g.create_group(f"set.{n_sets:03d}")
    nf, na = system.n_frames, system.n_atoms
    s.create_dataset("coord.npy", data=system.coords.reshape(nf, na * 3))
    s.create_dataset("box.npy", data=system.cells.reshape(nf, 9))
    if system.energies is not None:
        s.create_dataset("energy.npy", data=system.energies.reshape(nf))
    if system.forces is not None:
        s.create_dataset("force.npy", data=system.forces.reshape(nf, na * 3))
    if system.virials is not None:
        s.create_dataset("virial.npy", data=system.virials.reshape(nf, 9))
    for key, value in system.frame_data.items():
        value = np.asarray(value)
        if key in _FLATTENED_EXTRAS:
            value = value.reshape(nf, na * 3)
        if value.dtype.kind in "OU":
            s.create_dataset(f"{key}.npy", data=value.astype(object), dtype=h5py.string_dtype())
        else:
            s.create_dataset(f"{key}.npy", data=value)
    return name


def read_frame_column(path: str | os.PathLike, key: str) -> tuple[dict, np.ndarray]:
    """(file-level attrs, one per-frame array `set.*/<key>.npy` gathered over all systems).

    Reads only that column (e.g. "source_sha256" for `ingest --append`); empty when absent.
    """
    chunks = []
    with h5py.File(path, "r") as f:
        attrs = _json_attrs(f)
        for name in system_groups(f):
            g = f[name] if name else f
            for s in sorted(k for k in g.keys() if k.startswith("set.")):
                if f"{key}.npy" in g[s]:
                    chunks.append(np.asarray(g[s][f"{key}.npy"][()]))
    if not chunks:
        return attrs, np.array([], dtype=object)
    values = np.concatenate(chunks)
    if values.dtype.kind in "OS":
        values = np.array([v.decode() if isinstance(v, bytes) else v for v in values], dtype=object)
    return attrs, values


def file_kind(path: str | os.PathLike) -> str | None:
    """What an HDF5 file holds ("dataset", "model", "trajectory", "checkpoint"), or None."""
    fmt = file_format(path)
    return None if fmt is None else fmt[0]


def file_format(path: str | os.PathLike) -> tuple[str, str] | None:
    """(kind, format) of an HDF5 file, decided by its content, not its name; None if it is none of ours.

    Formats: "cathodeml" (its JSON root attribute names the kind), "h5md" (trajectory),
    "deepmd/hdf5" (a dataset dpdata or DeePMD-kit wrote, either layout of `system_groups`),
    "deepmd/dp" (a DeePMD-kit model: root attribute "json" holding the serialized model).
    """
    try:
        # no lock: a trajectory that `md` is still writing must be recognisable (and readable)
        with h5py.File(path, "r", locking=False) as f:
            if "h5md" in f:
                return "trajectory", "h5md"
            kind = _json_attrs(f).get("kind")
            if kind:
                return kind, "cathodeml"
            if system_groups(f):
                return "dataset", "deepmd/hdf5"
            if "json" in f.attrs:
                return "model", "deepmd/dp"
    except OSError:  # not HDF5, a folder, unreadable
        return None
    return None
