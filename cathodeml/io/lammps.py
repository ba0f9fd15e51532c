"""LAMMPS files: the data file and input deck `export-lammps` writes, and the text dump `analyze` reads.

LAMMPS keeps a triclinic cell in its restricted form -- a along x, b in the xy plane, so the
matrix of row vectors is lower-triangular with positive diagonal -- and every position and force
in its files is in that rotated frame.  `lammps_cell` gives the restricted cell and the rotation;
energies do not change under it, forces and positions rotate with it.

The deck runs the same NVT as `cathodeml md`: LAMMPS's `fix nvt` is the Martyna–Tuckerman–Klein
Nosé–Hoover chain with Q₁ = N_f·k_B·T·τ², Q_j = k_B·T·τ² and N_f = 3N − 3 (zero total momentum),
the scheme DESIGN.md's md conventions follow, so `tchain` and `Tdamp` carry over one to one.  The
dump holds id, element and unwrapped positions (`xu yu zu`) sorted by id, with the simulation time
in its header (`dump_modify time yes units yes`), so `analyze` needs nothing else from LAMMPS; a
side file `<dump>.json` records the target temperature and the type map for it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError

# ITEM: UNITS → factor from the dump's time unit to fs (LAMMPS unit styles with a time unit)
_TIME_UNIT_FS = {"metal": 1000.0, "real": 1.0, "electron": 1.0e-3 * 0.0241888432658, "si": 1.0e15, "cgs": 1.0e15,
                 "micro": 1.0e9, "nano": 1.0e6}
# LAMMPS unit styles whose length unit is Å; others are converted by `_LENGTH_UNIT_A`
_LENGTH_UNIT_A = {"metal": 1.0, "real": 1.0, "electron": 0.529177210903, "si": 1.0e10, "cgs": 1.0e8,
                  "micro": 1.0e4, "nano": 10.0}


def lammps_cell(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(restricted cell [3,3] rows a,b,c lower-triangular, rotation R [3,3]) with cell @ R = restricted,
    so positions and forces go to LAMMPS's frame as `x @ R`.  Refuses a left-handed cell (LAMMPS
    cannot hold one: swap two lattice vectors first)."""
    cell = np.asarray(cell, dtype=float)
    if np.linalg.det(cell) <= 0:
        raise CathodemlError("the cell is left-handed (det < 0); LAMMPS needs a right-handed cell: swap two "
                             "lattice vectors of the structure")
    a, b, c = cell
    lx = np.linalg.norm(a)
    xy = b @ a / lx
    ly = np.sqrt(b @ b - xy**2)
    xz = c @ a / lx
    yz = (b @ c - xy * xz) / ly
    lz = np.sqrt(c @ c - xz**2 - yz**2)
    restricted = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    rotation = np.linalg.solve(cell, restricted)
    return restricted, rotation


def write_data(path: str | os.PathLike, positions: np.ndarray, cell: np.ndarray, types: np.ndarray,
               type_map: Sequence[str], masses: Sequence[float], spins: np.ndarray | None = None) -> np.ndarray:
    """Write a LAMMPS data file (atom_style atomic, or atom_style spin when `spins` [N] gives the
    collinear spin along the structure's z per atom, i.e. along z·R in LAMMPS's frame) in the restricted frame; types are 0-based into type_map,
    masses per type.  Returns the rotation R (positions in the file are `positions @ R`)."""
    restricted, rotation = lammps_cell(cell)
    x = np.asarray(positions, dtype=float) @ rotation
    r = [[_num(v) for v in row] for row in restricted]
    lines = [f"LAMMPS data file written by cathodeml (types: {' '.join(type_map)})", "",
             f"{len(x)} atoms", f"{len(type_map)} atom types", "",
             f"0.0 {r[0][0]} xlo xhi", f"0.0 {r[1][1]} ylo yhi", f"0.0 {r[2][2]} zlo zhi",
             f"{r[1][0]} {r[2][0]} {r[2][1]} xy xz yz", "", "Masses", ""]
    lines += [f"{i + 1} {_num(m)}  # {name}" for i, (name, m) in enumerate(zip(type_map, masses))]
    if spins is None:
        lines += ["", "Atoms  # atomic", ""]
        lines += [f"{n + 1} {int(t) + 1} {_num(p[0])} {_num(p[1])} {_num(p[2])}" for n, (t, p) in enumerate(zip(types, x))]
    else:
        # atom_style spin: id type x y z spx spy spz |sp|, the direction a unit vector.  The collinear
        # axis is the structure's z, which the rotation into LAMMPS's frame turns too.
        axis = rotation[2]
        lines += ["", "Atoms  # spin", ""]
        for n, (t, p, v) in enumerate(zip(types, x, np.asarray(spins, dtype=float))):
            e = axis if v >= 0 else -axis
            lines.append(f"{n + 1} {int(t) + 1} {_num(p[0])} {_num(p[1])} {_num(p[2])} {_num(e[0])} {_num(e[1])} "
                         f"{_num(e[2])} {_num(abs(v))}")
    _write_text(path, "\n".join(lines) + "\n")
    return rotation


