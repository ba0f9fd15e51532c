"""A fast, strict, streaming reader of VASP OUTCAR files: frames with energies, forces, stresses, moments.

Why it is built this way: OUTCARs run to gigabytes, and line-by-line Python (dpdata, pymatgen)
spends most of its time deciding what each line is.  Here the (decompressed) text is read in
chunks of a few MB into a `bytes` buffer, and every search is a C-level `find`/`rfind`/regex
over it: the text is split into ionic steps at each `free  energy   TOTEN` line -- the one marker
VASP writes exactly once per finished ionic step -- and inside each step we look *backwards* for
the last force table, cell, stress, `magnetization (x/y/z)` table and SCF iteration header.  A
finished step is parsed and dropped from the buffer, so memory stays at one chunk plus one step.
Taking the last table inside the step (never counting tables over the file) is what keeps
moments aligned with frames: VASP prints extra tables during the SCF loop and once more after
the last step.  Tables are converted with one `float` conversion of the whole block; only a
malformed (fused-number) block falls back to a regex.  The reader returns every complete step
with its SCF-convergence flag and leaves the keep/skip policy to the caller.  Units: Å, eV,
eV/Å, μB; virials in eV.
"""

from __future__ import annotations

import bz2
import dataclasses
import glob
import gzip
import hashlib
import lzma
import os
import re
import zlib
from pathlib import Path

import numpy as np

from cathodeml.errors import InputFormatError
from cathodeml.units import kbar_stress_to_virial

ENERGY_KINDS = ("free", "sigma0")
CHUNK_BYTES = 8 << 20  # bytes of OUTCAR text read at a time (memory ≈ this + one ionic step)
ORBITALS = ("s", "p", "d", "f")

_TOTEN = b"free  energy   TOTEN"
_TOTEN_VALUE = re.compile(rb"free  energy   TOTEN\s*=\s*(\S+)\s+eV")
_SIGMA0_VALUE = re.compile(rb"energy\(sigma->0\)\s*=\s*(\S+)")
_ITERATION = re.compile(rb"Iteration\s*(\d+)\(\s*(\d+)\)")
_ITERATION_HEADER = re.compile(rb"-{3,} Iteration")
_FLOAT = re.compile(rb"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# One row of a per-atom table: ion index, then numbers.
_TABLE_ROWS = re.compile(rb"(?:[ \t]*\d+(?:[ \t]+[-+]?\d*\.\d+(?:[eE][-+]?\d+)?)+[ \t]*\r?\n)+")
_VERSION = re.compile(rb"vasp\.(\d+\.\d+\.\d+)")
_IONS_PER_TYPE = re.compile(rb"ions per type\s*=\s*([\d \t]+)")
_NIONS = re.compile(rb"NIONS\s*=\s*(\d+)")
_TITEL = re.compile(rb"TITEL\s*=\s*\S+\s+(\S+)")
_VRHFIN = re.compile(rb"VRHFIN\s*=\s*([A-Za-z]+)\s*:")
_ISPIN = re.compile(rb"ISPIN\s*=\s*(\d+)\s+spin polarized")
_LNONCOLLINEAR = re.compile(rb"LNONCOLLINEAR\s*=\s*([TF])")
_NUPDOWN = re.compile(rb"NUPDOWN\s*=\s*(\S+)\s+fix difference")
_NELM = re.compile(rb"NELM\s*=\s*(\d+)\s*;")
_LORBIT = re.compile(rb"LORBIT\s*=\s*(\d+)\s+0 simple")
_INCAR_MAGMOM = re.compile(rb"^[ \t]*MAGMOM[ \t]*=[ \t]*([^\n!#]*)", re.M)
_ELEMENT = re.compile(r"^([A-Z][a-z]?)")

# Printable ASCII plus tab/newline/CR/form feed; anything else in bulk means binary data.
_TEXT_BYTES = bytes(range(32, 127)) + b"\t\n\r\f\v"


@dataclasses.dataclass
class OutcarRun:
    """Everything read from one OUTCAR: one entry per complete ionic step ("frame").

    Arrays (frames first): cells [nf,3,3] Å (rows = lattice vectors); coords [nf,na,3] Å
    (Cartesian); energies [nf] eV (TOTEN or E(sigma→0), see `energy_kind`); forces [nf,na,3]
    eV/Å; virials [nf,3,3] eV or None when no step printed a stress; magmom [nf,na] μB (`tot`
    column, z for non-collinear; NaN where no table); magmom_orbital [nf,na,4] μB (s,p,d,f;
    NaN where missing or not printed); spin [nf,na,3] μB moment vectors (collinear: (0,0,m);
    zeros where missing); has_moments [nf]; total_magnetization [nf] μB (z for non-collinear,
    0 for ISPIN=1, NaN where not printed); scf_converged [nf]; ionic_step [nf] (1-based);
    initial_magmom [na] μB (NaN when not echoed).  `n_incomplete` counts a step the run was cut
    off in, `n_malformed` finished steps whose tables could not be read (both dropped); `notes`
    are human-readable warnings.
    """

    path: str
    sha256: str
    n_bytes: int
    vasp_version: str
    species: list[str]
    ispin: int
    noncollinear: bool
    nupdown: float
    nelm: int | None
    lorbit: int | None
    initial_magmom: np.ndarray
    energy_kind: str
    cells: np.ndarray
    coords: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    virials: np.ndarray | None
    magmom: np.ndarray
    magmom_orbital: np.ndarray
    spin: np.ndarray
    has_moments: np.ndarray
    total_magnetization: np.ndarray
    scf_converged: np.ndarray
    ionic_step: np.ndarray
    finished: bool
    n_incomplete: int
    n_malformed: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.energies.shape[0])

    @property
    def n_atoms(self) -> int:
        return len(self.species)


