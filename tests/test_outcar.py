"""The OUTCAR reader agrees with independent parsers (ASE's vasp-out, dpdata) on real VASP files,
keeps moments aligned with ionic steps, and refuses damaged input with a clear message."""

import bz2
import gzip
import lzma
import re
import warnings

import dpdata
import numpy as np
import pytest
from ase.io import read as ase_read

from cathodeml.errors import InputFormatError
from cathodeml.io.outcar import parse_outcar, parse_outcar_chunks, read_outcar

OUTCARS = {
    "LiNi2O4": "pmg_LiNi2O4_relax5_ispin2_v5.2.11.OUTCAR.gz",
    "FeO": "custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz",
    "Fe1": "pmg_Fe1_relax4_ispin2_v6.2.0.OUTCAR.gz",
    "CuNi": "pmg_CuNi_ispin2_LORBIT0_notable_v6.3.2.OUTCAR.gz",
    "NiO_SOC": "pmg_NiO_SOC_noncollinear_v5.4.1.OUTCAR.gz",
    "H2O": "dpdata_H2O_md3_ispin1_v5.4.4.OUTCAR.gz",
    "CH4": "dpdata_CH4_unconverged_ispin1_v5.4.4.OUTCAR.gz",
    "Si2": "parsevasp_Si2_relax_unfinished_ispin1_v5.4.4.OUTCAR.gz",
}


def outcar(data_dir, key):
    return data_dir / "outcars" / OUTCARS[key]


def plain_copy(data_dir, key, tmp_path):
    """dpdata cannot open .gz: give it a decompressed copy."""
    out = tmp_path / f"{key}.OUTCAR"
    out.write_bytes(gzip.decompress(outcar(data_dir, key).read_bytes()))
    return out