@dataclasses.dataclass(frozen=True)
class DeckSettings:
    """One NVT run as `cathodeml md` would do it (times in fs, temperature in K)."""

    temperature_K: float
    n_steps: int
    dt_fs: float = 1.0
    tdamp_fs: float = 100.0
    chain_length: int = 3
    stride: int = 100
    seed: int = 0
    restart_every: int = 10000


def input_script(settings: DeckSettings, type_map: Sequence[str], *, model: str = "model.pth", data: str = "conf.data",
                 dump: str = "traj.lammpstrj", spin: bool = False, skin: float = 2.0) -> str:
    """The LAMMPS input of an NVT run with the DeePMD-kit pair style (deepspin for spin models).

    `skin` (Å): LAMMPS's neighbour skin.  pair_style deepspin finds a virtual atom only through its
    host's entry in the list, so for spin models the skin must also cover the longest virtual offset."""
    s = settings
    names = " ".join(type_map)
    if s.seed <= 0:
        raise CathodemlError("LAMMPS needs a positive velocity seed (--seed ≥ 1)")
    return f"""# NVT (Nosé–Hoover chain) with a cathodeml model through the DeePMD-kit plugin; written by cathodeml export-lammps
units           metal
boundary        p p p
atom_style      {"spin" if spin else "atomic"}
atom_modify     map array
read_data       {data}

pair_style      {"deepspin" if spin else "deepmd"} {model}
pair_coeff      * * {names}
neighbor        {_num(skin)} bin
neigh_modify    every 1 delay 0 check yes

timestep        {_num(s.dt_fs / 1000.0)}
velocity        all create {_num(s.temperature_K)} {s.seed} dist gaussian mom yes rot no
fix             nvt all nvt temp {_num(s.temperature_K)} {_num(s.temperature_K)} {_num(s.tdamp_fs / 1000.0)} tchain {s.chain_length}

# thermo: econserve = etotal + the thermostat's energy (cathodeml md's conserved quantity)
thermo_style    custom step time temp pe ke etotal econserve
thermo_modify   format float %.10f
thermo          {s.stride}
dump            traj all custom {s.stride} {dump} id element xu yu zu
dump_modify     traj sort id element {names} time yes units yes format float %.10f
restart         {s.restart_every} restart.a.lmp restart.b.lmp
run             {s.n_steps}
write_restart   restart.final.lmp
"""


def slurm_script(*, job_name: str = "cathodeml-lammps", spin: bool = False) -> str:
    """A SLURM batch script for the deck (one GPU per rank where the nodes have them)."""
    return f"""#!/bin/bash
# Run the deck with LAMMPS + the DeePMD-kit plugin (pip install "deepmd-kit[torch,lmp]==3.2.0"; on CPU-only
# nodes also nvidia-cuda-runtime-cu12, with its nvidia/cuda_runtime/lib on LD_LIBRARY_PATH).
#SBATCH --job-name={job_name}
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-task=1
#SBATCH --time=24:00:00
set -euo pipefail
cd "$SLURM_SUBMIT_DIR"
# LAMMPS reads DeePMD-kit's PyTorch format; the deck ships the backend-neutral .dp
[ -e model.pth ] || dp --pt convert-backend model.dp model.pth
export OMP_NUM_THREADS=${{SLURM_CPUS_PER_TASK:-1}}
srun lmp -in in.lammps -log log.lammps
# then: cathodeml analyze traj.lammpstrj --species Li -o analysis{"  (spin model: pair_style deepspin, spins fixed)" if spin else ""}
"""


def write_dump_metadata(dump_path: str | os.PathLike, *, temperature_K: float, type_map: Sequence[str],
                        dt_fs: float, model: str) -> None:
    _write_text(f"{dump_path}.json", json.dumps({"written_by": "cathodeml export-lammps", "temperature_K": temperature_K,
                                                 "type_map": list(type_map), "timestep_fs": dt_fs, "model": model},
                                                indent=2) + "\n")


def _num(value) -> str:
    """A float as the shortest text that reads back exactly."""
    return repr(float(value))


def _write_text(path, text: str) -> None:
    from cathodeml.io.atomic import atomic_output

    with atomic_output(Path(path)) as tmp:
        Path(tmp).write_text(text)


# ---------------------------------------------------------------------------------- reading dumps


