"""Virtual spin atoms (collinear DeePSPIN): one extra atom per magnetic atom, placed by its moment.

DFT+U runs of one structure can converge to different spin states, so a plain potential sees one
geometry with several energies.  The spin paper's fix is geometric: each magnetic atom i with
moment Sᵢ (μB) gets a virtual atom at z'ᵢ = zᵢ + η·Sᵢ + d (collinear; x, y unchanged) or at
R'ᵢ = Rᵢ + η·Sᵢ (vector mode, DeePMD-kit's `virtual_scale`), with η (Å/μB) and d (Å) per element.
An ordinary DeepPot-SE then tells spin states apart because they are different geometries.  The
placement is one pure function, `virtual_positions`, written with array operations that numpy and
JAX both run: `augment-spin` calls it on numpy arrays to write the training set, and train/md call
it inside the jitted energy so that the virtual atoms follow their hosts with dR'/dR = identity,
which puts each virtual atom's force onto its host (the DFT force label of a host is the *total*
force at fixed moments, so virtual atoms carry no force label of their own).  Rebuilding R' from
strained real positions also gives the right virial: the offset η·S + d is not strained, which is
DeePMD-kit's spin virial correction (its `coord_corr`).  Everything else here
-- augment, strip, the overlap check, reading the record back -- is bookkeeping around that
function over the `Dataset` of `cathodeml.io.dataset`; this module never touches files.

Augmented layout (a normal deepmd/hdf5 dataset, so dpdata and `dp` read it): in every system the
virtual atoms follow the real ones, ordered by host index, with types `<El>_spin` appended to the
type map (real types keep their indices); `frame_data["atom_pref"]` [nf, na] is 1 for real atoms
and 0 for virtual ones (DeePMD-kit's per-atom force weight, used here as the force-label mask);
virtual atoms get zero force labels, zeros in spin/force_mag and NaN in the other float per-atom
arrays (magmom, ...: a virtual atom has no moment of its own); energies and virials are unchanged.  `system.attrs["spin"]` records n_real, host_index, the moment source, the padded
arrays and the settings, and `dataset.attrs["spin"]` the settings and the real type map, so
`strip_dataset` restores the input exactly and `read_spin_layout` gives train/md what they need.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cathodeml import geometry
from cathodeml.errors import CathodemlError, InputFormatError
from cathodeml.io.dataset import Dataset, System

MODES = ("collinear", "vector")
VIRTUAL_SUFFIX = "_spin"
# Moments of one element split into separate spin states wherever the sorted values jump by more
# than this (μB).  0.3 μB is narrower than the step between distinct states of the 3d cathode ions
# (e.g. Ni³⁺ low spin ~1 μB vs Ni²⁺ ~1.7 μB) and wider than the spacing of the sorted moments of
# one state sampled along a relaxation or MD run.
STATE_GAP_MUB = 0.3
# An element is magnetic for the spin-state reports (info, test) when some atom of it carries a
# moment larger than this (μB): Ni, Co, Mn, Fe do; Li and most O stay far below.
MAGNETIC_MOMENT_MUB = 0.5
# Collinear mode on moment vectors warns when their x, y parts exceed this (μB).
TRANSVERSE_TOLERANCE_MUB = 0.1
_Z = np.array([0.0, 0.0, 1.0])
# Per-atom arrays DeePMD-kit reads, padded with zeros for virtual atoms (its convention); other
# float per-atom arrays (magmom, ...) get NaN there, cathodeml's "not applicable".
_ZERO_PADDED = {"spin", "force_mag", "atom_pref"}


def virtual_type_name(element: str) -> str:
    """Type name of the virtual atom that belongs to a host of `element` (e.g. "Ni" → "Ni_spin")."""
    return f"{element}{VIRTUAL_SUFFIX}"


def is_virtual_type(name: str) -> bool:
    """True for the type name of a virtual spin atom ("Ni_spin"), False for an element ("Ni")."""
    return name.endswith(VIRTUAL_SUFFIX)


def host_element(name: str) -> str:
    """The element a virtual type belongs to ("Ni_spin" → "Ni")."""
    if not is_virtual_type(name):
        raise ValueError(f"{name!r} is not a virtual spin type")
    return name[: -len(VIRTUAL_SUFFIX)]


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class SpinSettings:
    """How virtual atoms are placed: mode, the magnetic elements and η (Å/μB), d (Å) per element.

    `elements`, `eta` and `d` are aligned tuples (hashable, so a SpinSettings can be a static
    argument of a jitted function).  Collinear: z' = z + η·S + d with S the scalar moment (μB).
    Vector: R' = R + η·S with S the moment vector (μB); d must be 0 there.
    """

    elements: tuple[str, ...]
    eta: tuple[float, ...]
    d: tuple[float, ...]
    mode: str = "collinear"

    def __post_init__(self):
        object.__setattr__(self, "elements", tuple(str(e) for e in self.elements))
        object.__setattr__(self, "eta", tuple(float(x) for x in self.eta))
        object.__setattr__(self, "d", tuple(float(x) for x in self.d))
        if self.mode not in MODES:
            raise CathodemlError(f"spin mode {self.mode!r} is unknown; use one of {', '.join(MODES)}")
        if not self.elements:
            raise CathodemlError("no magnetic elements given; name them, e.g. --magnetic Ni,Co,Mn")
        if len(set(self.elements)) != len(self.elements):
            raise CathodemlError(f"magnetic elements listed twice: {','.join(self.elements)}")
        if not len(self.eta) == len(self.d) == len(self.elements):
            raise ValueError("elements, eta and d must have the same length")
        for el, eta, d in zip(self.elements, self.eta, self.d):
            if el.endswith(VIRTUAL_SUFFIX):
                raise CathodemlError(f"{el} is a virtual spin type, not an element; name the host element")
            if not (math.isfinite(eta) and eta > 0):
                raise CathodemlError(f"η for {el} is {eta:g} Å/μB; it must be > 0 (the spin paper used 0.1–0.5)")
            if not math.isfinite(d):
                raise CathodemlError(f"d for {el} is {d}; give a finite offset in Å")
            if self.mode == "vector" and d != 0.0:
                raise CathodemlError(f"d for {el} is {d:g} Å but vector mode places R' = R + η·S without an "
                                     "offset; drop --d or use --mode collinear")

    @classmethod
    def create(cls, elements: Sequence[str], eta: float | Mapping[str, float], d: float | Mapping[str, float] = 0.0,
               mode: str = "collinear") -> "SpinSettings":
        """Settings from one value for all elements or a {element: value} map (η in Å/μB, d in Å)."""
        elements = list(elements)

        def per_element(value, what):
            if isinstance(value, Mapping):
                extra = sorted(set(value) - set(elements))
                if extra:
                    raise CathodemlError(f"{what} given for {','.join(extra)}, which is not among the magnetic "
                                         f"elements {','.join(elements)}; add it to --magnetic or drop it")
                missing = [e for e in elements if e not in value]
                if missing:
                    raise CathodemlError(f"no {what} for {','.join(missing)}; give one value for all or one per element")
                return [value[e] for e in elements]
            return [value] * len(elements)

        return cls(tuple(elements), tuple(per_element(eta, "η")), tuple(per_element(d, "d")), mode)

    def eta_of(self, element: str) -> float:
        """η of `element` in Å/μB."""
        return self.eta[self.elements.index(element)]

    def d_of(self, element: str) -> float:
        """d of `element` in Å."""
        return self.d[self.elements.index(element)]

    def to_dict(self) -> dict:
        """JSON-ready form: {"mode", "elements", "eta": {el: Å/μB}, "d": {el: Å}}."""
        return {"mode": self.mode, "elements": list(self.elements),
                "eta": dict(zip(self.elements, self.eta)), "d": dict(zip(self.elements, self.d))}

    @classmethod
    def from_dict(cls, data: Mapping) -> "SpinSettings":
        """Inverse of `to_dict`."""
        elements = list(data["elements"])
        return cls(tuple(elements), tuple(data["eta"][e] for e in elements), tuple(data["d"][e] for e in elements),
                   data.get("mode", "collinear"))


def augmented_type_map(type_map: Sequence[str], settings: SpinSettings) -> list[str]:
    """`type_map` followed by one `<El>_spin` type per magnetic element, in type-map order.

    Idempotent: types already present (a model's or an augmented file's map) are not repeated,
    so `virtual_sites` can index a map that has the virtual types in any position.
    """
    extra = [virtual_type_name(el) for el in type_map if el in settings.elements]
    return list(type_map) + [v for v in extra if v not in type_map]


@dataclasses.dataclass(frozen=True)
class VirtualSites:
    """The virtual atoms of one structure, M of them in host order: host atom index [M], virtual
    type index [M] (in the augmented type map), η [M] Å/μB, d [M] Å, and the placement mode.

    A JAX pytree (mode is static), so it passes through jit and vmap as an argument of the energy.
    """

    host_index: np.ndarray
    types: np.ndarray
    eta: np.ndarray
    d: np.ndarray
    mode: str = "collinear"

    @property
    def size(self) -> int:
        return int(np.shape(self.host_index)[0])

    def place(self, positions, moments):
        """Real positions [..., N, 3] Å followed by their virtual atoms, [..., N + M, 3] Å."""
        return with_virtual_atoms(positions, moments, self.host_index, self.eta, self.d, self.mode)

    def all_types(self, atom_types) -> np.ndarray:
        """Types of the real atoms [N] followed by those of the virtual atoms [M]."""
        return np.concatenate([np.asarray(atom_types, dtype=np.int64), np.asarray(self.types, dtype=np.int64)])


def _register_pytree(cls, meta):
    import jax

    data = [f.name for f in dataclasses.fields(cls) if f.name not in meta]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=list(meta))


_register_pytree(VirtualSites, ("mode",))


def virtual_sites(atom_types: np.ndarray, type_map: Sequence[str], settings: SpinSettings) -> VirtualSites:
    """Which atoms of a structure get a virtual atom, and with which type, η and d.

    `atom_types` [N] are the real atoms' indices into `type_map`, which may be the real map or one
    that already holds the `<El>_spin` types (a model's); the returned `types` index
    `augmented_type_map(type_map, settings)` (the same list in the second case).  Hosts are all
    atoms whose element is magnetic, in increasing index order.
    """
    full = augmented_type_map(type_map, settings)
    atom_types = np.asarray(atom_types)
    names = [type_map[t] for t in atom_types]
    host = np.array([i for i, n in enumerate(names) if n in settings.elements], dtype=np.int64)
    els = [names[i] for i in host]
    return VirtualSites(
        host_index=host,
        types=np.array([full.index(virtual_type_name(e)) for e in els], dtype=np.int64),
        eta=np.array([settings.eta_of(e) for e in els], dtype=np.float64),
        d=np.array([settings.d_of(e) for e in els], dtype=np.float64),
        mode=settings.mode,
    )


def model_real_type_map(type_map: Sequence[str], spin: Mapping | None) -> list[str]:
    """A model's type map without its `<El>_spin` virtual types (`spin`: the model's settings dict)."""
    if not spin:
        return list(type_map)
    virtual = {virtual_type_name(e) for e in SpinSettings.from_dict(spin).elements}
    return [t for t in type_map if t not in virtual]


def model_virtual_sites(type_map: Sequence[str], spin: Mapping | None, atom_types) -> VirtualSites | None:
    """The virtual atoms a spin model adds to real atoms of `atom_types` [N] (indices into the model's
    real type map, `model_real_type_map`); None for a plain model (`spin` None)."""
    if not spin:
        return None
    settings = SpinSettings.from_dict(spin)
    real = model_real_type_map(type_map, spin)
    if augmented_type_map(real, settings) != list(type_map):
        raise CathodemlError(f"the model's type map {list(type_map)} does not follow the spin layout "
                             "(real types, then <El>_spin in type-map order); was it trained on augment-spin data?")
    return virtual_sites(np.asarray(atom_types), real, settings)


def host_moments(sites: VirtualSites, moments) -> np.ndarray:
    """The moments that place the virtual atoms, [M] μB (collinear) or [M, 3] μB (vector), from the
    moments of all real atoms: [N] μB, or [N, 3] (collinear mode then takes the z component).

    Missing moments (None, NaN on a magnetic atom, a scalar per atom for vector mode) are a
    CathodemlError that says how to give them.
    """
    if moments is None:
        raise CathodemlError("this is a spin model (it places virtual atoms on the magnetic atoms): give the moments, "
                             "e.g. --magmom Ni=1.0,Mn=3.0, a per-atom file, or a dataset frame that has them")
    m = np.asarray(moments, dtype=float)[sites.host_index]
    if sites.mode == "collinear":
        m = m[:, 2] if m.ndim == 2 else m
    elif m.ndim != 2:
        raise CathodemlError("this spin model places virtual atoms along moment vectors (vector mode): "
                             "give three components per atom (a per-atom file with 3 columns)")
    if not np.all(np.isfinite(m)):
        raise CathodemlError("some magnetic atoms have no moment (NaN); give them, e.g. with --magmom")
    return m


# ----------------------------------------------------------------------------- placement


def virtual_positions(positions, moments, host_index, eta, d, mode: str = "collinear"):
    """Positions (Å) of the virtual atoms [..., M, 3] from real positions and host moments.

    positions [..., N, 3] Å (leading frame axes allowed); moments per virtual atom, aligned with
    `host_index` [M]: [..., M] μB (collinear, the moment projected on z) or [..., M, 3] μB
    (vector); eta [M] Å/μB; d [M] Å.  Collinear: z' = z + η·S + d, x' = x, y' = y.  Vector:
    R' = R + η·S (d unused).  Works on numpy arrays and inside jitted JAX code (positions may be
    tracers); the Jacobian of each virtual position with respect to its host is the identity.
    No wrapping into the cell: neighbour lists handle atoms outside it.
    """
    hosts = positions[..., host_index, :]
    if mode == "collinear":
        shift = eta * moments + d
        return hosts + shift[..., None] * _Z
    if mode == "vector":
        return hosts + eta[:, None] * moments
    raise ValueError(f"unknown spin mode {mode!r}")


def with_virtual_atoms(positions, moments, host_index, eta, d, mode: str = "collinear"):
    """Real positions followed by their virtual atoms: [..., N + M, 3] Å (see `virtual_positions`)."""
    virt = virtual_positions(positions, moments, host_index, eta, d, mode)
    if isinstance(positions, np.ndarray):
        return np.concatenate([positions, virt], axis=-2)
    import jax.numpy as jnp

    return jnp.concatenate([positions, virt], axis=-2)


# ----------------------------------------------------------------------------- geometry checks


def contact_distances(coords: np.ndarray, cells: np.ndarray, periodic: bool, n_real: int, host_index: np.ndarray,
                      cutoff: float) -> np.ndarray:
    """Nearest-image distance (Å) from each virtual atom to every atom, [nf, M, N + M]; inf where ≥ cutoff.

    coords [nf, N + M, 3] Å with the M virtual atoms after the n_real real ones; cells [nf, 3, 3]
    Å, rows are lattice vectors.  Exact for any triclinic cell and any cutoff: fractional
    differences are wrapped to [-½, ½) and then every image n with |f + n|ᵢ < cutoff / wᵢ is
    searched (wᵢ the cell's width perpendicular to face i), so cells thinner than the cutoff work
    too.  Left out (inf): a virtual atom with itself, and with its own host without a lattice shift
    (that distance is |η·S + d| by construction); the host's periodic images are kept.
    """
    coords = np.asarray(coords, dtype=np.float64)
    m = coords.shape[1] - n_real
    diff = coords[:, None, :, :] - coords[:, n_real:, None, :]  # [nf, M, A, 3]: r_b - r_a
    if periodic:
        cells = np.asarray(cells, dtype=np.float64)
        volume = geometry.cell_volume(cells)
        if np.any(volume < 1e-9):
            f = int(np.argmin(volume))
            raise CathodemlError(f"frame {f} has a singular cell {cells[f].tolist()}; a molecule or cluster "
                                 "needs its system marked non-periodic (nopbc)")
        folded, wrap = geometry.fold_fractional(geometry.fractional(diff, cells))
        diff = geometry.cartesian(folded, cells)
        reach = geometry.image_reach(cells, cutoff)
        shifts = geometry.lattice_images(reach).astype(np.float64) @ cells  # [nf, K, 3]
        dist = np.linalg.norm(diff[:, :, :, None, :] + shifts[:, None, None, :, :], axis=-1)  # [nf, M, A, K]
        # The unshifted host pair is image n = wrap; blank it where that image was searched.
        for k, h in enumerate(np.asarray(host_index, dtype=np.int64)):
            w = wrap[:, k, h]  # [nf, 3]
            inside = np.all(np.abs(w) <= reach, axis=-1)
            idx = np.ravel_multi_index(tuple((w[inside] + reach).T), tuple(2 * reach + 1))
            dist[np.flatnonzero(inside), k, h, idx] = np.inf
        dist = dist.min(axis=-1)
    else:
        dist = np.linalg.norm(diff, axis=-1)
        dist[:, np.arange(m), np.asarray(host_index, dtype=np.int64)] = np.inf
    dist[:, np.arange(m), n_real + np.arange(m)] = np.inf
    dist[dist >= cutoff] = np.inf
    return dist


def close_contacts(coords: np.ndarray, cell: np.ndarray, periodic: bool, n_real: int, host_index: np.ndarray,
                   cutoff: float) -> list[tuple[int, int, float]]:
    """Pairs (virtual atom a, other atom b, nearest-image distance Å) closer than `cutoff`, nearest first.

    One frame: coords [N + M, 3] Å, cell [3, 3] Å; see `contact_distances` for what is counted.
    """
    dist = contact_distances(np.asarray(coords)[None], np.asarray(cell)[None], periodic, n_real, host_index, cutoff)[0]
    k, b = np.nonzero(np.isfinite(dist))
    return sorted(((int(n_real + kk), int(bb), float(dist[kk, bb])) for kk, bb in zip(k, b)), key=lambda c: c[2])


# ----------------------------------------------------------------------------- spin states
#
# One rule for what a spin state is, shared by `info`, `augment-spin` and `test`.


def state_moments(frame_data: Mapping) -> np.ndarray | None:
    """The moment each atom's spin state is judged by, [nf, N] μB, NaN where unknown; None without moments.

    Signed, not |m|: a collinear virtual atom sits at z + η·S + d, so +4 and −4 μB are different
    inputs to the model (ferro- vs antiferromagnetic orderings differ in energy), and a state is
    one model input.  Grouping |m| would merge them and hide an error that only one sign has.  The
    signed value is `magmom` (ingest: VASP's `tot` column, its z part in non-collinear runs), else
    the z part of `spin`.  A non-collinear frame (flagged by ingest, or moment vectors with x, y
    parts above TRANSVERSE_TOLERANCE_MUB) has no sign to keep -- its directions are a continuum,
    not states -- so there the states are of |S|.  Frames with `has_moments` false are NaN.
    """
    if "magmom" in frame_data:
        m = np.array(frame_data["magmom"], dtype=np.float64)
    elif "spin" in frame_data:
        m = np.array(np.asarray(frame_data["spin"], dtype=np.float64)[..., 2])
    else:
        return None
    if "spin" in frame_data:
        vectors = np.asarray(frame_data["spin"], dtype=np.float64)
        if "noncollinear" in frame_data:
            tilted = np.asarray(frame_data["noncollinear"], dtype=bool).reshape(-1)
        else:
            transverse = np.linalg.norm(vectors[..., :2], axis=-1)
            tilted = np.nanmax(np.where(np.isfinite(transverse), transverse, 0.0), axis=1) > TRANSVERSE_TOLERANCE_MUB
        m[tilted] = np.linalg.norm(vectors[tilted], axis=-1)
    if "has_moments" in frame_data:
        m[~np.asarray(frame_data["has_moments"], dtype=bool)] = np.nan
    return m


def is_magnetic(values: np.ndarray, threshold: float = MAGNETIC_MOMENT_MUB) -> bool:
    """True when some of an element's moments (μB, NaN ignored) exceed `threshold` μB in size."""
    v = np.abs(np.asarray(values, dtype=float).ravel())
    v = v[np.isfinite(v)]
    return bool(v.size) and bool(v.max() > threshold)


def spin_states(values: np.ndarray, gap: float = STATE_GAP_MUB) -> list[dict]:
    """Group the moments of one element (μB, `state_moments`) into spin states.

    Sorted values are split wherever they jump by more than `gap` μB; NaN is ignored.  Returns
    [{"center": mean μB, "min", "max", "count"}] in increasing order.
    """
    v = np.sort(np.asarray(values, dtype=float).ravel())
    v = v[np.isfinite(v)]
    if v.size == 0:
        return []
    cuts = np.flatnonzero(np.diff(v) > gap) + 1
    return [{"center": float(g.mean()), "min": float(g.min()), "max": float(g.max()), "count": int(g.size)}
            for g in np.split(v, cuts)]


def state_index(moments: np.ndarray, states: Sequence[Mapping]) -> np.ndarray:
    """Index of each moment's spin state (same shape as `moments`, μB); -1 where the moment is NaN.

    The border between neighbouring states is the middle of the gap between them, so every value
    `spin_states` grouped gets exactly the state it was grouped into (a nearest-centre rule would
    not: a wide state's edge can lie nearer to the next state's centre).
    """
    m = np.asarray(moments, dtype=float)
    borders = np.array([(lo["max"] + hi["min"]) / 2 for lo, hi in zip(states[:-1], states[1:])])
    idx = np.searchsorted(borders, np.nan_to_num(m, nan=0.0), side="right")
    return np.where(np.isfinite(m), idx, -1)


def element_spin_states(moments_by_element: Mapping[str, np.ndarray], gap: float = STATE_GAP_MUB) -> dict:
    """{element: spin_states} for the magnetic elements (`is_magnetic`) among {element: moments μB}."""
    return {el: spin_states(v, gap) for el, v in moments_by_element.items() if is_magnetic(v)}


def moment_histogram(values: np.ndarray, bin_width: float = 0.5) -> dict:
    """Histogram of moments (μB) on bins of `bin_width` μB aligned to multiples of it."""
    v = np.asarray(values, dtype=float).ravel()
    lo = math.floor(v.min() / bin_width) * bin_width
    hi = max(lo + bin_width, math.ceil(v.max() / bin_width) * bin_width)
    edges = np.arange(lo, hi + bin_width / 2, bin_width)
    if v.max() >= edges[-1]:
        edges = np.append(edges, edges[-1] + bin_width)
    counts, edges = np.histogram(v, bins=edges)
    return {"edges": [round(float(e), 10) for e in edges], "counts": counts.tolist()}


# ----------------------------------------------------------------------------- augment / strip


@dataclasses.dataclass(frozen=True)
class SpinLayout:
    """An augmented system's virtual atoms, read back: what train and test need.

    n_real: number of real atoms (they come first); sites: the virtual atoms; moments: the host
    moments they were placed with, [nf, M] μB (collinear) or [nf, M, 3] μB (vector).
    """

    n_real: int
    sites: VirtualSites
    moments: np.ndarray
    settings: SpinSettings

    @property
    def host_index(self) -> np.ndarray:
        return self.sites.host_index


@dataclasses.dataclass
class AugmentReport:
    """Per magnetic element: moments seen (μB), virtual displacement range (Å), spin states; warnings."""

    elements: dict
    warnings: list[str]
    n_virtual: int


def dataset_spin_settings(dataset: Dataset) -> SpinSettings | None:
    """The spin settings an augmented dataset was made with, or None for a plain dataset."""
    rec = dataset.attrs.get("spin")
    return None if rec is None else SpinSettings.from_dict(rec["settings"])


def read_spin_layout(system: System, type_map: Sequence[str]) -> SpinLayout | None:
    """The augmentation record of one system (None if it has no virtual atoms record).

    `type_map` is the augmented (file) type map.  Checks that the virtual atoms sit where the
    record says, so a file edited by hand cannot silently mislead training.
    """
    rec = system.attrs.get("spin")
    if rec is None:
        return None
    settings = SpinSettings.from_dict(rec["settings"])
    n_real = int(rec["n_real"])
    host = np.asarray(rec["host_index"], dtype=np.int64)
    type_map = list(type_map)
    sites = virtual_sites(system.atom_types[:n_real], type_map, settings)
    if (augmented_type_map(type_map, settings) != type_map or system.n_atoms != n_real + host.size
            or not np.array_equal(sites.host_index, host) or not np.array_equal(system.atom_types[n_real:], sites.types)):
        raise InputFormatError(f"system {system.name}: the virtual spin atoms do not match their record "
                               "(edited file?); re-run augment-spin on the original data")
    moments = _host_moments(system.frame_data, host, settings.mode, rec["moment_source"], system.n_frames)
    return SpinLayout(n_real, sites, moments, settings)


def augment_dataset(dataset: Dataset, settings: SpinSettings, *, min_distance: float = 0.5,
                    min_host_distance: float = 0.05, state_tolerance: float = 0.1,
                    progress: Callable[[int], None] | None = None) -> tuple[Dataset, AugmentReport]:
    """Add virtual spin atoms to every system of `dataset`; nothing is modified in place.

    min_distance (Å): a virtual atom closer than this to any atom other than its own host (real
    or virtual, minimum image under PBC) is an error.  min_host_distance (Å): a virtual atom
    closer than this to its own host is an error (d exists to prevent that).  state_tolerance (Å):
    warn when two spin states of an element lie closer than this in η·S.  `progress(n)` is
    called after each n frames checked.  Raises CathodemlError naming system, frame and atom.
    """
    if dataset.attrs.get("spin") is not None or any(t.endswith(VIRTUAL_SUFFIX) for t in dataset.type_map):
        raise CathodemlError("this dataset already has virtual spin atoms; strip them first (--strip)")
    for name, value in (("min distance", min_distance), ("min host distance", min_host_distance)):
        if not (math.isfinite(value) and value >= 0):
            raise CathodemlError(f"{name} must be a distance ≥ 0 Å, got {value}")
    present = {dataset.type_map[t] for s in dataset.systems for t in np.unique(s.atom_types)}
    unknown = [e for e in settings.elements if e not in present]
    if unknown:
        raise CathodemlError(f"magnetic element {','.join(unknown)} is not in the data (elements present: "
                             f"{','.join(t for t in dataset.type_map if t in present)}); fix --magnetic")
    full_map = augmented_type_map(dataset.type_map, settings)
    systems, samples = [], {el: {"moments": [], "shift": [], "state": []} for el in settings.elements}
    transverse = {}  # element → largest |S_xy| (μB) dropped by collinear mode
    for system in dataset.systems:
        if settings.mode == "collinear" and "magmom" not in system.frame_data and "spin" in system.frame_data:
            sxy = np.linalg.norm(np.asarray(system.frame_data["spin"], dtype=float)[..., :2], axis=-1)
            for t in np.unique(system.atom_types):
                el = dataset.type_map[t]
                if el in settings.elements:
                    transverse[el] = max(transverse.get(el, 0.0), float(np.nanmax(sxy[:, system.atom_types == t])))
        new, moments, shifts = _augment_system(system, dataset.type_map, full_map, settings,
                                               min_distance, min_host_distance, progress)
        systems.append(new)
        host = np.asarray(new.attrs["spin"]["host_index"], dtype=np.int64)
        # the spin states are those of the one rule (`state_moments`), as info and test report them
        state = state_moments(system.frame_data) if host.size else None
        for k, el in enumerate(dataset.type_map[t] for t in system.atom_types[host]):
            samples[el]["moments"].append(moments[:, k])
            samples[el]["shift"].append(shifts[:, k])
            samples[el]["state"].append(state[:, host[k]])
    report = _report(samples, settings, state_tolerance, sum(s.n_atoms - s.attrs["spin"]["n_real"] for s in systems))
    for el, sxy in transverse.items():
        if sxy > TRANSVERSE_TOLERANCE_MUB:
            report.warnings.append(f"{el}: collinear mode uses only the z component of the moment vectors, but they "
                                   f"have transverse parts up to {sxy:.2f} μB; use --mode vector for non-collinear data")
    attrs = {**dataset.attrs, "spin": {"settings": settings.to_dict(), "real_type_map": list(dataset.type_map)}}
    return Dataset(full_map, systems, attrs), report


def strip_dataset(dataset: Dataset) -> Dataset:
    """Remove the virtual atoms and every trace of augmentation: the exact input of `augment_dataset`."""
    rec = dataset.attrs.get("spin")
    if rec is None:
        raise CathodemlError("this dataset has no virtual spin atoms to strip (it was not made by augment-spin)")
    real_map = list(rec["real_type_map"])
    systems = []
    for s in dataset.systems:
        layout = read_spin_layout(s, dataset.type_map)
        if layout is None:
            raise InputFormatError(f"system {s.name}: no augmentation record; the file is not a complete augment-spin output")
        srec = s.attrs["spin"]
        n = layout.n_real
        frame_data = {}
        for key, value in s.frame_data.items():
            if key in srec["created"]:
                continue
            frame_data[key] = value[:, :n] if key in srec["padded"] else value
        attrs = {k: v for k, v in s.attrs.items() if k != "spin"}
        types = np.array([real_map.index(dataset.type_map[t]) for t in s.atom_types[:n]], dtype=s.atom_types.dtype)
        systems.append(dataclasses.replace(
            s, atom_types=types, coords=s.coords[:, :n], frame_data=frame_data, attrs=attrs,
            forces=None if s.forces is None else s.forces[:, :n]))
    attrs = {k: v for k, v in dataset.attrs.items() if k != "spin"}
    attrs["type_map"] = real_map
    return Dataset(real_map, systems, attrs)


# ----------------------------------------------------------------------------- internals


def _augment_system(system, type_map, full_map, settings, min_distance, min_host_distance, progress):
    n_real, nf = system.n_atoms, system.n_frames
    sites = virtual_sites(system.atom_types, type_map, settings)
    host = sites.host_index
    types_full = np.array([full_map.index(type_map[t]) for t in system.atom_types], dtype=system.atom_types.dtype)
    types_full = np.concatenate([types_full, sites.types.astype(system.atom_types.dtype)])
    source = _moment_source(system, settings.mode) if host.size else None
    if host.size:
        _check_moments_present(system, host, type_map, source)
    moments = _host_moments(system.frame_data, host, settings.mode, source, nf)
    virt = virtual_positions(system.coords, moments, host, sites.eta, sites.d, settings.mode)
    shift = np.linalg.norm(virt - system.coords[:, host], axis=-1)  # [nf, M]
    coords = np.concatenate([system.coords, virt], axis=1)
    _check_host_distance(system, shift, host, type_map, min_host_distance)
    _check_contacts(system, coords, host, full_map, types_full, type_map, min_distance, progress)

    m = host.size
    frame_data, padded, created = {}, [], []
    for key, value in system.frame_data.items():
        value = np.asarray(value)
        if value.ndim >= 2 and value.shape[1] == n_real:
            fill = np.nan if value.dtype.kind == "f" and key not in _ZERO_PADDED else 0
            pad = np.full((nf, m) + value.shape[2:], fill, dtype=value.dtype)
            frame_data[key] = np.concatenate([value, pad], axis=1)
            padded.append(key)
        else:
            frame_data[key] = value
    if "atom_pref" not in frame_data:
        frame_data["atom_pref"] = np.concatenate([np.ones((nf, n_real)), np.zeros((nf, m))], axis=1)
        created.append("atom_pref")
    forces = None if system.forces is None else np.concatenate([system.forces, np.zeros((nf, m, 3))], axis=1)
    attrs = {**system.attrs, "spin": {"n_real": n_real, "host_index": host.tolist(), "moment_source": source,
                                      "padded": padded, "created": created, "settings": settings.to_dict()}}
    new = dataclasses.replace(system, atom_types=types_full, coords=coords, forces=forces,
                              frame_data=frame_data, attrs=attrs)
    scalar = moments if settings.mode == "collinear" else np.linalg.norm(moments, axis=-1)
    return new, scalar, shift


def _moment_source(system: System, mode: str) -> str:
    fd = system.frame_data
    order = ("magmom", "spin") if mode == "collinear" else ("spin", "magmom")
    for key in order:
        if key in fd:
            return key
    raise CathodemlError(f"system {system.name}: no magnetic moments in the data (neither magmom from ingest nor "
                         "spin.npy); ingest spin-polarised VASP runs (ISPIN = 2, LORBIT = 11) or add spin.npy")


def _host_moments(frame_data, host, mode, source, n_frames):
    """Moments of the hosts: [nf, M] (collinear: z projection) or [nf, M, 3] (vector), μB."""
    if source is None:
        return np.zeros((n_frames, 0) if mode == "collinear" else (n_frames, 0, 3))
    value = np.asarray(frame_data[source], dtype=np.float64)[:, host]
    if source == "magmom":
        return value if mode == "collinear" else value[..., None] * _Z
    return value[..., 2] if mode == "collinear" else value


def _frame_label(system: System, frame: int) -> str:
    fd = system.frame_data
    text = f"system {system.name} frame {frame}"
    if "source_path" in fd:
        text += f" ({fd['source_path'][frame]}"
        text += f", ionic step {int(fd['ionic_step'][frame])})" if "ionic_step" in fd else ")"
    return text


def _check_moments_present(system, host, type_map, source):
    fd = system.frame_data
    bad = np.zeros((system.n_frames, host.size), dtype=bool)
    if "has_moments" in fd:
        bad |= ~np.asarray(fd["has_moments"], dtype=bool)[:, None]
    values = np.asarray(fd[source], dtype=np.float64)[:, host]
    bad |= ~np.isfinite(values.reshape(system.n_frames, host.size, -1)).all(axis=-1)
    if not bad.any():
        return
    f, k = map(int, np.argwhere(bad)[0])
    atom = int(host[k])
    n_bad = int(bad.any(axis=1).sum())
    why = "it has no per-atom magnetization table"
    if "ispin" in fd and int(np.asarray(fd["ispin"])[f]) == 1:
        why = "the run is not spin-polarised (ISPIN = 1)"
    raise CathodemlError(
        f"{_frame_label(system, f)}: no magnetic moment for atom {atom} ({type_map[system.atom_types[atom]]}); {why}. "
        f"VASP prints per-atom moments only with ISPIN = 2 and LORBIT = 10/11/12 -- rerun with LORBIT = 11 "
        f"or leave out these {n_bad} frame(s)")


def _check_host_distance(system, shift, host, type_map, min_host_distance):
    if host.size == 0 or shift.min() >= min_host_distance:
        return
    f, k = np.unravel_index(int(np.argmin(shift)), shift.shape)
    atom = int(host[k])
    raise CathodemlError(
        f"{_frame_label(system, int(f))}: the virtual atom of atom {atom} ({type_map[system.atom_types[atom]]}) "
        f"is only {shift[f, k]:.3f} Å from its host (< {min_host_distance:g} Å): η·S + d ≈ 0 for this moment; "
        "change d (--d) so that η·S + d stays away from zero")


def _check_contacts(system, coords, host, full_map, types_full, type_map, min_distance, progress):
    n_real, nf = system.n_atoms, system.n_frames
    if host.size == 0 or min_distance <= 0:
        if progress is not None:
            progress(nf)
        return
    # Chunks of frames keep the [frames, M, N + M, images, 3] arrays near 24 MB.
    chunk = max(1, int(1e6 // (host.size * coords.shape[1] * 27)))
    for start in range(0, nf, chunk):
        stop = min(nf, start + chunk)
        dist = contact_distances(coords[start:stop], system.cells[start:stop], not system.nopbc, n_real, host,
                                 min_distance)
        close = np.isfinite(dist)
        if close.any():
            f = int(np.flatnonzero(close.any(axis=(1, 2)))[0])
            k, b = np.unravel_index(int(np.argmin(dist[f])), dist[f].shape)
            ha, b = int(host[k]), int(b)
            other = (f"real atom {b} ({full_map[types_full[b]]})" if b < n_real else
                     f"the virtual atom of atom {int(host[b - n_real])} ({full_map[types_full[b]]})")
            if b == ha:
                other = f"a periodic image of its own host atom {b}"
            where = "under periodic boundaries" if not system.nopbc else "(no periodic boundaries)"
            raise CathodemlError(
                f"{_frame_label(system, start + f)}: the virtual atom of atom {ha} ({type_map[system.atom_types[ha]]}) "
                f"is {dist[f, k, b]:.3f} Å from {other} {where} (< {min_distance:g} Å); "
                "lower --eta/--d for that element or lower --min-distance")
        if progress is not None:
            progress(stop - start)


def _report(samples, settings, state_tolerance, n_virtual) -> AugmentReport:
    elements, warnings = {}, []
    for el in settings.elements:
        if not samples[el]["moments"]:
            continue
        m = np.concatenate(samples[el]["moments"])
        sh = np.concatenate(samples[el]["shift"])
        states = spin_states(np.concatenate(samples[el]["state"]))
        eta = settings.eta_of(el)
        elements[el] = {
            "virtual_type": virtual_type_name(el), "eta_A_per_muB": eta, "d_A": settings.d_of(el),
            "n_samples": int(m.size), "moment_range_muB": [float(m.min()), float(m.max())],
            "moment_histogram": moment_histogram(m), "spin_states": states,
            "displacement_range_A": [float(sh.min()), float(sh.max())],
        }
        for lo, hi in zip(states[:-1], states[1:]):
            sep = eta * (hi["center"] - lo["center"])
            if sep < state_tolerance:
                warnings.append(
                    f"{el}: spin states near {lo['center']:.2f} and {hi['center']:.2f} μB are only {sep:.3f} Å apart "
                    f"in η·S (< {state_tolerance:g} Å); the model may not tell them apart -- raise --eta for {el}")
    return AugmentReport(elements, warnings, n_virtual)
