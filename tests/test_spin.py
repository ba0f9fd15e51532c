"""Virtual spin atoms: the placement z' = z + η·S + d (collinear) and R' = R + η·S (vector), its
gradient inside jitted JAX code, overlap detection under periodic boundaries, the exact strip
round trip, and a file that dpdata reads."""

import dataclasses
import json

import dpdata
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import Dataset, System, read_dataset, remap_types, write_dataset
from cathodeml.spin import (
    SpinSettings,
    augment_dataset,
    close_contacts,
    read_spin_layout,
    spin_states,
    strip_dataset,
    virtual_positions,
    with_virtual_atoms,
)


TYPE_MAP = ["Li", "Ni", "O"]
# A small triclinic cell (rows are lattice vectors, Å).
CELL = np.array([[4.0, 0.0, 0.0], [1.6, 3.8, 0.0], [0.9, 1.1, 4.2]])


def ingest_like_system(n_frames=3, seed=0):
    """Li1 Ni2 O3 in CELL with every per-frame array ingest writes (moments in μB)."""
    rng = np.random.default_rng(seed)
    frac = np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.0, 0.25], [0.25, 0.5, 0.0], [0.0, 0.5, 0.6], [0.6, 0.2, 0.8]])
    coords = (frac @ CELL)[None] + 0.05 * rng.standard_normal((n_frames, 6, 3))
    magmom = np.array([[0.01, 1.1, -1.0, 0.02, -0.03, 0.0], [0.0, 3.1, 1.2, 0.01, 0.0, 0.04], [0.02, -0.9, 3.0, 0.0, 0.01, 0.0]])[:n_frames]
    spin = np.zeros((n_frames, 6, 3))
    spin[..., 2] = magmom
    return System(
        atom_types=np.array([0, 1, 1, 2, 2, 2]),
        coords=coords,
        cells=np.repeat(CELL[None], n_frames, axis=0),
        energies=-30.0 + rng.standard_normal(n_frames),
        forces=rng.standard_normal((n_frames, 6, 3)),
        virials=rng.standard_normal((n_frames, 3, 3)),
        frame_data={
            "magmom": magmom,
            "magmom_orbital": rng.standard_normal((n_frames, 6, 4)),
            "spin": spin,
            "has_moments": np.ones(n_frames, dtype=bool),
            "initial_magmom": np.full((n_frames, 6), np.nan),
            "ispin": np.full(n_frames, 2),
            "scf_converged": np.ones(n_frames, dtype=bool),
            "ionic_step": np.arange(n_frames),
            "source_path": np.array([f"runs/LiNi2O3/OUTCAR#{i}" for i in range(n_frames)], dtype=object),
        },
        attrs={"origin": "hand-made"},
        name="LiNi2O3",
    )


def test_collinear_virtual_atom_sits_eta_s_plus_d_above_its_host_along_z():
    system = ingest_like_system()
    settings = SpinSettings.create(["Ni"], eta={"Ni": 0.3}, d={"Ni": 0.2})
    out, report = augment_dataset(Dataset(TYPE_MAP, [system]), settings)
    s = out.systems[0]
    assert out.type_map == ["Li", "Ni", "O", "Ni_spin"]
    np.testing.assert_array_equal(s.atom_types, [0, 1, 1, 2, 2, 2, 3, 3])  # real types keep their indices
    # Frame 1: Ni moments 3.1 and 1.2 μB → z shifts 0.3·3.1 + 0.2 = 1.13 Å and 0.3·1.2 + 0.2 = 0.56 Å.
    np.testing.assert_allclose(s.coords[1, 6] - s.coords[1, 1], [0.0, 0.0, 1.13], atol=1e-12)
    np.testing.assert_allclose(s.coords[1, 7] - s.coords[1, 2], [0.0, 0.0, 0.56], atol=1e-12)
    # Frame 0: the spin-down Ni (-1.0 μB) has its virtual atom below it: 0.3·(-1.0) + 0.2 = -0.1 Å.
    np.testing.assert_allclose(s.coords[0, 6] - s.coords[0, 1], [0.0, 0.0, 0.53], atol=1e-12)
    np.testing.assert_allclose(s.coords[0, 7] - s.coords[0, 2], [0.0, 0.0, -0.1], atol=1e-12)
    # Labels: energies and virials unchanged, virtual atoms have zero force and mask 0.
    np.testing.assert_array_equal(s.energies, system.energies)
    np.testing.assert_array_equal(s.virials, system.virials)
    np.testing.assert_array_equal(s.forces[:, :6], system.forces)
    np.testing.assert_array_equal(s.forces[:, 6:], 0.0)
    np.testing.assert_array_equal(s.frame_data["atom_pref"], np.repeat([[1, 1, 1, 1, 1, 1, 0, 0]], 3, axis=0))
    # A virtual atom has no moment of its own: NaN in magmom, zeros in DeePMD-kit's spin array.
    assert np.isnan(s.frame_data["magmom"][:, 6:]).all() and not s.frame_data["spin"][:, 6:].any()
    np.testing.assert_array_equal(s.frame_data["magmom"][:, :6], system.frame_data["magmom"])
    assert report.elements["Ni"]["displacement_range_A"] == pytest.approx([0.07, 1.13])  # frame 2: 0.3·(-0.9) + 0.2
    assert report.n_virtual == 2


