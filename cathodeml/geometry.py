"""Periodic-cell maths in one place: fractional coordinates, wrapping with image counts, folding,
minimum image, perpendicular widths and how many periodic images a cutoff reaches.

Every cell here has its rows as lattice vectors (Å), so Cartesian = fractional @ cell, as in ASE,
dpdata and vesin.  Each function takes either one cell [3, 3] for points [..., 3] or one cell per
frame [nf, 3, 3] for points [nf, ..., 3]; that is the difference between an MD step and a
trajectory, and keeping both behind one signature lets MD, the H5MD writer, the spin overlap check
and the analysis share one implementation instead of five hand-written ones.  Triclinic cells are
the general case, never an afterthought: wrapping and folding are done in fractional coordinates,
and anything with a distance in it (the minimum image, image search for a cutoff) bounds its search
by the perpendicular widths, so cells thinner than the cutoff are exact too.  Plain numpy: the
jitted model rebuilds its pair vectors in JAX from integer shifts that these functions produce.
"""

from __future__ import annotations

import numpy as np


def _times_cell(x: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Row vectors x [..., 3] times one 3×3 matrix [3, 3], or x [nf, ..., 3] times one matrix per
    frame [nf, 3, 3].  Equal per-frame matrices (fixed cell, the usual NVT case) take a single
    BLAS product over all rows."""
    if matrix.ndim == 2:
        return (x.reshape(-1, 3) @ matrix).reshape(x.shape)
    if len(matrix) and np.all(matrix == matrix[0]):
        return (x.reshape(-1, 3) @ matrix[0]).reshape(x.shape)
    return np.matmul(x.reshape(len(matrix), -1, 3), matrix).reshape(x.shape)


def fractional(positions, cell) -> np.ndarray:
    """Cartesian positions or displacements (Å) → fractional coordinates (dimensionless).

    positions [..., 3] with cell [3, 3] Å, or positions [nf, ..., 3] with cells [nf, 3, 3] Å.
    """
    positions = np.asarray(positions, dtype=np.float64)
    return _times_cell(positions, np.linalg.inv(np.asarray(cell, dtype=np.float64)))


def cartesian(frac, cell) -> np.ndarray:
    """Fractional coordinates or displacements → Cartesian Å; shapes as in `fractional`."""
    return _times_cell(np.asarray(frac, dtype=np.float64), np.asarray(cell, dtype=np.float64))


def image_counts(positions, cell) -> np.ndarray:
    """Integer image counts n [..., 3] (int64) of positions (Å): the cell each point lies in, so that
    positions = wrapped + n @ cell with the wrapped point inside the cell at the origin."""
    return np.floor(fractional(positions, cell)).astype(np.int64)


def wrap(positions, cell) -> tuple[np.ndarray, np.ndarray]:
    """(wrapped positions Å, image counts int64) with positions = wrapped + image @ cell and the
    wrapped fractional coordinates in [0, 1) up to round-off; shapes as in `fractional`."""
    frac = fractional(positions, cell)
    image = np.floor(frac)
    # From the fractional remainder rather than positions − n·cell: a point many cells away still
    # lands inside the cell to round-off of the cell's size, not of its own distance.
    return cartesian(frac - image, cell), image.astype(np.int64)


def fold_fractional(frac) -> tuple[np.ndarray, np.ndarray]:
    """(folded, nearest): fractional displacements folded into [−½, ½] by the nearest integer
    vector, frac = folded + nearest (nearest int64).  This is the minimum image in fractional
    coordinates, which is what unwrapping needs; for the shortest Cartesian copy in a skewed cell
    see `minimum_image`."""
    frac = np.asarray(frac, dtype=np.float64)
    nearest = np.round(frac)
    return frac - nearest, nearest.astype(np.int64)


def cell_volume(cell) -> np.ndarray:
    """|det cell| in Å³ for a cell [3, 3] (a scalar array) or cells [..., 3, 3]."""
    return np.abs(np.linalg.det(np.asarray(cell, dtype=np.float64)))


def perpendicular_widths(cell) -> np.ndarray:
    """Distances (Å) between opposite faces, w_i = V / |a_j × a_k|, [3] for a cell [3, 3] Å or
    [..., 3] for cells [..., 3, 3].  A sphere of radius r fits in the cell iff 2r ≤ min w_i."""
    cell = np.asarray(cell, dtype=np.float64)
    faces = np.cross(cell[..., [1, 2, 0], :], cell[..., [2, 0, 1], :])  # a_j × a_k for i = 0, 1, 2
    return np.asarray(cell_volume(cell))[..., None] / np.linalg.norm(faces, axis=-1)


def image_reach(cell, cutoff: float) -> np.ndarray:
    """How many periodic images n_i (int [3]) to search each way along each lattice vector so that
    every copy d + n·cell shorter than `cutoff` (Å) is found, for displacements d folded into
    [−½, ½] (`fold_fractional`).  Fractional coordinate i of a vector is at most its length over
    w_i, so |f_i + n_i| < cutoff / w_i gives |n_i| ≤ cutoff / w_i + ½.  Per-frame cells [nf, 3, 3]
    give one reach for all frames (from the thinnest)."""
    widths = perpendicular_widths(cell).reshape(-1, 3).min(axis=0)
    return np.floor(cutoff / widths + 0.5).astype(int)


def lattice_images(reach) -> np.ndarray:
    """Integer image vectors n [K, 3] (int64) with |n_i| ≤ reach_i, K = Π(2·reach_i + 1), in C order
    over (n_0, n_1, n_2): image n has row `np.ravel_multi_index(n + reach, 2 * reach + 1)`."""
    ranges = [np.arange(-int(r), int(r) + 1) for r in reach]
    return np.stack(np.meshgrid(*ranges, indexing="ij"), axis=-1).reshape(-1, 3)


def minimum_image(diff, cell) -> np.ndarray:
    """The shortest periodic copy diff + n·cell (Å) of each displacement diff [..., 3] Å, exact for
    any triclinic cell [3, 3] (or diff [nf, ..., 3] with cells [nf, 3, 3]).

    Folding in fractional coordinates alone is not enough in a skewed cell (a neighbouring image
    can be shorter), so the folded vector's length bounds an image search (`image_reach`).
    """
    diff = np.asarray(diff, dtype=np.float64)
    cell = np.asarray(cell, dtype=np.float64)
    folded = cartesian(fold_fractional(fractional(diff, cell))[0], cell)
    if folded.size == 0:
        return folded
    reach = image_reach(cell, float(np.linalg.norm(folded, axis=-1).max()))
    shifts = lattice_images(reach).astype(np.float64) @ cell  # [K, 3], or [nf, K, 3] per frame
    if cell.ndim == 3:
        shifts = shifts.reshape(len(cell), *([1] * (folded.ndim - 2)), -1, 3)
    candidates = folded[..., None, :] + shifts  # [..., K, 3]
    best = np.argmin(np.sum(candidates * candidates, axis=-1), axis=-1)
    return np.take_along_axis(candidates, best[..., None, None], axis=-2)[..., 0, :]