def is_lammps_dump(path: Path) -> bool:
    """A LAMMPS text dump starts with `ITEM: TIMESTEP` (or UNITS/TIME with dump_modify units/time yes),
    also when named otherwise than *.lammpstrj."""
    try:
        with open(path, "rb") as fh:
            return fh.read(16).startswith((b"ITEM: TIMESTEP", b"ITEM: UNITS", b"ITEM: TIME"))
    except OSError:
        return False


@dataclasses.dataclass(frozen=True)
class DumpIndex:
    """Where each frame of a dump starts, and what its header says.

    offsets [nf] byte offset of each `ITEM: TIMESTEP`; steps [nf]; times_fs [nf] or None; columns
    of the ATOMS section; n_atoms; unit style (or None); metadata from `<dump>.json` (or {})."""

    path: Path
    offsets: np.ndarray
    steps: np.ndarray
    times_fs: np.ndarray | None
    columns: tuple[str, ...]
    n_atoms: int
    units: str | None
    metadata: dict


def index_dump(path: Path) -> DumpIndex:
    """Scan a dump once: the offset, step and time of every frame (positions are read later, by chunk)."""
    offsets, steps, times = [], [], []
    columns, n_atoms, units = None, None, None
    with open(path, "rb") as fh:
        while True:
            start = fh.tell()
            line = fh.readline()
            if not line:
                break
            if not line.startswith(b"ITEM: "):
                raise InputFormatError(f"{path}: expected an ITEM line at byte {start}, found {line[:40]!r}")
            item = line[6:].strip().decode()
            if item == "UNITS":
                units = fh.readline().strip().decode()
            elif item == "TIME":
                times.append(float(fh.readline()))
            elif item == "TIMESTEP":
                offsets.append(start)
                steps.append(int(fh.readline()))
            elif item == "NUMBER OF ATOMS":
                n = int(fh.readline())
                if n_atoms is not None and n != n_atoms:
                    raise InputFormatError(f"{path}: frame {len(offsets) - 1} has {n} atoms, the first has {n_atoms}; "
                                           "transport analysis needs a fixed set of atoms")
                n_atoms = n
            elif item.startswith("BOX BOUNDS"):
                for _ in range(3):
                    fh.readline()
            elif item.startswith("ATOMS"):
                cols = tuple(item.split()[1:])
                if columns is not None and cols != columns:
                    raise InputFormatError(f"{path}: the ATOMS columns change between frames")
                columns = cols
                complete = True
                for _ in range(n_atoms or 0):
                    if not fh.readline().endswith(b"\n"):
                        complete = False
                        break
                if not complete or fh.peek(1)[:1] not in (b"", b"I"):
                    # the last frame of a dump LAMMPS is still writing: leave it out, keep the rest
                    if not complete and not fh.read(1):
                        warnings.warn(f"{path}: the last frame (step {steps[-1]}) is incomplete and was left out "
                                      "(is LAMMPS still writing it?)", stacklevel=2)
                        del offsets[-1], steps[-1]
                        times = times[:len(offsets)]
                        break
                    raise InputFormatError(f"{path}: frame {len(offsets) - 1} has fewer than {n_atoms} atom lines "
                                           "(a truncated or corrupted dump)")
            else:
                raise InputFormatError(f"{path}: unknown dump item {item!r}")
    if not offsets or columns is None:
        raise InputFormatError(f"{path}: no frames found in the LAMMPS dump")
    meta_path = Path(f"{path}.json")
    metadata = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    time_fs = None
    if len(times) == len(offsets):
        if units is None:
            raise InputFormatError(f"{path}: the dump has ITEM: TIME but no ITEM: UNITS; add `units yes` to dump_modify")
        time_fs = np.asarray(times) * _TIME_UNIT_FS[units]
    elif metadata.get("timestep_fs"):
        time_fs = (np.asarray(steps) - steps[0]) * float(metadata["timestep_fs"])
    return DumpIndex(path=path, offsets=np.asarray(offsets), steps=np.asarray(steps), times_fs=time_fs,
                     columns=columns, n_atoms=int(n_atoms), units=units, metadata=metadata)


def position_columns(columns: Sequence[str]) -> tuple[list[str], bool, bool]:
    """(the three position columns, unwrapped?, image counts to apply?) from the ATOMS header (image
    counts only for wrapped positions: xu yu zu already include them)."""
    for names, unwrapped in ((["xu", "yu", "zu"], True), (["x", "y", "z"], False), (["xs", "ys", "zs"], False),
                             (["xsu", "ysu", "zsu"], True)):
        if all(n in columns for n in names):
            return names, unwrapped, not unwrapped and all(n in columns for n in ("ix", "iy", "iz"))
    raise InputFormatError(f"the dump's ATOMS columns {' '.join(columns)} hold no positions (xu yu zu, x y z or xs ys zs)")