def test_host_moment_near_minus_d_over_eta_is_rejected_with_frame_and_atom():
    system = ingest_like_system()
    settings = SpinSettings.create(["Ni"], eta=0.2, d=0.2)  # frame 0 atom 2: 0.2·(-1.0) + 0.2 = 0
    with pytest.raises(CathodemlError, match=r"frame 0 .*OUTCAR#0.*atom 2 \(Ni\) is only 0.000 Å from its host.*--d"):
        augment_dataset(Dataset(TYPE_MAP, [system]), settings)


def test_vector_mode_on_nio_places_virtual_atoms_at_deepmd_virtual_scale_times_spin(data_dir, tmp_path):
    # DeePMD-kit's own NiO spin example: R' = R + virtual_scale·S with virtual_scale from its input.
    folder = data_dir / "deepmd/nio_spin"
    scale = json.loads((folder / "input_torch.json").read_text())["model"]["spin"]["virtual_scale"][0]
    ds = read_dataset(folder)
    out, report = augment_dataset(ds, SpinSettings.create(["Ni"], eta=scale, d=0.0, mode="vector"))
    path = tmp_path / "nio_spin.h5"
    write_dataset(path, out)
    for name in ("data_0", "data_1", "data_2"):
        coord = np.load(folder / name / "set.000/coord.npy").reshape(-1, 32, 3)
        spin = np.load(folder / name / "set.000/spin.npy").reshape(-1, 32, 3)
        got = dpdata.LabeledSystem(f"{path}#{name}", fmt="deepmd/hdf5")
        assert got["atom_names"] == ["Ni", "O", "Ni_spin"] and got.get_natoms() == 48
        np.testing.assert_allclose(got["coords"][:, 32:], coord[:, :16] + scale * spin[:, :16], atol=1e-12)
        np.testing.assert_allclose(got["coords"][:, :32], coord, atol=1e-12)
        np.testing.assert_array_equal(got["atom_types"][32:], 2)
    # |R' - R| = virtual_scale · |S| with |S| ≈ 1.27 μB for every Ni of the set.
    assert report.elements["Ni"]["displacement_range_A"][0] == pytest.approx(scale * 1.2732, abs=1e-3)
    assert len(report.elements["Ni"]["spin_states"]) == 1 and not report.warnings
    # Collinear mode would keep only S_z of these tilted moments (|S_xy| up to 1.27 μB): it says so.
    _, report = augment_dataset(ds, SpinSettings.create(["Ni"], eta=0.3, d=0.5))
    assert len(report.warnings) == 1 and "transverse parts up to 1.27 μB" in report.warnings[0] and "--mode vector" in report.warnings[0]