# ----------------------------------------------------------------------------- files


def find_outcars(paths: list[str | os.PathLike]) -> list[Path]:
    """Expand OUTCAR files, directories (searched recursively for names containing OUTCAR) and globs.

    Returns existing files in a stable order without duplicates (paths as given, compared by
    their real path); a path that matches nothing is an InputFormatError naming it.
    """
    found: list[Path] = []
    for raw in paths:
        text = str(raw)
        p = Path(text)
        if p.is_dir():
            hits = _outcars_under(p)
            if not hits:
                raise InputFormatError(f"{p}: the directory holds no file named like OUTCAR (OUTCAR*, *.OUTCAR.gz ...)")
            found.extend(hits)
        elif p.exists():
            found.append(p)
        elif any(c in text for c in "*?["):
            hits = sorted(Path(h) for h in glob.glob(text, recursive=True))
            files = [h for h in hits if h.is_file()]
            for d in (h for h in hits if h.is_dir()):
                files.extend(_outcars_under(d))
            if not files:
                raise InputFormatError(f"{text}: the pattern matches no file")
            found.extend(files)
        else:
            raise InputFormatError(f"{p}: no such file or directory")
    seen, unique = set(), []
    for q in found:  # keep the paths as the user wrote them (messages), deduplicated by real path
        if q.resolve() not in seen:
            seen.add(q.resolve())
            unique.append(q)
    return unique


def _outcars_under(directory: Path) -> list[Path]:
    """Files below `directory` whose name contains 'OUTCAR' (OUTCAR, OUTCAR.gz, run1.OUTCAR ...)."""
    return sorted(q for q in directory.rglob("*OUTCAR*") if q.is_file() and not q.name.startswith("."))


def outcar_chunks(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, progress=None):
    """Yield the text of an OUTCAR in chunks of bytes, decompressing gzip, bzip2 or xz on the fly.

    The compression is recognised from the file's magic bytes, not its name.  Unreadable,
    empty and corrupt-archive files raise InputFormatError with the reason.  `progress`, if
    given, is called with the bytes of the file (as stored, compressed or not) read so far.
    """
    p = Path(path)
    try:
        raw = open(p, "rb")
    except PermissionError:
        raise InputFormatError(f"{p}: permission denied; make the file readable (chmod +r)") from None
    except IsADirectoryError:
        raise InputFormatError(f"{p}: is a directory, not an OUTCAR") from None
    except FileNotFoundError:
        raise InputFormatError(f"{p}: no such file") from None
    except OSError as exc:
        raise InputFormatError(f"{p}: cannot be read ({exc.strerror or exc})") from None
    with raw:
        magic = raw.read(6)
        raw.seek(0)
        if not magic:
            raise InputFormatError(f"{p}: the file is empty (0 bytes); was the VASP run started?")
        opener = {b"\x1f\x8b": gzip.GzipFile, b"BZh": bz2.BZ2File, b"\xfd7zXZ\x00": lzma.LZMAFile}
        kind = next((fn for m, fn in opener.items() if magic.startswith(m)), None)
        stream = raw if kind is None else kind(fileobj=raw) if kind is gzip.GzipFile else kind(raw)
        first = True
        while True:
            try:
                chunk = stream.read(chunk_bytes)
            except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
                raise InputFormatError(f"{p}: corrupt or truncated compressed file ({exc}); re-copy it") from None
            if not chunk:
                if first:
                    raise InputFormatError(f"{p}: the file is empty after decompression")
                return
            first = False
            if progress is not None:
                progress(raw.tell())
            yield chunk


