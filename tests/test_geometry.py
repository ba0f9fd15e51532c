"""Periodic-cell maths in cathodeml.geometry, checked against brute force and closed-form cells."""

import itertools

import numpy as np

from cathodeml import geometry

# Rows are lattice vectors (Å).  SKEWED leans b almost onto a and c over both, so folding in
# fractional coordinates alone often misses the shortest copy of a displacement.
TRICLINIC = np.array([[9.0, 0.0, 0.0], [3.1, 8.2, 0.0], [-2.4, 1.7, 10.5]])
SKEWED = np.array([[10.0, 0.0, 0.0], [8.6, 3.0, 0.0], [5.3, 2.2, 3.1]])


def _per_frame_cells(rng, nf):
    return np.array([TRICLINIC + rng.normal(0.0, 0.3, size=(3, 3)) for _ in range(nf)])


def test_wrap_round_trips_and_lands_inside_a_triclinic_cell():
    rng = np.random.default_rng(0)
    positions = rng.uniform(-5.0, 5.0, size=(500, 3)) @ TRICLINIC  # up to five cells away each way
    wrapped, image = geometry.wrap(positions, TRICLINIC)
    assert np.issubdtype(image.dtype, np.integer)
    np.testing.assert_allclose(wrapped + image @ TRICLINIC, positions, atol=1e-10)
    frac = np.linalg.solve(TRICLINIC.T, wrapped.T).T  # independent of geometry's own inverse
    assert frac.min() >= -1e-12 and frac.max() < 1.0 + 1e-12
    assert np.abs(image).max() >= 4  # the points really were several cells away
    np.testing.assert_array_equal(geometry.image_counts(positions, TRICLINIC), image)


def test_a_point_inside_the_cell_has_image_zero_and_stays_put():
    rng = np.random.default_rng(1)
    positions = rng.uniform(0.01, 0.99, size=(50, 3)) @ TRICLINIC
    wrapped, image = geometry.wrap(positions, TRICLINIC)
    assert not image.any()
    np.testing.assert_allclose(wrapped, positions, atol=1e-12)


def test_fractional_and_cartesian_are_inverse_for_one_cell_and_per_frame_cells():
    rng = np.random.default_rng(2)
    cells = _per_frame_cells(rng, 6)
    positions = rng.normal(0.0, 20.0, size=(6, 40, 3))
    frac = geometry.fractional(positions, cells)
    for f in range(6):
        np.testing.assert_allclose(frac[f], np.linalg.solve(cells[f].T, positions[f].T).T, atol=1e-12)
    np.testing.assert_allclose(geometry.cartesian(frac, cells), positions, atol=1e-10)
    np.testing.assert_allclose(geometry.cartesian(geometry.fractional(positions[0], cells[0]), cells[0]),
                               positions[0], atol=1e-10)


def test_batched_wrap_equals_wrapping_frame_by_frame():
    rng = np.random.default_rng(3)
    cells = _per_frame_cells(rng, 5)
    positions = rng.normal(0.0, 30.0, size=(5, 30, 3))
    wrapped, image = geometry.wrap(positions, cells)
    for f in range(5):
        w, n = geometry.wrap(positions[f], cells[f])
        np.testing.assert_allclose(wrapped[f], w, atol=1e-12)
        np.testing.assert_array_equal(image[f], n)
    # Equal per-frame cells take the single-product path; it must agree with the one-cell call.
    same = np.broadcast_to(TRICLINIC, (5, 3, 3))
    np.testing.assert_array_equal(geometry.wrap(positions, same)[1], geometry.wrap(positions, TRICLINIC)[1])


def test_fold_fractional_takes_the_nearest_integer_vector():
    rng = np.random.default_rng(4)
    frac = rng.uniform(-4.0, 4.0, size=(200, 3))
    folded, nearest = geometry.fold_fractional(frac)
    assert np.issubdtype(nearest.dtype, np.integer)
    assert np.abs(folded).max() <= 0.5
    np.testing.assert_allclose(folded + nearest, frac, atol=1e-15)


def _brute_force_minimum_image(diff, cell, reach=6):
    """Shortest of diff + n·cell over every |n_i| ≤ reach around the fractionally folded diff (for
    SKEWED the shortest copy can be 5 images away along b from the folded one)."""
    frac = np.linalg.solve(cell.T, diff.T).T
    diff = diff - np.round(frac) @ cell
    images = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)), dtype=float)
    candidates = diff[:, None, :] + (images @ cell)[None]
    best = np.argmin(np.linalg.norm(candidates, axis=-1), axis=1)
    return candidates[np.arange(len(diff)), best]


def test_minimum_image_is_the_shortest_copy_in_a_skewed_cell():
    rng = np.random.default_rng(5)
    points = rng.uniform(0.0, 1.0, size=(25, 3)) @ SKEWED
    diff = (points[None] - points[:, None]).reshape(-1, 3)
    got = geometry.minimum_image(diff, SKEWED)
    want = _brute_force_minimum_image(diff, SKEWED)
    np.testing.assert_allclose(np.linalg.norm(got, axis=-1), np.linalg.norm(want, axis=-1), atol=1e-10)
    np.testing.assert_allclose(got, want, atol=1e-10)
    # The answer is the same displacement moved by a whole lattice vector ...
    shift = geometry.fractional(got - diff, SKEWED)
    np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
    # ... and the cell is skewed enough that folding fractional coordinates alone is not the answer.
    folded = geometry.cartesian(geometry.fold_fractional(geometry.fractional(diff, SKEWED))[0], SKEWED)
    assert np.mean(np.linalg.norm(folded, axis=-1) > np.linalg.norm(want, axis=-1) + 1e-6) > 0.1