@pytest.mark.parametrize("mode", ["collinear", "vector"])
def test_virtual_position_jacobian_inside_jit_is_identity_on_the_host(mode):
    rng = np.random.default_rng(1)
    positions = jnp.asarray(rng.uniform(0, 5, (5, 3)))
    host = np.array([1, 3, 4])
    moments = rng.normal(size=(3,) if mode == "collinear" else (3, 3))
    eta, d = np.array([0.3, 0.2, 0.45]), np.array([0.2, 0.1, 0.3]) * (mode == "collinear")
    jac = jax.jit(jax.jacfwd(lambda r: virtual_positions(r, moments, host, eta, d, mode)))(positions)
    assert jac.shape == (3, 3, 5, 3)  # (virtual, xyz, real atom, xyz)
    for k, h in enumerate(host):
        for i in range(5):
            np.testing.assert_array_equal(jac[k, :, i, :], np.eye(3) if i == h else np.zeros((3, 3)))
    # Same numbers from numpy and from jit; a central finite difference agrees with the Jacobian.
    p = np.asarray(positions)
    np.testing.assert_allclose(jax.jit(lambda r: virtual_positions(r, moments, host, eta, d, mode))(positions),
                               virtual_positions(p, moments, host, eta, d, mode), atol=1e-14)
    h = 1e-6
    step = np.zeros_like(p)
    step[3, 1] = h
    fd = (virtual_positions(p + step, moments, host, eta, d, mode) - virtual_positions(p - step, moments, host, eta, d, mode)) / (2 * h)
    np.testing.assert_allclose(fd, np.asarray(jac[:, :, 3, 1]), atol=1e-8)


def test_force_on_a_host_includes_the_force_on_its_virtual_atom():
    # E = ½k|R'_0 - R_2|² couples a virtual atom to a third atom; the host feels -k(R'_0 - R_2).
    k = 2.5
    positions = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.5, 0.2], [0.3, 1.2, 2.0]])
    host, eta, d, s = np.array([0]), np.array([0.3]), np.array([0.2]), np.array([2.0])

    def energy(r):
        full = with_virtual_atoms(r, s, host, eta, d)
        return 0.5 * k * jnp.sum((full[3] - full[2]) ** 2)

    forces = -jax.jit(jax.grad(energy))(positions)
    virtual = np.array([0.0, 0.0, 0.3 * 2.0 + 0.2])
    np.testing.assert_allclose(forces[0], -k * (virtual - np.asarray(positions[2])), atol=1e-12)
    np.testing.assert_allclose(forces[1], 0.0)
    np.testing.assert_allclose(forces[2], k * (virtual - np.asarray(positions[2])), atol=1e-12)


def _brute_force_min_image(a, b, cell, n=2):
    shifts = np.array([[i, j, l] for i in range(-n, n + 1) for j in range(-n, n + 1) for l in range(-n, n + 1)]) @ cell
    return np.min(np.linalg.norm(b + shifts - a, axis=-1))


def test_virtual_atom_overlapping_a_periodic_image_in_a_triclinic_cell_is_an_error():
    # The Ni at the top of the cell has its virtual atom pushed up across the c face, right next
    # to the periodic image of an O that sits near the bottom: far apart in Cartesian terms.
    ni = np.array([0.4, 0.3, 0.0]) + 0.93 * CELL[2]
    shift = 0.3 * 3.0 + 0.2  # S = 3 μB, η = 0.3, d = 0.2 → 1.1 Å up
    o_close = ni + [0.0, 0.0, shift] - CELL[2] + [0.12, 0.05, 0.0]
    o_far = ni + [0.0, 0.0, shift] - CELL[2] + [0.55, 0.3, 0.0]
    coords = np.array([[ni, [2.0, 2.0, 2.0], o_far], [ni, [2.0, 2.0, 2.0], o_close]])
    system = System(atom_types=np.array([1, 0, 2]), coords=coords, cells=np.repeat(CELL[None], 2, axis=0),
                    energies=np.zeros(2), frame_data={"magmom": np.array([[3.0, 0, 0], [3.0, 0, 0]])}, name="tri")
    virt = ni + [0.0, 0.0, shift]
    assert np.linalg.norm(virt - o_close) > 3.0  # no overlap without periodic images
    expected = _brute_force_min_image(virt, o_close, CELL)
    assert expected == pytest.approx(0.13, abs=1e-12)
    assert _brute_force_min_image(virt, o_far, CELL) > 0.6

    settings = SpinSettings.create(["Ni"], eta=0.3, d=0.2)
    with pytest.raises(CathodemlError, match=rf"frame 1: the virtual atom of atom 0 \(Ni\) is {expected:.3f} Å from real atom 2 \(O\)"):
        augment_dataset(Dataset(TYPE_MAP, [system]), settings)
    out, _ = augment_dataset(Dataset(TYPE_MAP, [system.select([0])]), settings)  # frame 0 alone is fine
    out, _ = augment_dataset(Dataset(TYPE_MAP, [system]), settings, min_distance=0.1)  # or a lower threshold

    # close_contacts gives, per partner atom, the brute-force minimum-image distance.
    full = out.systems[0].coords[1]
    contacts = close_contacts(full, CELL, True, 3, np.array([0]), cutoff=3.0)
    assert [c[:2] for c in contacts] == [(3, 2)] + ([(3, 1)] if _brute_force_min_image(full[3], full[1], CELL) < 3 else [])
    assert contacts[0][2] == pytest.approx(expected, abs=1e-10)
    # Without periodic boundaries the same frame has no close contact below 0.5 Å.
    assert not close_contacts(full, CELL, False, 3, np.array([0]), cutoff=0.5)