def _check_text(chunk: bytes, offset: int, first: bool, where: str) -> None:
    """Refuse binary data (judged on the first 64 kB) and NUL-byte holes, saying where."""
    if first:
        sample = chunk[:65536].replace(b"\x00", b"")  # NUL runs are holes, judged below
        if len(sample.translate(None, _TEXT_BYTES)) > 0.05 * max(len(sample), 1):
            raise InputFormatError(f"{where}: binary data, not a text OUTCAR")
    hole = chunk.find(b"\x00")
    if hole >= 0:
        raise InputFormatError(
            f"{where}: NUL-byte hole at byte {offset + hole}, the file is damaged; "
            f"re-copy it from the run, or pass --skip-bad to ingest the other files without it"
        )


def read_outcar(path: str | os.PathLike, *, energy: str = "free", chunk_bytes: int = CHUNK_BYTES,
                progress=None) -> OutcarRun:
    """Read one OUTCAR (plain/.gz/.bz2/.xz) into an OutcarRun, streaming it in chunks.

    `energy` is "free" (TOTEN, the force-consistent free energy, eV) or "sigma0" (E(sigma→0)).
    Memory stays near `chunk_bytes` plus one ionic step, whatever the file size.  `sha256` is of
    the decompressed text, so a file and its compressed copy are one source.  `progress(n)` is
    called with the bytes of the file read so far.
    """
    return parse_outcar_chunks(outcar_chunks(path, chunk_bytes, progress), source=str(path), energy=energy)


# ----------------------------------------------------------------------------- parsing


def parse_outcar(text: bytes, *, source: str = "<text>", energy: str = "free") -> OutcarRun:
    """Parse the bytes of a whole OUTCAR; see OutcarRun for what comes back and its units."""
    if not text:
        raise InputFormatError(f"{source}: the file is empty (0 bytes); was the VASP run started?")
    return parse_outcar_chunks([text], source=source, energy=energy)


