"""automag single points (one structure, many collinear magnetic orderings) as a cathodeml dataset.

automag (github.com/michelegalasso/automag) searches magnetic ground states by enumerating
collinear orderings with enumlib and running one VASP single point per ordering.  Its result file
`<formula>_singlepoint.txt` holds two lines per ordering -- the name (fm, afm1, afm2 ...), the SCF
state and `energy=` (eV), then `initial_magmoms=[...]` and `final_magmoms=[...]` (μB, one per
atom) -- and the geometry lives beside it in `enumlib/vasp.N`: VASP-4 POSCARs whose species
blocks split the magnetic element into a spin-up block and a spin-down block (e.g. "6 6 18" for
Fe↑ Fe↓ O in Fe12O18).  Ordering afmN uses vasp.N; fm uses vasp.1 with every magnetic atom up.
The POSCAR carries no element names, so the element of each block comes from the formula in the
record, and the moments are trusted only when their signs agree with the POSCAR blocks (every
atom of an up block positive, every atom of a down block negative, all positive for fm): a
mismatch means the moments are not in the POSCAR's atom order and is an error, not a guess.
There are no forces in these files, so the dataset has no force labels at all (no force.npy):
training on it is energy-only.  Units: Å, eV, μB.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import os
import re
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError, InputFormatError

SOURCE_FORMAT = "automag/singlepoint"
# Below this |m| (μB) a magnetic atom's moment has no trustworthy sign (a collapsed moment).
MIN_SIGNED_MOMENT_MUB = 1.0

_RECORD = re.compile(
    r"^(?P<name>\S+)[ \t]+(?P<id>\S+)[ \t]+singlepoint=(?P<state>\S+)[ \t]+(?P<formula>\S+)[ \t]+(?P<group>\S+)"
    r"[ \t]+energy=(?P<energy>\S+)[ \t]*\r?\n"
    r"\s*initial_magmoms=\[(?P<initial>[^\]]*)\]\s+final_magmoms=\[(?P<final>[^\]]*)\]",
    re.M,
)
_HEAD = re.compile(r"^\S+[ \t]+\S+[ \t]+singlepoint=\S+[ \t]+\S+[ \t]+\S+[ \t]+energy=\S+", re.M)
_ELEMENT_COUNT = re.compile(r"([A-Z][a-z]?)(\d*)")


@dataclasses.dataclass(frozen=True)
class SinglePoint:
    """One automag record: ordering name, energy (eV), SCF state, formula, initial and final
    per-atom moments [N] (μB, in the order VASP printed them)."""

    name: str
    energy: float
    state: str
    formula: str
    initial_magmom: np.ndarray
    final_magmom: np.ndarray


def is_singlepoint_file(path: str | os.PathLike) -> bool:
    """True when `path` is a text file whose first record looks like automag's singlepoint output."""
    p = Path(path)
    if not p.is_file():
        return False
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
        return _HEAD.match(head.decode("ascii", "replace")) is not None and b"final_magmoms=[" in head
    except OSError:
        return False


def parse_singlepoints(text: str, source: str = "<text>") -> list[SinglePoint]:
    """Every record of a `*_singlepoint.txt` text, in file order."""
    records = []
    for m in _RECORD.finditer(text):
        try:
            initial = np.array(m["initial"].split(), dtype=np.float64)
            final = np.array(m["final"].split(), dtype=np.float64)
            energy = float(m["energy"])
        except ValueError as exc:
            raise InputFormatError(f"{source}: record {m['name']}: unreadable number ({exc})") from None
        if initial.size != final.size:
            raise InputFormatError(f"{source}: record {m['name']} has {initial.size} initial but {final.size} final moments")
        records.append(SinglePoint(m["name"], energy, m["state"], m["formula"], initial, final))
    n_heads = len(_HEAD.findall(text))
    if not records or n_heads != len(records):
        raise InputFormatError(f"{source}: {n_heads} record header(s) but {len(records)} complete record(s); "
                               "not an automag singlepoint file, or a damaged one")
    names = [r.name for r in records]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputFormatError(f"{source}: ordering(s) {','.join(dup)} appear more than once")
    return records