def dump_symbols(index: DumpIndex) -> list[str]:
    """Element names per atom (by id) from the first frame: the `element` column, or `type` through
    the type map of `<dump>.json`."""
    frame = read_frames(index, [0])
    if frame.symbols is not None:
        return frame.symbols
    type_map = index.metadata.get("type_map")
    if not type_map:
        raise InputFormatError(f"{index.path}: the dump has neither an element column nor a {index.path}.json with "
                               "the type map; add `element` to the dump (dump_modify element ...)")
    if frame.types.min() < 1 or frame.types.max() > len(type_map):
        raise InputFormatError(f"{index.path}: atom types {frame.types.min()}..{frame.types.max()} do not fit the type "
                               f"map {type_map}")
    return [type_map[t - 1] for t in frame.types]


@dataclasses.dataclass
class DumpFrames:
    positions: np.ndarray  # [nf, N, 3] Å, by atom id
    cells: np.ndarray  # [nf, 3, 3] Å
    images: np.ndarray | None
    symbols: list[str] | None
    types: np.ndarray | None


def read_frames(index: DumpIndex, frames: Sequence[int], atoms: np.ndarray | None = None) -> DumpFrames:
    """Positions (sorted by atom id), cells and image counts of the given frames."""
    names, _, has_images = position_columns(index.columns)
    col = {c: i for i, c in enumerate(index.columns)}
    length = _LENGTH_UNIT_A.get(index.units or "metal", 1.0)
    n = index.n_atoms
    pos, cells, imgs = [], [], []
    symbols = types = None
    with open(index.path, "rb") as fh:
        for k in frames:
            fh.seek(int(index.offsets[k]))
            box = None
            while True:
                line = fh.readline()
                if line.startswith(b"ITEM: BOX BOUNDS"):
                    box = _box(line, [fh.readline() for _ in range(3)], index.path)
                elif line.startswith(b"ITEM: ATOMS"):
                    break
                elif not line:
                    raise InputFormatError(f"{index.path}: frame {k} is truncated")
            rows = np.array(b"".join(fh.readline() for _ in range(n)).split(), dtype=object).reshape(n, len(col))
            order = np.argsort(rows[:, col["id"]].astype(np.int64)) if "id" in col else np.arange(n)
            rows = rows[order]
            if box is None:
                raise InputFormatError(f"{index.path}: frame {k} has no BOX BOUNDS")
            x = rows[:, [col[c] for c in names]].astype(float)
            if names[0].startswith("xs"):  # scaled coordinates
                x = x @ box
            else:
                x = x * length
            pos.append(x if atoms is None else x[atoms])
            cells.append(box * (1.0 if names[0].startswith("xs") else length))
            if has_images:
                im = rows[:, [col["ix"], col["iy"], col["iz"]]].astype(np.int64)
                imgs.append(im if atoms is None else im[atoms])
            if symbols is None and "element" in col:
                symbols = [s.decode() for s in rows[:, col["element"]]]
            if types is None and "type" in col:
                types = rows[:, col["type"]].astype(np.int64)
    return DumpFrames(positions=np.array(pos), cells=np.array(cells), images=np.array(imgs) if has_images else None,
                      symbols=symbols, types=types)


def dump_chunks(index: DumpIndex, atoms, frames: range, length: int) -> Iterator[tuple[int, DumpFrames]]:
    for lo in range(0, len(frames), length):
        yield lo, read_frames(index, list(frames[lo:lo + length]), atoms)


def _box(header: bytes, lines: list[bytes], path: Path) -> np.ndarray:
    """The cell (rows a, b, c) of a BOX BOUNDS item, orthogonal or triclinic (xy xz yz)."""
    try:
        values = [[float(v) for v in ln.split()] for ln in lines]
    except ValueError as exc:
        raise InputFormatError(f"{path}: unreadable BOX BOUNDS ({exc})") from exc
    if b"abc origin" in header:  # general triclinic (LAMMPS ≥ 2024): rows are the vectors a, b, c, then the origin
        return np.array([v[:3] for v in values])
    (xlo_b, xhi_b, *t0), (ylo_b, yhi_b, *t1), (zlo, zhi, *t2) = values
    xy, xz, yz = (t0[0], t1[0], t2[0]) if t0 else (0.0, 0.0, 0.0)
    # the bounds enclose the tilted box: remove the tilt to get the box's own extent
    xlo = xlo_b - min(0.0, xy, xz, xy + xz)
    xhi = xhi_b - max(0.0, xy, xz, xy + xz)
    ylo = ylo_b - min(0.0, yz)
    yhi = yhi_b - max(0.0, yz)
    return np.array([[xhi - xlo, 0.0, 0.0], [xy, yhi - ylo, 0.0], [xz, yz, zhi - zlo]])