def test_contact_distances_match_ase_neighbour_list_in_a_thin_skewed_cell():
    # Cell only 1.3 Å thin along c, cutoff 2.6 Å: several images of the same atom are in range.
    from ase.neighborlist import primitive_neighbor_list

    rng = np.random.default_rng(7)
    cell = np.array([[3.1, 0.0, 0.0], [1.4, 2.9, 0.0], [1.9, -0.8, 1.3]])
    n_real, host = 5, np.array([0, 2, 3])
    real = rng.uniform(0, 1, (n_real, 3)) @ cell
    coords = np.concatenate([real, real[host] + rng.normal(0, 0.6, (3, 3))])
    cutoff = 2.6
    got = {(a, b): r for a, b, r in close_contacts(coords, cell, True, n_real, host, cutoff)}
    i, j, shift, d = primitive_neighbor_list("ijSd", [True] * 3, cell, coords, cutoff, self_interaction=False)
    ref = {}
    for a, b, sft, r in zip(i, j, shift, d):
        if a < n_real or a == b or (b == host[a - n_real] and not sft.any()):
            continue
        ref[(int(a), int(b))] = min(r, ref.get((int(a), int(b)), np.inf))
    assert got.keys() == ref.keys() and len(ref) > 10
    for key, r in ref.items():
        assert got[key] == pytest.approx(r, abs=1e-10)


