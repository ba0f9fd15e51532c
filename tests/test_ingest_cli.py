"""`cathodeml ingest` writes what dpdata reads back unchanged, keeps moments and provenance with
every frame, appends without duplicating sources, and never damages the output on bad input."""

import gzip
import json
import shutil
import warnings

import dpdata
import numpy as np
import pytest
from ase.io import read as ase_read
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.io.dataset import read_dataset

runner = CliRunner()

LINIO = "pmg_LiNi2O4_relax5_ispin2_v5.2.11.OUTCAR.gz"
FEO = "custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz"
CUNI = "pmg_CuNi_ispin2_LORBIT0_notable_v6.3.2.OUTCAR.gz"
H2O = "dpdata_H2O_md3_ispin1_v5.4.4.OUTCAR.gz"
CH4 = "dpdata_CH4_unconverged_ispin1_v5.4.4.OUTCAR.gz"
SI2 = "parsevasp_Si2_relax_unfinished_ispin1_v5.4.4.OUTCAR.gz"


def src(data_dir, name):
    return str(data_dir / "outcars" / name)


def ingest(*args):
    return runner.invoke(app, ["ingest", *map(str, args)])


def ase_frames(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ase_read(str(path), format="vasp-out", index=":")


def by_source(ds, name):
    """The frames of one source file, from whichever system holds them."""
    for s in ds.systems:
        mask = np.array([str(p).endswith(name) for p in s.frame_data["source_path"]])
        if mask.any():
            return s.select(mask)
    raise KeyError(name)


def test_written_file_reads_back_through_dpdata_with_the_same_frames(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    r = ingest(src(data_dir, LINIO), src(data_dir, FEO), src(data_dir, H2O), "-o", out)
    assert r.exit_code == 0, r.output
    ms = dpdata.MultiSystems().from_deepmd_hdf5(str(out))
    assert ms.get_nframes() == 5 + 28 + 3
    for name in (LINIO, FEO, H2O):
        images = ase_frames(src(data_dir, name))
        formula = "".join(f"{el}{images[0].get_chemical_symbols().count(el)}" for el in dict.fromkeys(images[0].get_chemical_symbols()))
        got = dpdata.LabeledSystem(f"{out}#{formula}", fmt="deepmd/hdf5")
        np.testing.assert_allclose(got["coords"], [a.get_positions() for a in images], atol=1e-8)
        np.testing.assert_allclose(got["cells"], [a.cell[:] for a in images], atol=1e-8)
        np.testing.assert_allclose(got["energies"], [a.get_potential_energy(force_consistent=True) for a in images], atol=1e-8)
        np.testing.assert_allclose(got["forces"], [a.get_forces() for a in images], atol=1e-8)


def test_moments_and_provenance_travel_with_every_frame(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, LINIO), "-o", out).exit_code == 0
    s = read_dataset(out).systems[0]
    images = ase_frames(src(data_dir, LINIO))
    np.testing.assert_allclose(s.frame_data["magmom"], [a.get_magnetic_moments() for a in images], atol=1e-12)
    np.testing.assert_allclose(s.frame_data["spin"][..., 2], s.frame_data["magmom"])
    assert s.frame_data["magmom_orbital"].shape == (5, 7, 4)
    assert list(s.frame_data["ionic_step"]) == [1, 2, 3, 4, 5]
    assert set(s.frame_data["vasp_version"]) == {"5.2.11"}
    sha = __import__("hashlib").sha256(gzip.decompress(open(src(data_dir, LINIO), "rb").read())).hexdigest()
    assert set(s.frame_data["source_sha256"]) == {sha}
    assert s.frame_data["has_moments"].all() and s.frame_data["scf_converged"].all()
    assert (s.frame_data["ispin"] == 2).all()


def test_type_map_fixes_the_species_order(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    r = ingest(src(data_dir, LINIO), src(data_dir, FEO), "-o", out, "--type-map", "Li,Ni,Co,Mn,Fe,O")
    assert r.exit_code == 0, r.output
    ds = read_dataset(out)
    assert ds.type_map == ["Li", "Ni", "Co", "Mn", "Fe", "O"]
    sys = dpdata.LabeledSystem(f"{out}#Li1Ni2O4", fmt="deepmd/hdf5")
    assert list(sys["atom_names"]) == ["Li", "Ni", "Co", "Mn", "Fe", "O"]
    assert [sys["atom_names"][t] for t in sys["atom_types"]] == ["Li", "Ni", "Ni", "O", "O", "O", "O"]


def test_species_outside_the_type_map_is_an_error_that_leaves_the_output_alone(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, H2O), "-o", out).exit_code == 0
    before = out.read_bytes()
    r = ingest(src(data_dir, LINIO), "-o", out, "--type-map", "Li,O")
    assert r.exit_code == 1
    assert "Ni not in --type-map Li,O" in r.stderr and r.stderr.count("\n") == 1
    assert out.read_bytes() == before


def test_append_skips_a_source_already_ingested_even_when_recompressed(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, H2O), "-o", out).exit_code == 0
    plain = tmp_path / "OUTCAR"
    plain.write_bytes(gzip.decompress(open(src(data_dir, H2O), "rb").read()))
    r = ingest(plain, src(data_dir, SI2), "-o", out, "--append", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    assert summary["files"]["duplicates_skipped"] == 1 and summary["frames"]["kept"] == 12
    assert "same sha256" in r.stderr
    ds = read_dataset(out)
    assert ds.n_frames == 3 + 12
    r = ingest(src(data_dir, H2O), "-o", out, "--append")  # nothing new: the file stays as it was
    assert r.exit_code == 0 and read_dataset(out).n_frames == 15


def test_append_keeps_the_files_type_indices_and_adds_new_species_after_them(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, LINIO), "-o", out, "--type-map", "Li,Ni,O").exit_code == 0
    r = ingest(src(data_dir, FEO), "-o", out, "--append", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["type_map"] == ["Li", "Ni", "O", "Fe"]
    ds = read_dataset(out)
    assert ds.type_map == ["Li", "Ni", "O", "Fe"]
    linio = by_source(ds, LINIO)
    assert [ds.type_map[t] for t in linio.atom_types] == ["Li", "Ni", "Ni", "O", "O", "O", "O"]
    before = out.read_bytes()
    r = ingest(src(data_dir, H2O), "-o", out, "--append", "--type-map", "Ni,Li,O,Fe,H")  # reorders: refused
    assert r.exit_code == 1 and "must start with it" in r.stderr and out.read_bytes() == before


def test_appending_raw_frames_to_an_augmented_dataset_is_refused(data_dir, tmp_path):
    out, spin = tmp_path / "data.h5", tmp_path / "spin.h5"
    assert ingest(src(data_dir, LINIO), "-o", out).exit_code == 0
    r = runner.invoke(app, ["augment-spin", str(out), "-o", str(spin), "--magnetic", "Ni"])
    assert r.exit_code == 0, r.output
    before = spin.read_bytes()
    r = ingest(src(data_dir, FEO), "-o", spin, "--append")
    assert r.exit_code == 1 and "virtual spin atoms" in r.stderr and spin.read_bytes() == before


def test_unconverged_steps_are_skipped_with_a_count_or_kept_on_request(data_dir, tmp_path):
    r = ingest(src(data_dir, CH4), "-o", tmp_path / "a.h5", "--json")
    summary = json.loads(r.stdout)
    assert summary["frames"] == {"read": 3, "kept": 1, "skipped_unconverged": 2, "unconverged_kept": 0, "incomplete_dropped": 0, "malformed_dropped": 0}
    r = ingest(src(data_dir, CH4), "-o", tmp_path / "b.h5", "--keep-unconverged", "--quiet")
    assert r.exit_code == 0 and r.output == ""
    s = read_dataset(tmp_path / "b.h5").systems[0]
    assert list(s.frame_data["scf_converged"]) == [False, False, True]


def test_sigma0_labels_are_energy_extrapolated_to_zero_smearing(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, SI2), "-o", out, "--energy", "sigma0").exit_code == 0
    s = read_dataset(out).systems[0]
    np.testing.assert_allclose(s.energies, [a.get_potential_energy() for a in ase_frames(src(data_dir, SI2))], atol=1e-8)
    r = ingest(src(data_dir, H2O), "-o", out, "--append")  # free-energy labels may not join sigma0 ones
    assert r.exit_code == 1 and "--energy sigma0" in r.stderr