def ase_frames(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ase_read(str(path), format="vasp-out", index=":")


@pytest.mark.parametrize("key", sorted(OUTCARS))
def test_every_ionic_step_matches_ase_vasp_out(data_dir, key):
    run = read_outcar(outcar(data_dir, key))
    images = ase_frames(outcar(data_dir, key))
    assert run.n_frames == len(images)
    assert run.species == images[0].get_chemical_symbols()
    np.testing.assert_allclose(run.energies, [a.get_potential_energy(force_consistent=True) for a in images], atol=1e-8)
    np.testing.assert_allclose(run.coords, [a.get_positions() for a in images], atol=1e-8)
    np.testing.assert_allclose(run.forces, [a.get_forces() for a in images], atol=1e-8)
    np.testing.assert_allclose(run.cells, [a.cell[:] for a in images], atol=1e-8)
    # Virial W = -σV: ASE reports the stress σ in eV/Å³ (its own unit conversion from kBar).
    ase_virial = np.array([-a.get_stress(voigt=False) * a.get_volume() for a in images])
    np.testing.assert_allclose(run.virials, ase_virial, rtol=1e-6, atol=1e-6)


def test_sigma0_energy_option_reads_energy_extrapolated_to_zero_smearing(data_dir):
    run = read_outcar(outcar(data_dir, "Si2"), energy="sigma0")
    images = ase_frames(outcar(data_dir, "Si2"))
    np.testing.assert_allclose(run.energies, [a.get_potential_energy() for a in images], atol=1e-8)
    free = read_outcar(outcar(data_dir, "Si2")).energies
    assert np.all(np.abs(free - run.energies) > 1e-5)  # smearing makes them differ in this run


@pytest.mark.parametrize("key", ["LiNi2O4", "FeO", "Fe1"])
def test_collinear_moments_per_step_match_ase(data_dir, key):
    run = read_outcar(outcar(data_dir, key))
    images = ase_frames(outcar(data_dir, key))
    ase_m = np.array([a.get_magnetic_moments() for a in images])
    np.testing.assert_allclose(run.magmom, ase_m, atol=1e-12)
    np.testing.assert_allclose(run.spin[..., 2], ase_m, atol=1e-12)
    assert np.all(run.spin[..., :2] == 0) and run.has_moments.all()
    # the tot column is the sum of the s, p, d(, f) columns to print precision
    np.testing.assert_allclose(np.nansum(run.magmom_orbital, axis=-1), run.magmom, atol=2.5e-3)


def test_final_lini2o4_moments_are_those_pymatgen_asserts(data_dir):
    # pymatgen's test_outputs.py asserts these final moments for this very file.
    run = read_outcar(outcar(data_dir, "LiNi2O4"))
    np.testing.assert_allclose(run.magmom[-1], [0.005, 0.813, 0.813, -0.112, -0.162, -0.112, -0.162])
    assert run.ispin == 2 and run.lorbit == 11 and run.vasp_version == "5.2.11"


def test_fe_spin_state_changes_along_the_relaxation(data_dir):
    # custodian's FeO run wanders between spin states: |m(Fe)| spans more than 2 μB.
    run = read_outcar(outcar(data_dir, "FeO"))
    fe = np.abs(run.magmom[:, [i for i, s in enumerate(run.species) if s == "Fe"]])
    assert fe.max() - fe.min() > 2.0


def test_noncollinear_moments_are_vectors_along_x_y_z(data_dir):
    run = read_outcar(outcar(data_dir, "NiO_SOC"))
    images = ase_frames(outcar(data_dir, "NiO_SOC"))
    ase_m = np.array([a.get_magnetic_moments() for a in images])  # [nf, na, 3]
    assert run.noncollinear and ase_m.shape == run.spin.shape
    np.testing.assert_allclose(run.spin, ase_m, atol=1e-12)
    np.testing.assert_allclose(run.magmom, ase_m[..., 2], atol=1e-12)  # z = quantisation axis
    # antiferromagnetic NiO: the two Ni moments are opposite, the O moments vanish
    np.testing.assert_allclose(run.spin[-1, 0], -run.spin[-1, 1], atol=1e-12)
    assert abs(run.magmom[-1, 0]) > 1.5 and np.all(np.abs(run.magmom[-1, 2:]) < 1e-3)


def test_spin_polarised_run_without_lorbit_has_missing_moments_and_a_lorbit_warning(data_dir):
    run = read_outcar(outcar(data_dir, "CuNi"))
    images = ase_frames(outcar(data_dir, "CuNi"))
    assert run.ispin == 2 and run.lorbit == 0
    assert not run.has_moments.any() and np.isnan(run.magmom).all() and np.all(run.spin == 0)
    assert any("LORBIT" in note for note in run.notes)
    # the total moment is still known, per step (ASE reads it from the same line)
    np.testing.assert_allclose(run.total_magnetization, [a.calc.get_magnetic_moment() for a in images], atol=1e-7)


def test_scf_steps_that_hit_nelm_are_flagged_as_dpdata_drops_them(data_dir, tmp_path):
    run = read_outcar(outcar(data_dir, "CH4"))
    assert run.nelm == 15 and run.n_frames == 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dpdata.LabeledSystem(str(plain_copy(data_dir, "CH4", tmp_path)), fmt="vasp/outcar")
    assert run.scf_converged.sum() == ref.get_nframes() == 1
    np.testing.assert_allclose(run.energies[run.scf_converged], ref["energies"], atol=1e-8)


@pytest.mark.parametrize("key", ["LiNi2O4", "FeO", "H2O"])
def test_frames_match_dpdata_up_to_its_lower_triangular_rotation(data_dir, key, tmp_path):
    run = read_outcar(outcar(data_dir, key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dpdata.LabeledSystem(str(plain_copy(data_dir, key, tmp_path)), fmt="vasp/outcar")
    keep = run.scf_converged
    assert ref.get_nframes() == keep.sum()
    np.testing.assert_allclose(run.energies[keep], ref["energies"], atol=1e-8)
    for i, j in enumerate(np.flatnonzero(keep)):
        rot = np.linalg.solve(run.cells[j], ref["cells"][i])  # cell_dp = cell · R
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)
        np.testing.assert_allclose(run.coords[j] @ rot, ref["coords"][i], atol=1e-5)
        np.testing.assert_allclose(run.forces[j] @ rot, ref["forces"][i], atol=1e-5)
        np.testing.assert_allclose(rot.T @ run.virials[j] @ rot, ref["virials"][i], rtol=1e-5, atol=1e-5)


def test_initial_magmom_comes_from_the_incar_echo_or_vasps_default_warning(data_dir):
    # VASP 6.2 echoes "MAGMOM = 1*5.0" (SOURCES.md); VASP 6.3.2 without MAGMOM warns "a default of 1
    # will be used for all atoms"; VASP 5 echoes nothing.
    np.testing.assert_array_equal(read_outcar(outcar(data_dir, "Fe1")).initial_magmom, [5.0])
    np.testing.assert_array_equal(read_outcar(outcar(data_dir, "CuNi")).initial_magmom, [1.0] * 4)
    assert np.isnan(read_outcar(outcar(data_dir, "LiNi2O4")).initial_magmom).all()


def test_nupdown_unset_is_nan_and_ispin1_has_zero_total_moment(data_dir):
    run = read_outcar(outcar(data_dir, "H2O"))
    assert run.ispin == 1 and np.isnan(run.nupdown)
    assert np.all(run.total_magnetization == 0) and not run.has_moments.any()


def test_compressions_give_identical_frames_and_one_sha256(data_dir, tmp_path):
    text = gzip.decompress(outcar(data_dir, "H2O").read_bytes())
    paths = {"plain": text, "bz2": bz2.compress(text), "xz": lzma.compress(text), "gz": gzip.compress(text)}
    runs = []
    for name, blob in paths.items():
        p = tmp_path / f"OUTCAR.{name}"
        p.write_bytes(blob)
        runs.append(read_outcar(p))
    for r in runs[1:]:
        assert r.sha256 == runs[0].sha256
        np.testing.assert_array_equal(r.forces, runs[0].forces)
        np.testing.assert_array_equal(r.energies, runs[0].energies)


@pytest.mark.parametrize("key", ["FeO", "NiO_SOC", "Si2"])
def test_streaming_in_any_chunks_gives_the_same_frames_as_the_whole_text(data_dir, key):
    text = gzip.decompress(outcar(data_dir, key).read_bytes())
    whole = parse_outcar(text)
    rng = np.random.default_rng(7)
    cuts = np.sort(rng.integers(1, len(text), 40))
    chunked = parse_outcar_chunks([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)]) if b > a])
    small = read_outcar(outcar(data_dir, key), chunk_bytes=4096)
    for run in (chunked, small):
        assert run.sha256 == whole.sha256 and run.n_frames == whole.n_frames
        np.testing.assert_array_equal(run.forces, whole.forces)
        np.testing.assert_array_equal(run.energies, whole.energies)
        np.testing.assert_array_equal(run.spin, whole.spin)
        np.testing.assert_array_equal(run.scf_converged, whole.scf_converged)
        assert run.notes == whole.notes