def read_enumlib_poscar(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(cell [3,3] Å with rows as lattice vectors, Cartesian positions [N,3] Å, species counts) of
    a VASP-4 POSCAR as enumlib writes it (no element-name line; Direct or Cartesian)."""
    p = Path(path)
    try:
        lines = p.read_text().splitlines()
        scale = float(lines[1].split()[0])
        cell = np.array([[float(x) for x in lines[i].split()[:3]] for i in (2, 3, 4)])
        row = 5
        if not lines[row].split()[0].lstrip("+-").isdigit():  # a VASP-5 element-name line
            row += 1
        counts = [int(x) for x in lines[row].split()]
        row += 1
        if lines[row].strip()[:1] in "sS":  # Selective dynamics
            row += 1
        cartesian = lines[row].strip()[:1] in "cCkK"
        n = sum(counts)
        xyz = np.array([[float(x) for x in lines[row + 1 + i].split()[:3]] for i in range(n)])
    except (OSError, IndexError, ValueError) as exc:
        raise InputFormatError(f"{p}: cannot read it as a POSCAR ({type(exc).__name__}: {exc})") from None
    if scale < 0:  # a negative scale is the cell volume
        scale = (-scale / abs(np.linalg.det(cell))) ** (1.0 / 3.0)
    cell = cell * scale
    positions = xyz * scale if cartesian else xyz @ cell
    return cell, positions, counts


def parse_formula(formula: str) -> list[tuple[str, int]]:
    """[(element, count)] of a formula written like Fe12O18 (a missing count is 1)."""
    parts = [(el, int(n) if n else 1) for el, n in _ELEMENT_COUNT.findall(formula)]
    if not parts or "".join(f"{el}{n}" for el, n in _ELEMENT_COUNT.findall(formula)) != formula:
        raise InputFormatError(f"formula {formula!r} is not of the form Fe12O18")
    return parts


def poscar_for(name: str, poscar_dir: Path) -> Path:
    """The enumlib POSCAR of an ordering: afmN → vasp.N, fm → vasp.1."""
    if name == "fm":
        return poscar_dir / "vasp.1"
    m = re.fullmatch(r"afm(\d+)", name)
    if m is None:
        raise InputFormatError(f"ordering {name!r}: automag names orderings fm or afmN; no POSCAR rule for it")
    return poscar_dir / f"vasp.{int(m[1])}"


def block_elements(formula: list[tuple[str, int]], counts: list[int], where: str) -> tuple[list[str], list[int]]:
    """(element, spin sign) per POSCAR species block: an element of the formula covered by two
    blocks is the magnetic one (first block up, +1; second down, −1); one block gives sign 0."""
    elements, signs, k = [], [], 0
    for el, n in formula:
        if k < len(counts) and counts[k] == n:
            elements.append(el)
            signs.append(0)
            k += 1
        elif k + 1 < len(counts) and counts[k] + counts[k + 1] == n:
            elements += [el, el]
            signs += [1, -1]
            k += 2
        else:
            raise InputFormatError(f"{where}: species counts {' '.join(map(str, counts))} do not split the formula "
                                   f"{''.join(f'{e}{c}' for e, c in formula)} into (up, down) blocks")
    if k != len(counts):
        raise InputFormatError(f"{where}: species counts {' '.join(map(str, counts))} have more blocks than the formula")
    return elements, signs


@dataclasses.dataclass
class AutomagRead:
    """What `read_automag` found: the dataset, orderings read and skipped, per-ordering notes."""

    dataset: object
    orderings: list[str]
    skipped: list[dict]
    poscar_dir: Path


def read_automag(path: str | os.PathLike, poscar_dir: str | os.PathLike | None = None, *,
                 type_map: list[str] | None = None, keep_unconverged: bool = False,
                 skip_missing: bool = False, orderings: list[str] | None = None,
                 exclude: list[str] | None = None) -> AutomagRead:
    """Read an automag `*_singlepoint.txt` and its enumlib POSCARs into a one-system Dataset.

    `poscar_dir` defaults to `enumlib/` beside the text file.  Per frame: coords (Å), cell (Å),
    energy (eV), `magmom` [nf, N] final moments (μB), `spin` [nf, N, 3] = (0, 0, m),
    `initial_magmom`, `has_moments`, `scf_converged`, `ordering`, `source_path`, `poscar_path`,
    `source_sha256` (of the record text plus its POSCAR, so --append never adds one twice).
    No forces and no virials: the system's `forces` is None.  A record whose moment signs
    disagree with its POSCAR's up/down blocks is a CathodemlError naming the ordering and atom;
    unconverged records are dropped unless `keep_unconverged`; a missing POSCAR is an error
    unless `skip_missing` (then listed in `skipped`).  `orderings` keeps only the orderings whose
    name matches one of its names or shell patterns (e.g. ["fm", "afm1*"]); `exclude` drops those
    matching its patterns -- the two make a held-out split of orderings (a pattern matching
    nothing is an error, so a typo cannot silently empty a split).
    """
    from cathodeml.io.dataset import Dataset, System

    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFormatError(f"{path}: cannot read it ({exc})") from None
    folder = Path(poscar_dir) if poscar_dir is not None else path.parent / "enumlib"
    if not folder.is_dir():
        raise CathodemlError(f"{folder}: no POSCAR folder (automag's enumlib/vasp.N files); give it with --poscars")
    records = select_orderings(parse_singlepoints(text, str(path)), orderings, exclude, str(path))
    raw = {m["name"]: m.group(0) for m in _RECORD.finditer(text)}
    frames, skipped = [], []
    layout = None
    for rec in records:
        poscar = poscar_for(rec.name, folder)
        if not poscar.is_file():
            if skip_missing:
                skipped.append({"ordering": rec.name, "reason": f"no POSCAR {poscar}"})
                continue
            raise CathodemlError(f"{path}: ordering {rec.name} needs {poscar}, which does not exist; "
                                 "give the enumlib folder with --poscars (or --skip-bad to leave it out)")
        if rec.state != "converged" and not keep_unconverged:
            skipped.append({"ordering": rec.name, "reason": f"singlepoint={rec.state}"})
            continue
        cell, positions, counts = read_enumlib_poscar(poscar)
        elements, signs = block_elements(parse_formula(rec.formula), counts, f"{poscar} ({rec.name})")
        symbols = [el for el, n in zip(elements, counts) for _ in range(n)]
        expected = np.array([s for s, n in zip(signs, counts) for _ in range(n)])
        if rec.name == "fm":
            expected = np.abs(expected)
        _check_moment_order(rec, expected, symbols, poscar, path)
        if layout is None:
            layout = symbols
        elif symbols != layout:
            raise CathodemlError(f"{poscar}: atom order {''.join(dict.fromkeys(symbols))} differs from the other "
                                 "orderings' POSCARs; automag's orderings share one cell and species order")
        sha = hashlib.sha256(raw[rec.name].encode() + b"\0" + poscar.read_bytes()).hexdigest()
        frames.append((rec, cell, positions, sha, poscar))
    if not frames:
        raise CathodemlError(f"{path}: no ordering left to write ({len(skipped)} skipped)")

    species = list(dict.fromkeys(layout))
    order = list(type_map) if type_map is not None else species
    missing = [s for s in species if s not in order]
    if missing:
        from cathodeml.errors import TypeMapError

        raise TypeMapError(f"{path}: species {','.join(missing)} not in --type-map {','.join(order)}; add them to it")
    types = np.array([order.index(s) for s in layout], dtype=np.int64)
    nf, na = len(frames), len(layout)
    magmom = np.stack([f[0].final_magmom for f in frames])
    spin = np.zeros((nf, na, 3))
    spin[..., 2] = magmom
    per_frame = lambda values: np.array(values, dtype=object)  # noqa: E731
    system = System(
        atom_types=types,
        coords=np.stack([f[2] for f in frames]),
        cells=np.stack([f[1] for f in frames]),
        energies=np.array([f[0].energy for f in frames]),
        forces=None,
        virials=None,
        frame_data={
            "magmom": magmom,
            "spin": spin,
            "initial_magmom": np.stack([f[0].initial_magmom for f in frames]),
            "has_moments": np.ones(nf, dtype=bool),
            "scf_converged": np.array([f[0].state == "converged" for f in frames]),
            "ispin": np.full(nf, 2, dtype=np.int64),
            "ordering": per_frame([f[0].name for f in frames]),
            "source_path": per_frame([os.path.abspath(path)] * nf),
            "poscar_path": per_frame([os.path.abspath(f[4]) for f in frames]),
            "source_sha256": per_frame([f[3] for f in frames]),
        },
        attrs={"source_format": SOURCE_FORMAT, "energy_label": "automag energy= (eV)", "forces": "absent"},
        name=frames[0][0].formula,
    )
    dataset = Dataset(type_map=order, systems=[system], attrs={"source_format": SOURCE_FORMAT})
    return AutomagRead(dataset, [f[0].name for f in frames], skipped, folder)


def select_orderings(records: list[SinglePoint], orderings: list[str] | None, exclude: list[str] | None,
                     where: str = "") -> list[SinglePoint]:
    """Records whose name matches a pattern of `orderings` (all when None) and none of `exclude`."""
    names = [r.name for r in records]
    for what, patterns in (("--orderings", orderings), ("--exclude-orderings", exclude)):
        for pat in patterns or []:
            if not fnmatch.filter(names, pat):
                raise CathodemlError(f"{where}: {what} pattern {pat!r} matches no ordering (they are named "
                                     f"{', '.join(names[:4])} ...)")
    keep = [r for r in records
            if (orderings is None or any(fnmatch.fnmatchcase(r.name, p) for p in orderings))
            and not any(fnmatch.fnmatchcase(r.name, p) for p in exclude or [])]
    if not keep:
        raise CathodemlError(f"{where}: the ordering selection leaves nothing to read")
    return keep


def _check_moment_order(rec: SinglePoint, expected: np.ndarray, symbols: list[str], poscar: Path, path: Path) -> None:
    """CathodemlError unless each magnetic atom's final moment has the sign of its POSCAR block."""
    m = rec.final_magmom
    if m.size != expected.size:
        raise CathodemlError(f"{path}: ordering {rec.name} has {m.size} moments but {poscar} has {expected.size} atoms; "
                             "the moments do not belong to this POSCAR")
    magnetic = expected != 0
    weak = magnetic & (np.abs(m) < MIN_SIGNED_MOMENT_MUB)
    wrong = magnetic & (np.sign(m) != expected)
    initial_wrong = magnetic & (np.sign(rec.initial_magmom) != expected)
    bad = np.flatnonzero(wrong | weak | initial_wrong)
    if bad.size:
        i = int(bad[0])
        want = "up (+)" if expected[i] > 0 else "down (-)"
        raise CathodemlError(
            f"{path}: ordering {rec.name}: atom {i} ({symbols[i]}) is in the spin-{want} block of {poscar} but its "
            f"moment is {m[i]:+.3f} μB (initial {rec.initial_magmom[i]:+.1f}); {bad.size} atom(s) disagree, so the "
            "moments are not in the POSCAR's atom order -- check that afmN uses vasp.N (--poscars)")