def test_parallel_parsing_gives_the_same_file_content_as_serial(data_dir, tmp_path):
    inputs = [src(data_dir, n) for n in (LINIO, FEO, H2O, CUNI)]
    assert ingest(*inputs, "-o", tmp_path / "serial.h5").exit_code == 0
    r = ingest(*inputs, "-o", tmp_path / "parallel.h5", "--jobs", "2")
    assert r.exit_code == 0, r.output
    # with another thread alive forking is unsafe: workers come from a forkserver, same result
    import threading

    stop = threading.Event()
    busy = threading.Thread(target=stop.wait, daemon=True)
    busy.start()
    try:
        r = ingest(*inputs, "-o", tmp_path / "threaded.h5", "--jobs", "2")
    finally:
        stop.set()
    assert r.exit_code == 0, r.output
    a = read_dataset(tmp_path / "serial.h5")
    for other in ("parallel.h5", "threaded.h5"):
        b = read_dataset(tmp_path / other)
        assert a.type_map == b.type_map and [s.name for s in a.systems] == [s.name for s in b.systems]
        for x, y in zip(a.systems, b.systems):
            np.testing.assert_array_equal(x.forces, y.forces)
            np.testing.assert_array_equal(x.frame_data["magmom"], y.frame_data["magmom"])