def parse_outcar_chunks(chunks, *, source: str = "<text>", energy: str = "free") -> OutcarRun:
    """Parse an OUTCAR given as an iterable of byte chunks (any split); see OutcarRun for units.

    Finished ionic steps are parsed as soon as their TOTEN line (plus the E(sigma→0) line after
    it) is in the buffer, and dropped from it; only the unfinished remainder is carried over.
    """
    if energy not in ENERGY_KINDS:
        raise InputFormatError(f"energy must be one of {', '.join(ENERGY_KINDS)}, not {energy!r}")
    hasher = hashlib.sha256()
    n_bytes = 0
    buf = b""
    info = None
    frames: list[dict] = []
    failed: list[int] = []  # 1-based ionic steps whose tables could not be read
    n_steps = 0  # TOTEN lines seen
    last_cell = None
    seen = {"iteration": False, "ml": False}  # in text dropped unparsed (see _MAX_CARRY)
    for chunk in chunks:
        _check_text(chunk, n_bytes, n_bytes == 0, source)
        hasher.update(chunk)
        n_bytes += len(chunk)
        buf = buf + chunk if buf else chunk
        if info is None:
            head_end = _header_end(buf)
            if head_end is None:
                continue
            info = _parse_header(buf[:head_end], source)
            last_cell = info["initial_cell"]
        buf, n_steps, last_cell = _parse_steps(buf, info, energy, last_cell, frames, failed, n_steps, _LOOKAHEAD)
        if len(buf) > 2 * _MAX_CARRY:  # a step without end in sight: its tables lie near its end
            dropped = buf[: len(buf) - _MAX_CARRY]
            seen["iteration"] |= _ITERATION_HEADER.search(dropped) is not None
            seen["ml"] |= _ML_TOTEN in dropped
            buf = buf[len(buf) - _MAX_CARRY :]
    if n_bytes == 0:
        raise InputFormatError(f"{source}: the file is empty")
    if info is None:
        info = _parse_header(buf, source)
        last_cell = info["initial_cell"]
    seen["iteration"] |= _ITERATION_HEADER.search(buf) is not None  # only looked at when no step finished
    seen["ml"] |= _ML_TOTEN in buf
    buf, n_steps, last_cell = _parse_steps(buf, info, energy, last_cell, frames, failed, n_steps, 0)
    tail = buf
    finished = b"General timing and accounting" in tail
    n_incomplete = 0
    if failed and failed[-1] == n_steps and not finished:
        failed.pop()  # the run was cut off inside its last step (e.g. in the energy lines)
        n_incomplete += 1
    if _ITERATION_HEADER.search(tail) and not finished:
        n_incomplete += 1
    if not frames:
        if n_steps == 0 and seen["ml"]:
            raise InputFormatError(f"{source}: only machine-learned force-field steps ('free  energy ML TOTEN'), "
                                   "no DFT step to ingest")
        if n_steps == 0 and not seen["iteration"]:
            raise InputFormatError(f"{source}: no ionic step started (the run stopped during set-up); nothing to ingest")
        raise InputFormatError(f"{source}: no complete ionic step (the run stopped before the first one ended)")
    return _assemble(frames, info, energy, source, hasher.hexdigest(), n_bytes, finished, n_incomplete, failed)


# Bytes that must follow a TOTEN line before its step is parsed mid-stream (the E(sigma→0) line).
_LOOKAHEAD = 1024
# An unfinished step longer than twice this keeps only its last _MAX_CARRY bytes (one SCF
# iteration is ~0.1-1 MB; the tables a frame needs come after the last one), bounding memory.
_MAX_CARRY = 64 << 20
_ML_TOTEN = b"free  energy ML TOTEN"


def _header_end(buf: bytes) -> int | None:
    """End of the set-up part: the first SCF iteration header or TOTEN line; None if not yet seen."""
    first_iter = _ITERATION_HEADER.search(buf)
    first_toten = buf.find(_TOTEN)
    ends = [x for x in (first_iter.start() if first_iter else -1, first_toten) if x >= 0]
    return min(ends) if ends else None


def _parse_steps(buf, info, energy, last_cell, frames, failed, n_steps, lookahead):
    """Parse every finished step in `buf` (TOTEN line + `lookahead` bytes present); return the rest."""
    na = len(info["species"])
    start = 0
    limit = len(buf) - lookahead
    pos = buf.find(_TOTEN)
    while 0 <= pos and (lookahead == 0 or pos < limit):
        n_steps += 1
        frame = _parse_step(buf, start, pos, na, info, energy, last_cell)
        line_end = buf.find(b"\n", pos)
        start = len(buf) if line_end < 0 else line_end + 1
        if frame is None:
            failed.append(n_steps)
        else:
            frame["ionic_step"] = n_steps
            last_cell = frame["cell"]
            frames.append(frame)
        pos = buf.find(_TOTEN, start)
    return buf[start:], n_steps, last_cell


