"""`cathodeml augment-spin` end to end: a real GGA+U relaxation of FeO whose Fe moments flip sign,
ingested from its OUTCAR, gets virtual atoms on the side its moment points to; bad input is a
one-line error that leaves the output untouched; --strip gives the ingested data back."""

import gzip
import json
import re

import dpdata
import numpy as np
import pytest
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.io.dataset import read_dataset

FEO = "outcars/custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz"


def run(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result


def outcar_fe_moments(path):
    """Fe `tot` moments (μB) of each ionic step, read straight from the OUTCAR text: the last
    `magnetization (x)` table before each `free  energy   TOTEN` line."""
    text = gzip.open(path, "rt").read()
    steps = []
    for block in text.split("free  energy   TOTEN")[:-1]:
        table = block[block.rindex("magnetization (x)"):]
        rows = re.findall(r"^\s+(\d+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s+([-\d.]+)\s*$", table, re.M)
        steps.append([float(r[4]) for r in rows[:2]])  # atoms 1, 2 are Fe
    return np.array(steps)


@pytest.fixture(scope="module")
def feo(tmp_path_factory):
    from pathlib import Path

    data = Path(__file__).parent / "data"
    out = tmp_path_factory.mktemp("feo") / "feo.h5"
    result = run("ingest", data / FEO, "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    return data / FEO, out


def test_ingested_feo_virtual_atoms_follow_the_fe_moment_sign_change(feo, tmp_path):
    outcar, data = feo
    moments = outcar_fe_moments(outcar)
    assert moments.shape == (28, 2) and moments[0, 1] == -3.830 and moments[3, 1] == 0.640  # the flip
    spin = tmp_path / "spin.h5"
    result = run("augment-spin", data, "-o", spin, "--magnetic", "Fe", "--eta", "Fe=0.3", "--d", "0.2", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["type_map"] == ["Fe", "O", "Fe_spin"] and summary["n_virtual_atoms"] == 2
    assert summary["elements"]["Fe"]["moment_range_muB"] == pytest.approx([moments.min(), moments.max()])

    system = dpdata.LabeledSystem(f"{spin}#{read_dataset(spin).systems[0].name}", fmt="deepmd/hdf5")
    assert system["atom_names"] == ["Fe", "O", "Fe_spin"] and system.get_nframes() == 28
    types = system["atom_types"]
    fe, virtual = np.flatnonzero(types == 0), np.flatnonzero(types == 2)
    shift = system["coords"][:, virtual] - system["coords"][:, fe]
    np.testing.assert_allclose(shift[..., :2], 0.0, atol=1e-12)
    np.testing.assert_allclose(shift[..., 2], 0.3 * moments + 0.2, atol=1e-12)
    assert shift[0, 1, 2] < 0 < shift[3, 1, 2]  # spin-down Fe: virtual atom below; after the flip: above
    # Energies and virials are the ingested ones; the virtual atoms have zero force labels.
    ref = read_dataset(data).systems[0]
    np.testing.assert_allclose(system["energies"], ref.energies, rtol=0, atol=1e-12)
    np.testing.assert_allclose(system["virials"], ref.virials, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(system["forces"][:, virtual], 0.0)


def test_strip_on_the_command_line_gives_back_the_ingested_file(feo, tmp_path):
    _, data = feo
    spin, back = tmp_path / "spin.h5", tmp_path / "back.h5"
    assert run("augment-spin", data, "-o", spin, "--magnetic", "Fe", "--quiet").exit_code == 0
    result = run("augment-spin", spin, "-o", back, "--strip", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["virtual_atoms_removed"] == 2
    a, b = read_dataset(data), read_dataset(back)
    assert a.type_map == b.type_map and a.attrs == b.attrs
    for x, y in zip(a.systems, b.systems):
        for field in ("atom_types", "coords", "cells", "energies", "forces", "virials"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
        assert sorted(x.frame_data) == sorted(y.frame_data) and x.attrs == y.attrs
        for key in x.frame_data:
            np.testing.assert_array_equal(x.frame_data[key], y.frame_data[key])


@pytest.mark.parametrize(
    "args, message",
    [
        (["--magnetic", "Ni"], "magnetic element Ni is not in the data (elements present: Fe,O); fix --magnetic"),
        (["--magnetic", "Fe", "--eta", "-0.2"], "η for Fe is -0.2 Å/μB; it must be > 0"),
        (["--magnetic", "Fe", "--eta", "Fe=0.3,Co=0.2"], "η given for Co, which is not among the magnetic elements"),
        (["--magnetic", "Fe", "--eta", "big"], "--eta 'big': give a number or Element=number pairs"),
        (["--magnetic", "Fe", "--d", "0.2", "--mode", "vector"], "vector mode places R' = R + η·S without an offset"),
        # η = 1 Å/μB lifts Fe 0 (2.83 μB) 3.03 Å along z, onto the periodic image of Fe 1 (3.08 Å
        # below it along the cell's a + c = (0, 0, -6.16) Å).
        (["--magnetic", "Fe", "--eta", "1.0"],
         "OUTCAR.gz, ionic step 1): the virtual atom of atom 0 (Fe) is 0.044 Å from real atom 1 (Fe) under periodic"),
        # 0.2·0.464 - 0.1 ≈ 0: the virtual atom of Fe 1 sits on its host in ionic step 6.
        (["--magnetic", "Fe", "--eta", "0.2", "--d", "-0.1"], "ionic step 6): the virtual atom of atom 1 (Fe) is only 0.004 Å from its host"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_leaves_the_output_untouched(feo, tmp_path, args, message):
    _, data = feo
    out = tmp_path / "spin.h5"
    out.write_bytes(b"previous contents")
    result = run("augment-spin", data, "-o", out, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert out.read_bytes() == b"previous contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spin.h5"]


def test_frames_of_a_run_without_lorbit_are_refused_by_name(tmp_path):
    from pathlib import Path

    data = tmp_path / "cuni.h5"
    outcar = Path(__file__).parent / "data/outcars/pmg_CuNi_ispin2_LORBIT0_notable_v6.3.2.OUTCAR.gz"
    assert run("ingest", outcar, "-o", data, "--quiet").exit_code == 0
    result = run("augment-spin", data, "-o", tmp_path / "spin.h5", "--magnetic", "Ni")
    assert result.exit_code == 1
    assert "pmg_CuNi_ispin2_LORBIT0_notable_v6.3.2.OUTCAR.gz" in result.stderr and "LORBIT = 11" in result.stderr
    assert not (tmp_path / "spin.h5").exists()


def test_fe_spin_states_that_eta_barely_separates_are_warned_about(feo, tmp_path):
    # The relaxation visits Fe states near 0.57, 1.40, 1.85 and 3.04 μB; η = 0.05 Å/μB puts
    # neighbouring ones 0.02–0.06 Å apart in virtual position, below the 0.1 Å tolerance.
    _, data = feo
    result = run("augment-spin", data, "-o", tmp_path / "spin.h5", "--magnetic", "Fe", "--eta", "0.05", "--d", "0.4", "--json")
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    assert len(warnings) == 3 and "spin states near 1.40 and 1.85 μB are only 0.023 Å apart" in warnings[1]
    assert result.stderr.count("warning: Fe: spin states near") == 3
    quiet = run("augment-spin", data, "-o", tmp_path / "spin.h5", "--magnetic", "Fe", "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and "warning" not in quiet.stderr