def test_minimum_image_in_an_orthorhombic_box_is_the_textbook_fold():
    rng = np.random.default_rng(6)
    box = np.array([7.0, 8.0, 9.0])
    diff = rng.uniform(-20.0, 20.0, size=(300, 3))
    got = geometry.minimum_image(diff, np.diag(box))
    np.testing.assert_allclose(got, diff - box * np.round(diff / box), atol=1e-12)


def test_batched_minimum_image_equals_frame_by_frame():
    rng = np.random.default_rng(7)
    cells = np.array([SKEWED, TRICLINIC, SKEWED * 1.1, TRICLINIC[::-1]])
    diff = rng.normal(0.0, 8.0, size=(4, 6, 5, 3))
    got = geometry.minimum_image(diff, cells)
    for f in range(4):
        np.testing.assert_allclose(got[f], geometry.minimum_image(diff[f], cells[f]), atol=1e-12)
        np.testing.assert_allclose(np.linalg.norm(got[f], axis=-1).ravel(),
                                   np.linalg.norm(_brute_force_minimum_image(diff[f].reshape(-1, 3), cells[f]),
                                                  axis=-1), atol=1e-10)


def test_perpendicular_widths_of_an_orthorhombic_cell_are_its_edges():
    np.testing.assert_allclose(geometry.perpendicular_widths(np.diag([3.0, 4.5, 6.0])), [3.0, 4.5, 6.0],
                               rtol=1e-14)


def test_perpendicular_widths_of_a_hexagonal_cell():
    a, c = 2.87, 14.2  # LiCoO2-like: γ = 120°, the widths across the a and b faces are a·√3/2
    cell = np.array([[a, 0.0, 0.0], [-a / 2, a * np.sqrt(3) / 2, 0.0], [0.0, 0.0, c]])
    np.testing.assert_allclose(geometry.perpendicular_widths(cell), [a * np.sqrt(3) / 2, a * np.sqrt(3) / 2, c],
                               rtol=1e-14)
    np.testing.assert_allclose(geometry.cell_volume(cell), a * a * c * np.sqrt(3) / 2, rtol=1e-14)


def test_perpendicular_widths_are_one_over_the_reciprocal_lengths():
    # Face i is the plane of a_j, a_k; its spacing is 1/|b_i| for the reciprocal vector b_i.
    # A lower-triangular cell puts a and b in z = 0, so the c width is c_z exactly.
    w = geometry.perpendicular_widths(TRICLINIC)
    np.testing.assert_allclose(w, 1.0 / np.linalg.norm(np.linalg.inv(TRICLINIC), axis=0), rtol=1e-13)
    np.testing.assert_allclose(w[2], TRICLINIC[2, 2], rtol=1e-14)
    assert w[0] < np.linalg.norm(TRICLINIC[0]) and w[1] < np.linalg.norm(TRICLINIC[1])


def test_batched_perpendicular_widths_equal_per_frame():
    rng = np.random.default_rng(8)
    cells = _per_frame_cells(rng, 7)
    w = geometry.perpendicular_widths(cells)
    assert w.shape == (7, 3)
    for f in range(7):
        np.testing.assert_array_equal(w[f], geometry.perpendicular_widths(cells[f]))
        np.testing.assert_allclose(w[f], 1.0 / np.linalg.norm(np.linalg.inv(cells[f]), axis=0), rtol=1e-13)


def test_image_reach_finds_every_copy_within_a_cutoff_longer_than_the_cell():
    rng = np.random.default_rng(9)
    cutoff = 9.0  # the SKEWED cell is only ~2 Å thick across its c face
    assert geometry.perpendicular_widths(SKEWED).min() < cutoff / 3
    folded = geometry.cartesian(rng.uniform(-0.5, 0.5, size=(60, 3)), SKEWED)
    reach = geometry.image_reach(SKEWED, cutoff)
    searched = np.linalg.norm(folded[:, None] + (geometry.lattice_images(reach) @ SKEWED)[None], axis=-1)
    everything = np.linalg.norm(folded[:, None] + (geometry.lattice_images([12, 12, 12]) @ SKEWED)[None], axis=-1)
    np.testing.assert_array_equal((searched < cutoff).sum(axis=1), (everything < cutoff).sum(axis=1))
    assert (everything < cutoff).sum(axis=1).min() > 27  # more than the nearest 27 images matter here


def test_image_reach_of_per_frame_cells_is_that_of_the_thinnest():
    thin = SKEWED * np.array([[1.0], [1.0], [0.5]])
    reach = geometry.image_reach(np.array([SKEWED, thin]), 6.0)
    np.testing.assert_array_equal(reach, np.maximum(geometry.image_reach(SKEWED, 6.0), geometry.image_reach(thin, 6.0)))


def test_lattice_image_rows_follow_ravel_multi_index():
    reach = np.array([1, 0, 2])
    images = geometry.lattice_images(reach)
    assert images.shape == (3 * 1 * 5, 3)
    rows = np.ravel_multi_index(tuple((images + reach).T), tuple(2 * reach + 1))
    np.testing.assert_array_equal(rows, np.arange(len(images)))
    assert len({tuple(n) for n in images.tolist()}) == len(images)