def _assemble(frames, info, energy, source, sha256, n_bytes, finished, n_incomplete, malformed) -> OutcarRun:
    """Stack per-step dicts into an OutcarRun and write the notes a user should read."""
    species, na = info["species"], len(info["species"])
    notes: list[str] = []
    if n_incomplete:
        notes.append(f"{n_incomplete} incomplete ionic step(s) dropped (the run was cut off)")
    if malformed:
        shown = ", ".join(map(str, malformed[:10])) + (" ..." if len(malformed) > 10 else "")
        notes.append(f"{len(malformed)} ionic step(s) with unreadable tables dropped (steps {shown})")
    if not finished:
        notes.append("run unfinished (no timing footer); complete steps kept")

    nf = len(frames)
    stack = lambda key: np.stack([f[key] for f in frames])  # noqa: E731
    has_virial = [f["stress"] is not None for f in frames]
    virials = None
    if all(has_virial):
        virials = _virials(stack("stress"), stack("cell"))
    elif any(has_virial):
        notes.append("stress printed for only some steps; virials dropped for this file")
    magmom = np.full((nf, na), np.nan)
    orbital = np.full((nf, na, 4), np.nan)
    spin = np.zeros((nf, na, 3))
    has = np.zeros(nf, dtype=bool)
    for i, f in enumerate(frames):
        if f["moments"] is not None:
            vec, orb = f["moments"]
            spin[i] = vec
            magmom[i] = vec[:, 2]
            orbital[i] = orb
            has[i] = True
    if info["ispin"] == 2 and not info["noncollinear"] and not has.any():
        lorbit = info["lorbit"]
        notes.append(
            f"ISPIN=2 but no per-atom magnetization table (LORBIT={'unset' if lorbit is None else lorbit}); "
            "moments marked missing: rerun VASP with LORBIT=11 to get them"
        )
    elif (info["ispin"] == 2 or info["noncollinear"]) and not has.all():
        notes.append(f"{int(nf - has.sum())} step(s) without a magnetization table: moments marked missing")
    return OutcarRun(
        path=source,
        sha256=sha256,
        n_bytes=n_bytes,
        vasp_version=info["version"],
        species=species,
        ispin=info["ispin"],
        noncollinear=info["noncollinear"],
        nupdown=info["nupdown"],
        nelm=info["nelm"],
        lorbit=info["lorbit"],
        initial_magmom=info["initial_magmom"],
        energy_kind=energy,
        cells=stack("cell"),
        coords=stack("coords"),
        energies=np.array([f["energy"] for f in frames]),
        forces=stack("forces"),
        virials=virials,
        magmom=magmom,
        magmom_orbital=orbital,
        spin=spin,
        has_moments=has,
        total_magnetization=np.array([f["total_mag"] for f in frames]),
        scf_converged=np.array([f["converged"] for f in frames], dtype=bool),
        ionic_step=np.array([f["ionic_step"] for f in frames], dtype=np.int64),
        finished=finished,
        n_incomplete=n_incomplete,
        n_malformed=len(malformed),
        notes=notes,
    )


def _parse_header(head: bytes, source: str) -> dict:
    version = _VERSION.search(head[:4096])
    counts_m = _IONS_PER_TYPE.search(head)
    if version is None and counts_m is None:
        raise InputFormatError(f"{source}: not a VASP OUTCAR (no 'vasp.X.Y.Z' banner, no 'ions per type' line)")
    if counts_m is None:
        raise InputFormatError(f"{source}: no 'ions per type' line; the OUTCAR header is incomplete")
    counts = [int(x) for x in counts_m.group(1).split()]
    names = [_element(m.decode(errors="replace")) for m in _TITEL.findall(head)]
    if len(names) < len(counts):
        names = [_element(m.decode(errors="replace")) for m in _VRHFIN.findall(head)]
    if len(names) < len(counts) or None in names[: len(counts)]:
        raise InputFormatError(f"{source}: cannot tell the elements (POTCAR TITEL lines missing or unreadable)")
    names = names[: len(counts)]
    species = [n for n, c in zip(names, counts) for _ in range(c)]
    nions = _NIONS.search(head)
    if nions is not None and int(nions.group(1)) != len(species):
        raise InputFormatError(f"{source}: NIONS={int(nions.group(1))} but 'ions per type' sums to {len(species)}")
    ispin_m = _ISPIN.search(head)
    ispin = int(ispin_m.group(1)) if ispin_m else 1
    nc_m = _LNONCOLLINEAR.search(head)
    noncollinear = bool(nc_m and nc_m.group(1) == b"T")
    nupdown_m = _NUPDOWN.search(head)
    nupdown = float(nupdown_m.group(1)) if nupdown_m else np.nan
    if nupdown < 0:
        nupdown = np.nan  # VASP prints -1 for "not fixed"
    nelm_m = _NELM.search(head)
    lorbit_m = _LORBIT.search(head)
    cell = None
    q = head.rfind(b"direct lattice vectors")
    if q >= 0:
        cell = _parse_cell(head, q)
    return {
        "version": version.group(1).decode() if version else "unknown",
        "species": species,
        "ispin": ispin,
        "noncollinear": noncollinear,
        "nupdown": nupdown,
        "nelm": int(nelm_m.group(1)) if nelm_m else None,
        "lorbit": int(lorbit_m.group(1)) if lorbit_m else None,
        "initial_magmom": _initial_magmom(head, len(species), noncollinear, ispin),
        "initial_cell": cell,
    }