def test_spin_polarised_run_without_lorbit_is_kept_with_moments_marked_missing(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    r = ingest(src(data_dir, CUNI), src(data_dir, H2O), "-o", out)  # mixes ISPIN=2 and ISPIN=1
    assert r.exit_code == 0
    assert "LORBIT" in r.stderr
    ds = read_dataset(out)
    cuni, h2o = by_source(ds, CUNI), by_source(ds, H2O)
    assert cuni.n_frames == 7 and not cuni.frame_data["has_moments"].any()
    assert np.isnan(cuni.frame_data["magmom"]).all()
    assert (cuni.frame_data["ispin"] == 2).all() and (h2o.frame_data["ispin"] == 1).all()


def test_truncated_run_keeps_its_complete_steps_and_says_so(data_dir, tmp_path):
    text = gzip.decompress(open(src(data_dir, FEO), "rb").read())
    cut = text[: text.find(b"TOTAL-FORCE", text.find(b"free  energy   TOTEN", 400000)) + 300]
    p = tmp_path / "OUTCAR"
    p.write_bytes(cut)
    r = ingest(p, "-o", tmp_path / "data.h5", "--json")
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout)
    n_complete = cut.count(b"free  energy   TOTEN")
    assert summary["frames"]["kept"] == n_complete and summary["frames"]["incomplete_dropped"] == 1
    assert "unfinished" in r.stderr