def test_memory_stays_bounded_inside_a_long_step_without_changing_frames(data_dir, monkeypatch):
    # LiNi2O4 steps are ~0.6-3 MB (augmentation dumps); carry only 400 kB of an unfinished step
    import cathodeml.io.outcar as outcar_module

    whole = read_outcar(outcar(data_dir, "LiNi2O4"))
    monkeypatch.setattr(outcar_module, "_MAX_CARRY", 400_000)
    bounded = read_outcar(outcar(data_dir, "LiNi2O4"), chunk_bytes=65536)
    assert bounded.sha256 == whole.sha256
    for name in ("coords", "forces", "cells", "energies", "virials", "magmom", "scf_converged"):
        np.testing.assert_array_equal(getattr(bounded, name), getattr(whole, name))


def test_a_file_of_only_machine_learned_steps_says_so(data_dir, tmp_path):
    text = gzip.decompress(outcar(data_dir, "H2O").read_bytes())
    p = tmp_path / "OUTCAR"
    p.write_bytes(text.replace(b"free  energy   TOTEN", b"free  energy ML TOTEN").replace(b"Iteration", b"ML step"))
    with pytest.raises(InputFormatError, match="only machine-learned force-field steps"):
        read_outcar(p)


def test_a_run_cut_inside_a_step_keeps_the_complete_steps(data_dir):
    text = gzip.decompress(outcar(data_dir, "Si2").read_bytes())
    full = parse_outcar(text)
    tables = [m.start() for m in re.finditer(rb"TOTAL-FORCE \(eV/Angst\)", text)]
    cut = parse_outcar(text[: tables[6] + 200])  # inside the 7th force table
    assert cut.n_frames == 6 and cut.n_incomplete == 1 and not cut.finished
    np.testing.assert_array_equal(cut.forces, full.forces[:6])
    # cut inside the energy line itself: that step is incomplete too
    toten = [m.start() for m in re.finditer(rb"free  energy   TOTEN", text)]
    cut = parse_outcar(text[: toten[3] + 30])
    assert cut.n_frames == 3 and cut.n_incomplete >= 1
    assert any("incomplete" in note for note in cut.notes)