def _element(potcar_name: str) -> str | None:
    m = _ELEMENT.match(potcar_name)
    return m.group(1) if m else None


def _initial_magmom(head: bytes, na: int, noncollinear: bool, ispin: int) -> np.ndarray:
    """MAGMOM from the INCAR echo (VASP ≥ 6.2) or VASP's 'default of 1' warning; else NaN."""
    out = np.full(na, np.nan)
    incar_start = head.find(b" INCAR:")
    if incar_start >= 0:
        incar_end = head.find(b"POTCAR:", incar_start)
        echo = head[incar_start:incar_end if incar_end >= 0 else len(head)]
        m = _INCAR_MAGMOM.search(echo)
        if m:
            values = _expand_magmom(m.group(1).decode(errors="replace"))
            if values is not None:
                if noncollinear and len(values) == 3 * na:
                    return np.asarray(values[2::3], dtype=float)
                if len(values) == na:
                    return np.asarray(values, dtype=float)
            return out  # echoed but not understood (e.g. too few values): not reliable
    if ispin == 2 or noncollinear:
        flat = re.sub(rb"[|\s]+", b" ", head[: head.find(b"ions per type")])
        if b"did not specify the initial magnetic moment with the MAGMOM tag" in flat and b"default of 1 will be used for all atoms" in flat:
            out[:] = 1.0
    return out


def _expand_magmom(text: str) -> list[float] | None:
    """Expand VASP's `n*value` shorthand, e.g. '2*1.5 -1' → [1.5, 1.5, -1.0]; None if malformed."""
    values: list[float] = []
    try:
        for token in text.split():
            if "*" in token:
                n, v = token.split("*", 1)
                values.extend([float(v)] * int(n))
            else:
                values.append(float(token))
    except ValueError:
        return None
    return values


def _parse_step(text: bytes, start: int, end: int, na: int, info: dict, energy: str, last_cell):
    """One ionic step between byte offsets start..end (end = its TOTEN line); None if incomplete."""
    m = _TOTEN_VALUE.match(text, end)
    if m is None:
        return None
    try:
        e_free = float(m.group(1))
    except ValueError:
        return None
    if energy == "sigma0":
        s = _SIGMA0_VALUE.search(text, m.end(), m.end() + 400)
        if s is None:
            return None
        try:
            e_value = float(s.group(1))
        except ValueError:
            return None
    else:
        e_value = e_free

    # Positions and forces: the last TOTAL-FORCE table of the step.
    p = text.rfind(b"TOTAL-FORCE (eV/Angst)", start, end)
    if p < 0:
        return None
    rows_start = _skip_lines(text, p, 2)
    rows_end = text.find(b"---", rows_start, end)
    if rows_end < 0:
        return None
    table = _floats(text[rows_start:rows_end], 6 * na)
    if table is None:
        return None
    table = table.reshape(na, 6)

    q = text.rfind(b"direct lattice vectors", start, p)
    cell = _parse_cell(text, q) if q >= 0 else last_cell
    if cell is None:
        return None

    stress = None  # kBar, VASP's "in kB" line: XX YY ZZ XY YZ ZX
    s = text.rfind(b"  in kB ", start, p)
    if s >= 0:
        stress = _floats(text[s + 8 : text.find(b"\n", s)], 6)

    it = text.rfind(b"Iteration", start, end)
    converged = True
    nelm = info["nelm"]
    if it >= 0 and nelm is not None:
        im = _ITERATION.match(text, it)
        if im is not None and int(im.group(2)) >= nelm:
            converged = False
    if text.find(b"EDIFF was not reached", start, end) >= 0:
        converged = False

    return {
        "energy": e_value,
        "coords": table[:, :3],
        "forces": table[:, 3:],
        "cell": cell,
        "stress": stress,
        "converged": converged,
        "moments": _parse_moments(text, start, end, na, info["noncollinear"]),
        "total_mag": _total_magnetization(text, start, end, info),
    }