BAD = {
    "empty": b"",
    "junk": bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
    "nul_hole": None,  # built from a real file below
    "not_outcar": b"just some notes\nabout a calculation\n",
    "no_complete_step": None,
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_error_line_and_the_output_stays_as_it_was(data_dir, tmp_path, case):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, H2O), "-o", out).exit_code == 0
    before = out.read_bytes()
    text = gzip.decompress(open(src(data_dir, SI2), "rb").read())
    blob = BAD[case]
    if case == "nul_hole":
        blob = text[:200000] + b"\x00" * 8192 + text[208192:]
    elif case == "no_complete_step":
        blob = text[: text.find(b"free  energy   TOTEN") - 500]
    bad = tmp_path / "OUTCAR.bad"
    bad.write_bytes(blob)
    r = ingest(src(data_dir, SI2), bad, "-o", out, "--append", "--jobs", "2")  # error from a worker process
    assert r.exit_code == 1
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "OUTCAR.bad" in r.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["OUTCAR.bad", "data.h5"]  # no temp file left
    # --skip-bad ingests the good file and lists the bad one
    r = ingest(src(data_dir, SI2), bad, "-o", out, "--append", "--skip-bad", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["files"]["failed"] == 1
    assert read_dataset(out).n_frames == 3 + 12


@pytest.mark.parametrize("args,message", [
    (["missing/OUTCAR"], "no such file"),
    (["nowhere/*/OUTCAR"], "matches no file"),
    (["emptydir"], "holds no file named like OUTCAR"),
])
def test_paths_that_name_nothing_are_errors(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "emptydir").mkdir()
    r = ingest(*args, "-o", "data.h5")
    assert r.exit_code == 1 and message in r.stderr
    assert not (tmp_path / "data.h5").exists()


def test_directories_and_globs_are_searched_for_outcars(data_dir, tmp_path, monkeypatch):
    tree = tmp_path / "runs"
    for i, name in enumerate((LINIO, H2O)):
        (tree / f"step{i}" / "relax").mkdir(parents=True)
        shutil.copy(src(data_dir, name), tree / f"step{i}" / "relax" / "OUTCAR.gz")
    r = ingest(tree, "-o", tmp_path / "a.h5", "--json")
    assert json.loads(r.stdout)["files"]["ingested"] == 2
    r = ingest(str(tree / "step*" / "relax" / "OUTCAR*"), "-o", tmp_path / "b.h5", "--json")
    assert json.loads(r.stdout)["frames"]["kept"] == 5 + 3
    monkeypatch.chdir(tree)  # relative inputs: provenance still records the absolute path
    assert ingest("step1", "-o", "c.h5", "--quiet").exit_code == 0
    paths = set(read_dataset(tree / "c.h5").systems[0].frame_data["source_path"])
    assert paths == {str(tree / "step1" / "relax" / "OUTCAR.gz")}


def test_ctrl_c_while_parsing_or_writing_leaves_the_previous_file(data_dir, tmp_path, monkeypatch):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, H2O), "-o", out).exit_code == 0
    before = out.read_bytes()
    import cathodeml.commands.ingest as cmd
    import cathodeml.io.dataset as dataset_io

    real_read = cmd._read_one
    calls = []

    def interrupted_read(path, energy, progress=None):
        calls.append(path)

        def ctrl_c_in_second_file(n_bytes):
            if len(calls) == 2:
                raise KeyboardInterrupt  # as if Ctrl-C arrived while the second file is streamed

        return real_read(path, energy, ctrl_c_in_second_file)

    monkeypatch.setattr(cmd, "_read_one", interrupted_read)
    r = ingest(src(data_dir, LINIO), src(data_dir, SI2), "-o", out, "--append")
    assert r.exit_code == 130 and out.read_bytes() == before
    monkeypatch.setattr(cmd, "_read_one", real_read)

    real_write = dataset_io._write_system

    def interrupted_write(*a, **k):
        real_write(*a, **k)  # one system half-way into the temporary file, then Ctrl-C
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset_io, "_write_system", interrupted_write)
    r = ingest(src(data_dir, LINIO), src(data_dir, SI2), "-o", out, "--append")
    assert r.exit_code == 130 and out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5"]


def test_info_shows_the_spin_states_each_element_visits(data_dir, tmp_path):
    out = tmp_path / "data.h5"
    assert ingest(src(data_dir, FEO), src(data_dir, LINIO), "-o", out).exit_code == 0
    r = runner.invoke(app, ["info", str(out), "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)
    assert info["n_frames"] == 33 and set(info["type_map"]) == {"Fe", "O", "Li", "Ni"}
    # Independent count from ASE: every Fe moment of every step, histogrammed and split at gaps
    fe = np.concatenate([np.abs(a.get_magnetic_moments()[[s == "Fe" for s in a.get_chemical_symbols()]])
                         for a in ase_frames(src(data_dir, FEO))])
    h = info["moment_histograms"]["Fe"]
    assert h["n"] == fe.size == sum(h["counts"])
    assert sum(st["count"] for st in h["states"]) == fe.size
    v = np.sort(fe)
    assert len(h["states"]) == 1 + np.count_nonzero(np.diff(v) > 0.3)
    ni = info["moment_histograms"]["Ni"]["states"]
    assert len(ni) == 1 and abs(ni[0]["center"] - 0.82) < 0.02  # Ni³⁺-like ~0.8 μB in LiNi2O4
    r = runner.invoke(app, ["info", str(out)])
    assert r.exit_code == 0 and "spin states" in r.stdout and "Li1Ni2O4" in r.stdout