def test_a_step_with_an_overflowed_force_table_is_dropped_and_named(data_dir):
    # Fortran prints asterisks when a number overflows its field: that step cannot be trusted.
    text = gzip.decompress(outcar(data_dir, "FeO").read_bytes())
    full = parse_outcar(text)
    tables = [m.end() for m in re.finditer(rb"TOTAL-FORCE \(eV/Angst\)", text)]
    row = text.find(b"\n", text.find(b"\n", tables[9]) + 1) + 1  # first atom row of step 10
    broken = text[:row] + re.sub(rb"-?\d+\.\d+\s*$", b"**********", text[row:text.find(b"\n", row)]) + text[text.find(b"\n", row):]
    run = parse_outcar(broken)
    assert run.n_frames == full.n_frames - 1 and run.n_malformed == 1 and run.n_incomplete == 0
    assert 10 not in run.ionic_step and any("steps 10" in n for n in run.notes)
    np.testing.assert_array_equal(run.forces, np.delete(full.forces, 9, axis=0))


def test_fused_numbers_in_tables_are_split_correctly(data_dir):
    # Fortran fixed-width output glues negative numbers together ("-1.5-2.5") when they are wide.
    text = gzip.decompress(outcar(data_dir, "LiNi2O4").read_bytes())
    fused = re.sub(rb"(?<=\d) +(?=-\d)", b"", text)
    a, b = parse_outcar(text), parse_outcar(fused)
    assert fused != text
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.forces, b.forces)
    np.testing.assert_array_equal(a.cells, b.cells)


def test_damaged_or_foreign_input_is_refused_with_the_reason(data_dir, tmp_path):
    text = gzip.decompress(outcar(data_dir, "H2O").read_bytes())
    cases = {
        "empty": (b"", "empty"),
        "junk": (bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8)), "binary"),
        "nul": (text[:5000] + b"\x00" * 4096 + text[9096:], "NUL-byte hole"),
        "poscar": (b"Li2 O1\n1.0\n3 0 0\n0 3 0\n0 0 3\nLi O\n2 1\nDirect\n0 0 0\n0.5 0.5 0\n0 0 0.5\n", "not a VASP OUTCAR"),
        "header_only": (text[: text.find(b"Iteration") - 200], "no ionic step"),
        "first_step_cut": (text[: text.find(b"free  energy   TOTEN") - 100], "no complete ionic step"),
        "bad_gzip": (gzip.compress(text)[:3000], "corrupt or truncated compressed"),
    }
    for name, (blob, reason) in cases.items():
        p = tmp_path / f"{name}.OUTCAR"
        p.write_bytes(blob)
        with pytest.raises(InputFormatError, match=reason):
            read_outcar(p)
    with pytest.raises(InputFormatError, match="is a directory"):
        read_outcar(tmp_path)


def test_unreadable_file_says_permission_denied(tmp_path, monkeypatch):
    p = tmp_path / "OUTCAR"
    p.write_text("x")

    real_open = open

    def deny(path, *args, **kwargs):
        if str(path) == str(p):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(InputFormatError, match="permission denied"):
        read_outcar(p)