def _virials(stress_kbar: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Virials [nf,3,3] eV from VASP's "in kB" rows [nf,6] (XX YY ZZ XY YZ ZX) and cells [nf,3,3] Å."""
    xx, yy, zz, xy, yz, zx = stress_kbar.T
    tensor = np.stack([np.stack([xx, xy, zx], -1), np.stack([xy, yy, yz], -1), np.stack([zx, yz, zz], -1)], 1)
    volume = np.abs(np.linalg.det(cells))
    return kbar_stress_to_virial(tensor, volume[:, None, None])


def _skip_lines(text: bytes, pos: int, n: int) -> int:
    for _ in range(n):
        pos = text.find(b"\n", pos)
        if pos < 0:
            return len(text)
        pos += 1
    return pos


def _floats(chunk: bytes, expected: int) -> np.ndarray | None:
    """All numbers in a chunk as float64; fused fields like '-1.0-2.0' handled; None if count differs."""
    try:
        values = np.array(chunk.split(), dtype=float)
    except ValueError:
        values = np.array([float(x) for x in _FLOAT.findall(chunk)])
    if values.size != expected:
        return None
    return values


def _parse_cell(text: bytes, q: int) -> np.ndarray | None:
    a = _skip_lines(text, q, 1)
    b = _skip_lines(text, a, 3)
    rows = []
    for line in text[a:b].splitlines():
        nums = [float(x) for x in _FLOAT.findall(line)]
        if len(nums) < 3:
            return None
        rows.append(nums[:3])
    if len(rows) != 3:
        return None
    return np.array(rows)


def _moment_table(text: bytes, header: int, limit: int, na: int):
    """(tot [na], orbitals [na,4]) of the table whose title is at `header`; None if malformed."""
    cols_at = text.find(b"# of ion", header, limit)
    if cols_at < 0:
        return None
    columns = text[cols_at : text.find(b"\n", cols_at)].split()[3:]
    rows_at = _skip_lines(text, cols_at, 2)
    m = _TABLE_ROWS.match(text, rows_at)
    if m is None:
        return None
    values = _floats(m.group(), na * (len(columns) + 1))
    if values is None:
        return None
    values = values.reshape(na, len(columns) + 1)[:, 1:]
    orbitals = np.full((na, 4), np.nan)
    tot = None
    for j, name in enumerate(columns):
        label = name.decode(errors="replace")
        if label == "tot":
            tot = values[:, j]
        elif label in ORBITALS:
            orbitals[:, ORBITALS.index(label)] = values[:, j]
    if tot is None:
        return None
    return tot, orbitals


def _parse_moments(text: bytes, start: int, end: int, na: int, noncollinear: bool):
    """(vectors [na,3], orbital [na,4]) from the step's last magnetization table(s), or None."""
    x = text.rfind(b"magnetization (x)", start, end)
    if x < 0:
        return None
    tx = _moment_table(text, x, end, na)
    if tx is None:
        return None
    vec = np.zeros((na, 3))
    if not noncollinear:
        vec[:, 2] = tx[0]
        return vec, tx[1]
    y = text.find(b"magnetization (y)", x, end)
    z = text.find(b"magnetization (z)", max(x, y), end)
    if y < 0 or z < 0:
        return None
    ty, tz = _moment_table(text, y, end, na), _moment_table(text, z, end, na)
    if ty is None or tz is None:
        return None
    vec[:, 0], vec[:, 1], vec[:, 2] = tx[0], ty[0], tz[0]
    return vec, tz[1]


def _total_magnetization(text: bytes, start: int, end: int, info: dict) -> float:
    if info["ispin"] == 1 and not info["noncollinear"]:
        return 0.0
    n = text.rfind(b"number of electron", start, end)
    if n < 0:
        return float("nan")
    line = text[n : text.find(b"\n", n)]
    k = line.find(b"magnetization")
    nums = _FLOAT.findall(line[k + len(b"magnetization") :]) if k >= 0 else []
    if not nums:
        return float("nan")
    return float(nums[2] if info["noncollinear"] and len(nums) >= 3 else nums[0])


# ----------------------------------------------------------------------------- to a dataset


def runs_to_dataset(runs: list[OutcarRun], *, type_map: list[str] | None = None, base_map: list[str] | None = None,
                    keep_unconverged: bool = False):
    """Group OUTCAR runs into dataset systems (same atoms in the same order → one system).

    Returns (Dataset, per-run stats).  `type_map` fixes the species order (a run holding a
    species outside it is a TypeMapError); without it the order is `base_map` (e.g. the type map
    of the file appended to) followed by new species in order of first appearance.
    Steps whose SCF hit NELM are dropped unless `keep_unconverged`.  Per-frame extras follow
    the dataset contract (magmom μB, spin μB vectors, provenance, SCF flags ...).
    """
    from cathodeml.io.dataset import Dataset, System, concatenate

    if type_map is None:
        type_map = list(dict.fromkeys([*(base_map or []), *(s for run in runs for s in run.species)]))
    else:
        type_map = list(type_map)
        for run in runs:
            check_species(run, type_map)
    groups: dict[tuple, list[System]] = {}
    stats = []
    for run in runs:
        keep = np.ones(run.n_frames, dtype=bool) if keep_unconverged else run.scf_converged.copy()
        n_unconv = int(np.count_nonzero(~run.scf_converged))
        stats.append({
            "path": run.path, "sha256": run.sha256, "frames_read": run.n_frames, "frames_kept": int(keep.sum()),
            "unconverged": n_unconv, "unconverged_skipped": 0 if keep_unconverged else n_unconv,
            "incomplete": run.n_incomplete, "malformed": run.n_malformed, "finished": run.finished, "species": sorted(set(run.species)),
            "ispin": run.ispin, "noncollinear": run.noncollinear, "has_moments": bool(run.has_moments.any()),
            "notes": list(run.notes),
        })
        if not keep.any():
            continue
        types = np.array([type_map.index(s) for s in run.species], dtype=np.int64)
        system = _run_system(run, types).select(np.flatnonzero(keep))
        groups.setdefault(tuple(types), []).append(system)
    systems = []
    for members in groups.values():
        if any(m.virials is None for m in members):
            members = [dataclasses.replace(m, virials=None) for m in members]
        systems.append(concatenate(members) if len(members) > 1 else members[0])
    energy = {run.energy_kind for run in runs}
    return Dataset(type_map=type_map, systems=systems, attrs={"energy": energy.pop()} if len(energy) == 1 else {}), stats


def check_species(run: OutcarRun, type_map: list[str]) -> None:
    """TypeMapError naming the file and the species of `run` missing from `type_map`."""
    from cathodeml.errors import TypeMapError

    missing = sorted(set(run.species) - set(type_map), key=run.species.index)
    if missing:
        raise TypeMapError(f"{run.path}: species {','.join(missing)} not in --type-map {','.join(type_map)}; add them to it")


def _run_system(run: OutcarRun, types: np.ndarray):
    from cathodeml.io.dataset import System

    nf, na = run.n_frames, run.n_atoms
    per_frame = lambda value, dtype=None: np.full(nf, value, dtype=dtype)  # noqa: E731
    frame_data = {
        "magmom": run.magmom,
        "magmom_orbital": run.magmom_orbital,
        "spin": run.spin,
        "has_moments": run.has_moments,
        "initial_magmom": np.broadcast_to(run.initial_magmom, (nf, na)).copy(),
        "total_magnetization": run.total_magnetization,
        "ispin": per_frame(run.ispin, np.int64),
        "noncollinear": per_frame(run.noncollinear, bool),
        "nupdown": per_frame(run.nupdown, float),
        "scf_converged": run.scf_converged,
        "ionic_step": run.ionic_step,
        "source_path": per_frame(os.path.abspath(run.path), object),
        "source_sha256": per_frame(run.sha256, object),
        "vasp_version": per_frame(run.vasp_version, object),
    }
    return System(
        atom_types=types,
        coords=run.coords,
        cells=run.cells,
        energies=run.energies,
        forces=run.forces,
        virials=run.virials,
        frame_data=frame_data,
        attrs={"source_format": "vasp/outcar", "energy": run.energy_kind},
    )