def test_strip_recovers_the_ingested_dataset_exactly(tmp_path):
    ds = Dataset(TYPE_MAP, [ingest_like_system(), ingest_like_system(n_frames=2, seed=3)])
    ds.systems[1].name = "LiNi2O3_b"
    src = tmp_path / "data.h5"
    write_dataset(src, ds)
    original = read_dataset(src)
    aug, _ = augment_dataset(original, SpinSettings.create(["Ni"], eta={"Ni": 0.4}, d={"Ni": 0.3}))
    write_dataset(tmp_path / "spin.h5", aug)
    back = strip_dataset(read_dataset(tmp_path / "spin.h5"))
    write_dataset(tmp_path / "back.h5", back)
    again = read_dataset(tmp_path / "back.h5")
    assert again.type_map == original.type_map and again.attrs == original.attrs
    for a, b in zip(original.systems, again.systems):
        assert a.name == b.name and a.attrs == b.attrs and a.nopbc == b.nopbc
        for field in ("atom_types", "coords", "cells", "energies", "forces", "virials"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(a, field).dtype == getattr(b, field).dtype
        assert sorted(a.frame_data) == sorted(b.frame_data)
        for key in a.frame_data:
            np.testing.assert_array_equal(a.frame_data[key], b.frame_data[key])
            assert a.frame_data[key].dtype == b.frame_data[key].dtype


def test_spin_layout_read_back_rebuilds_the_stored_virtual_positions(tmp_path):
    ds = Dataset(TYPE_MAP, [ingest_like_system()])
    settings = SpinSettings.create(["Ni", "Li"], eta={"Ni": 0.4, "Li": 0.2}, d={"Ni": 0.3, "Li": 0.6})
    aug, _ = augment_dataset(ds, settings)
    write_dataset(tmp_path / "spin.h5", aug)
    back = read_dataset(tmp_path / "spin.h5")
    assert back.type_map == ["Li", "Ni", "O", "Li_spin", "Ni_spin"]
    layout = read_spin_layout(back.systems[0], back.type_map)
    assert layout.n_real == 6 and layout.settings == settings
    np.testing.assert_array_equal(layout.host_index, [0, 1, 2])
    np.testing.assert_array_equal(layout.sites.eta, [0.2, 0.4, 0.4])
    np.testing.assert_array_equal(layout.sites.d, [0.6, 0.3, 0.3])
    np.testing.assert_array_equal(layout.sites.types, [3, 4, 4])
    assert layout.sites.mode == "collinear"
    s = back.systems[0]
    rebuilt = layout.sites.place(s.coords[:, :6], layout.moments)
    np.testing.assert_array_equal(rebuilt, s.coords)
    assert SpinSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    # A merged file may list the virtual types anywhere (here first); the layout follows the names.
    shuffled = ["Ni_spin", "O", "Li_spin", "Li", "Ni"]
    moved = dataclasses.replace(s, atom_types=remap_types(s.atom_types, back.type_map, shuffled))
    layout2 = read_spin_layout(moved, shuffled)
    np.testing.assert_array_equal(layout2.sites.types, [2, 0, 0])
    np.testing.assert_array_equal(layout2.host_index, layout.host_index)
    np.testing.assert_array_equal(layout2.sites.eta, layout.sites.eta)
    with pytest.raises(CathodemlError, match="do not match their record"):
        read_spin_layout(dataclasses.replace(s, atom_types=s.atom_types[[0, 1, 2, 3, 4, 5, 4, 4, 3]]), back.type_map)


def test_frames_without_moments_are_rejected_naming_frame_source_and_lorbit():
    system = ingest_like_system()
    system.frame_data["magmom"][2] = np.nan
    system.frame_data["has_moments"][2] = False
    with pytest.raises(CathodemlError, match=r"frame 2 \(runs/LiNi2O3/OUTCAR#2, ionic step 2\).*atom 1 \(Ni\).*LORBIT = 11.*1 frame"):
        augment_dataset(Dataset(TYPE_MAP, [system]), SpinSettings.create(["Ni"], eta=0.3, d=0.5))


def test_bad_settings_are_user_errors():
    ds = Dataset(TYPE_MAP, [ingest_like_system()])
    with pytest.raises(CathodemlError, match="Co is not in the data"):
        augment_dataset(ds, SpinSettings.create(["Co"], eta=0.3, d=0.2))
    with pytest.raises(CathodemlError, match="must be > 0"):
        SpinSettings.create(["Ni"], eta=0.0, d=0.2)
    with pytest.raises(CathodemlError, match="vector mode"):
        SpinSettings.create(["Ni"], eta=0.3, d=0.2, mode="vector")
    aug, _ = augment_dataset(ds, SpinSettings.create(["Ni"], eta=0.3, d=0.5))
    with pytest.raises(CathodemlError, match="already has virtual spin atoms"):
        augment_dataset(aug, SpinSettings.create(["Ni"], eta=0.3, d=0.5))
    with pytest.raises(CathodemlError, match="no virtual spin atoms to strip"):
        strip_dataset(ds)


def test_spin_states_closer_than_the_tolerance_in_eta_s_give_a_warning():
    # Ni moments cluster at ≈-0.95, ≈1.15 and ≈3.05 μB: 2.1 and 1.9 μB apart, i.e. 0.105 and 0.095 Å
    # in η·S for η = 0.05 Å/μB, but 0.63 and 0.57 Å for η = 0.3 Å/μB.
    assert [round(s["center"], 2) for s in spin_states(np.array([-0.8, -0.9, 1.1, 1.2, 3.0, 3.1]))] == [-0.85, 1.15, 3.05]
    ds = Dataset(TYPE_MAP, [ingest_like_system()])
    _, report = augment_dataset(ds, SpinSettings.create(["Ni"], eta=0.3, d=0.5), state_tolerance=0.1)
    assert not report.warnings
    _, report = augment_dataset(ds, SpinSettings.create(["Ni"], eta=0.05, d=0.5), state_tolerance=0.15)
    assert len(report.warnings) == 2 and all("raise --eta for Ni" in w for w in report.warnings)
