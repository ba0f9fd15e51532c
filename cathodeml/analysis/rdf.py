"""Partial radial distribution functions g_ab(r) and coordination numbers under periodic boundaries.

Pairs within r_max come from vesin's cell-list neighbour search, which handles triclinic cells
exactly, so one half neighbour list per frame over the atoms of the requested species serves
every pair a–b at once.  Counts are accumulated frame by frame (`RdfAccumulator`) and only
normalised at the end, g_ab(r) = V n_ab(r) / (N_a N_b' 4πr² dr) with N_b' = N_b − δ_ab, so an ideal
gas gives exactly 1 in expectation.  r_max is limited to half the smallest perpendicular width
of the cell, beyond which an atom would meet its own periodic images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.geometry import cell_volume, perpendicular_widths


def pair_distances(positions: np.ndarray, cell: np.ndarray, r_max: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each unordered pair (i < j by list order) closer than r_max under periodic boundaries:
    (i [P], j [P], distance [P] Å), positions [N, 3] Å, cell [3, 3] Å."""
    import vesin

    nl = vesin.NeighborList(cutoff=float(r_max), full_list=False)
    i, j, d = nl.compute(points=np.ascontiguousarray(positions, dtype=np.float64),
                         box=np.ascontiguousarray(cell, dtype=np.float64), periodic=True, quantities="ijd")
    return np.asarray(i), np.asarray(j), np.asarray(d)


@dataclasses.dataclass
class RdfAccumulator:
    """Histogram of pair distances for species pairs over frames.

    species [N] names of every atom; pairs [(a, b)]; r_max Å; n_bins.  Call `add_frame` per
    frame (positions Å, cell Å), then `result()`.
    """

    species: np.ndarray
    pairs: list[tuple[str, str]]
    r_max: float
    n_bins: int = 200

    def __post_init__(self):
        self.species = np.asarray(self.species)
        present = set(self.species.tolist())
        for a, b in self.pairs:
            for s in (a, b):
                if s not in present:
                    raise CathodemlError(f"RDF pair {a}-{b}: no {s} atoms in the trajectory (it has {', '.join(sorted(present))})")
        needed = sorted({s for p in self.pairs for s in p})
        self._atoms = np.flatnonzero(np.isin(self.species, needed))
        codes = {s: k for k, s in enumerate(needed)}
        self._code = np.array([codes[s] for s in self.species[self._atoms]])
        self._pair_codes = [(codes[a], codes[b]) for a, b in self.pairs]
        self._counts = {p: np.zeros(self.n_bins) for p in self.pairs}
        self._density_weight = {p: 0.0 for p in self.pairs}
        self.edges = np.linspace(0.0, self.r_max, self.n_bins + 1)
        self.n_frames = 0

    def add_frame(self, positions: np.ndarray, cell: np.ndarray) -> None:
        """Histogram one frame: positions [N, 3] Å of all atoms, cell [3, 3] Å."""
        widths = perpendicular_widths(cell)
        if self.r_max > 0.5 * widths.min() + 1e-9:
            raise CathodemlError(f"RDF r_max {self.r_max:g} Å exceeds half the cell width ({0.5 * widths.min():.2f} Å): "
                                 "lower --rdf-rmax")
        volume = float(cell_volume(cell))
        i, j, d = pair_distances(positions[self._atoms], cell, self.r_max)
        ci, cj = self._code[i], self._code[j]
        for pair, (a, b) in zip(self.pairs, self._pair_codes):
            sel = ((ci == a) & (cj == b)) | ((ci == b) & (cj == a))
            hist = np.histogram(d[sel], bins=self.edges)[0].astype(float)
            n_a = np.count_nonzero(self.species == pair[0])
            n_b = np.count_nonzero(self.species == pair[1])
            if a == b:
                hist *= 2.0  # ordered pairs
                n_b -= 1
            self._counts[pair] += hist / n_a  # neighbours of b per a atom
            self._density_weight[pair] += n_b / volume
        self.n_frames += 1

    def result(self) -> dict:
        """{(a, b): {"r" [n_bins] Å bin centres, "g" [n_bins], "cn" [n_bins] cumulative
        coordination number at the bin's outer edge}} averaged over the frames added."""
        if self.n_frames == 0:
            raise CathodemlError("no frames were given to the RDF")
        r = 0.5 * (self.edges[1:] + self.edges[:-1])
        shell = 4.0 / 3.0 * np.pi * (self.edges[1:] ** 3 - self.edges[:-1] ** 3)
        out = {}
        for pair in self.pairs:
            per_a = self._counts[pair] / self.n_frames
            rho_b = self._density_weight[pair] / self.n_frames
            out[pair] = {"r": r, "g": per_a / (rho_b * shell), "cn": np.cumsum(per_a)}
        return out


def first_shell(r: np.ndarray, g: np.ndarray, cn: np.ndarray, smooth_bins: int = 5, min_peak: float = 1.2,
                min_cn: float = 0.05) -> dict:
    """First coordination shell of a g(r): the first local maximum of the smoothed g with
    g ≥ `min_peak` and at least `min_cn` neighbours inside it (so noise at small r or in a
    structureless g is not a shell), then the first minimum after it.

    Returns {"r_peak", "g_peak", "r_min" (Å), "cn" (neighbours within r_min)}; NaNs where there
    is no such shell.
    """
    kernel = np.ones(smooth_bins) / smooth_bins
    gs = np.convolve(g, kernel, mode="same")
    nan = {"r_peak": float("nan"), "g_peak": float("nan"), "r_min": float("nan"), "cn": float("nan")}
    k = 0
    while k < len(gs):
        if gs[k] >= min_peak and cn[k] >= min_cn:
            while k + 1 < len(gs) and gs[k + 1] >= gs[k]:
                k += 1
            break
        k += 1
    if k >= len(gs):
        return nan
    peak = k
    while k + 1 < len(gs) and gs[k + 1] <= gs[k]:
        k += 1
    if k + 1 >= len(gs):
        return {**nan, "r_peak": float(r[peak]), "g_peak": float(g[peak])}
    # cn[k] counts neighbours up to the bin's outer edge; r_min is that edge.
    dr = r[1] - r[0]
    return {"r_peak": float(r[peak]), "g_peak": float(g[peak]), "r_min": float(r[k] + 0.5 * dr), "cn": float(cn[k])}
