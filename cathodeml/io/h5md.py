"""H5MD 1.1 trajectories written frame by frame (the reader is `cathodeml.io.trajectory`).

A trajectory is a log that grows for hours, so unlike the other outputs it is not written to a
temporary file and renamed at the end: every time-dependent dataset is chunked and resizable along
frames, each frame is appended to all of them and the file is flushed, so a run that crashes or
is killed leaves every frame written so far readable.  Consistency across crashes comes from
the checkpoint instead (`cathodeml.io.checkpoint`, small and written atomically): `--restart`
truncates the trajectory to the last checkpoint's step and continues from there.

Layout (H5MD 1.1, what `analyze` and `info` read): `/h5md` (version [1,1], author, creator),
`/particles/all/{position (Å, unwrapped), image (int32: cell images, so wrapped = position −
image·box), velocity (Å/fs, optional), box/edges ([3,3] Å, rows are lattice vectors), species
(indices into the type map), mass (amu)}`, `/observables/{temperature (K), potential_energy,
kinetic_energy, conserved_energy (eV)}`, each time-dependent element with `value`, `step`, `time`
(fs), and `/parameters` with the run settings as JSON in the attribute `cathodeml`.  Runs that
change spin states (`md --spin-search`) add `/observables/spin_moments` ([N] μB per frame: the
moment each atom's virtual atom was placed with, 0 for non-magnetic atoms).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from cathodeml import __version__
from cathodeml.errors import InputFormatError
from cathodeml.geometry import image_counts

OBSERVABLES = ("temperature", "potential_energy", "kinetic_energy", "conserved_energy")
_UNITS = {"position": "Å", "velocity": "Å fs-1", "edges": "Å", "time": "fs", "temperature": "K",
          "potential_energy": "eV", "kinetic_energy": "eV", "conserved_energy": "eV", "mass": "amu"}


def _time_element(group: h5py.Group, name: str, shape: tuple, dtype, unit: str | None) -> h5py.Group:
    g = group.create_group(name)
    chunk_frames = max(1, min(64, (1 << 20) // max(1, int(np.prod(shape, dtype=np.int64)) * 8)))
    v = g.create_dataset("value", shape=(0, *shape), maxshape=(None, *shape), dtype=dtype,
                         chunks=(chunk_frames, *shape))
    if unit:
        v.attrs["unit"] = unit
    g.create_dataset("step", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
    t = g.create_dataset("time", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(1024,))
    t.attrs["unit"] = "fs"
    return g


def _append(g: h5py.Group, value, step: int, time_fs: float) -> None:
    for name, item in (("value", value), ("step", step), ("time", time_fs)):
        d = g[name]
        n = d.shape[0]
        d.resize(n + 1, axis=0)
        d[n] = item


class TrajectoryWriter:
    """Append frames to an H5MD file.  `TrajectoryWriter.create(path, ...)` starts a new file;
    `TrajectoryWriter.reopen(path, keep_step)` continues one after a restart, dropping frames
    later than `keep_step`.  Use as a context manager; every frame is flushed to disk."""

    def __init__(self, f: h5py.File, write_velocities: bool):
        self.f = f
        self.write_velocities = write_velocities
        self.write_spin = "observables/spin_moments" in f

    @classmethod
    def create(cls, path: str | os.PathLike, *, species, masses, type_map: list[str], cell, parameters: dict,
               write_velocities: bool = False, spin_moments: bool = False,
               author: str = "cathodeml") -> "TrajectoryWriter":
        """New trajectory for N atoms: species [N] type indices, masses [N] amu, cell [3,3] Å;
        `spin_moments` adds the per-atom moment time series."""
        species = np.asarray(species, dtype=np.int32)
        n = species.shape[0]
        f = h5py.File(path, "w")
        try:
            h5 = f.create_group("h5md")
            h5.attrs["version"] = np.array([1, 1], dtype=np.int32)
            h5.create_group("author").attrs["name"] = author
            creator = h5.create_group("creator")
            creator.attrs["name"] = "cathodeml"
            creator.attrs["version"] = __version__
            f.attrs["cathodeml"] = json.dumps({"kind": "trajectory", "format_version": 1, "type_map": list(type_map)})
            part = f.create_group("particles/all")
            _time_element(part, "position", (n, 3), np.float64, "Å")
            _time_element(part, "image", (n, 3), np.int32, None)
            if write_velocities:
                _time_element(part, "velocity", (n, 3), np.float64, "Å fs-1")
            box = part.create_group("box")
            box.attrs["dimension"] = 3
            box.attrs["boundary"] = np.array([b"periodic"] * 3)
            _time_element(box, "edges", (3, 3), np.float64, "Å")
            part.create_dataset("species", data=species)
            part.create_dataset("mass", data=np.asarray(masses, dtype=np.float64)).attrs["unit"] = "amu"
            obs = f.create_group("observables")
            for name in OBSERVABLES:
                _time_element(obs, name, (), np.float64, _UNITS[name])
            if spin_moments:
                _time_element(obs, "spin_moments", (n,), np.float64, "μB")
            params = f.create_group("parameters")
            params.attrs["cathodeml"] = json.dumps({**parameters, "type_map": list(type_map)})
            f.flush()
        except BaseException:
            f.close()
            Path(path).unlink(missing_ok=True)
            raise
        return cls(f, write_velocities)

    @classmethod
    def reopen(cls, path: str | os.PathLike, keep_step: int) -> "TrajectoryWriter":
        """Open an existing trajectory to continue it: frames with step > keep_step are dropped."""
        try:
            f = h5py.File(path, "r+")
        except OSError as exc:
            raise InputFormatError(f"{path}: cannot reopen the trajectory to continue it ({exc})") from exc
        if "particles/all/position" not in f:
            f.close()
            raise InputFormatError(f"{path}: not a cathodeml H5MD trajectory")
        for g in _time_groups(f):
            steps = g["step"][()]
            keep = int(np.searchsorted(steps, keep_step, side="right"))
            for name in ("value", "step", "time"):
                g[name].resize(keep, axis=0)
        f.flush()
        return cls(f, "particles/all/velocity" in f)

    def append(self, *, step: int, time_fs: float, positions, cell, velocities=None, observables: dict,
               spin_moments=None) -> None:
        """Add one frame: positions [N,3] Å (unwrapped), cell [3,3] Å, velocities Å/fs, observables
        {temperature K, potential/kinetic/conserved energy eV}, per-atom spin moments [N] μB (when
        the file has them); flushed to disk."""
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.asarray(cell, dtype=np.float64)
        image = image_counts(positions, cell).astype(np.int32)
        part = self.f["particles/all"]
        _append(part["position"], positions, step, time_fs)
        _append(part["image"], image, step, time_fs)
        if self.write_velocities:
            _append(part["velocity"], np.asarray(velocities, dtype=np.float64), step, time_fs)
        _append(part["box/edges"], cell, step, time_fs)
        for name in OBSERVABLES:
            _append(self.f["observables"][name], float(observables[name]), step, time_fs)
        if self.write_spin:
            _append(self.f["observables/spin_moments"], np.asarray(spin_moments, dtype=np.float64), step, time_fs)
        self.f.flush()

    @property
    def n_frames(self) -> int:
        return int(self.f["particles/all/position/step"].shape[0])

    def close(self) -> None:
        if self.f.id.valid:
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _time_groups(f: h5py.File):
    out = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "value" in obj and "step" in obj and "time" in obj:
            out.append(obj)

    f.visititems(visit)
    return out
