"""LAMMPS files without LAMMPS: the restricted cell against ASE's Prism, the data file read back by
ASE, and the dump reader against ASE's dump reader and the positions the dump was written from."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cathodeml.errors import InputFormatError
from cathodeml.io import lammps
from cathodeml.io.trajectory import open_trajectory

TRICLINIC = np.array([[5.1, 0.3, -0.4], [1.2, 4.7, 0.5], [-0.6, 0.9, 6.3]])


def test_restricted_cell_is_lower_triangular_and_a_pure_rotation_of_the_cell():
    restricted, rotation = lammps.lammps_cell(TRICLINIC)
    assert np.allclose(np.triu(restricted, 1), 0.0) and np.all(np.diag(restricted) > 0)
    assert np.allclose(TRICLINIC @ rotation, restricted, atol=1e-12)
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(rotation), 1.0)


def test_restricted_cell_matches_ase_prism():
    from ase.calculators.lammps import Prism

    xhi, yhi, zhi, xy, xz, yz = Prism(TRICLINIC).get_lammps_prism()
    restricted, _ = lammps.lammps_cell(TRICLINIC)
    assert np.allclose([restricted[0, 0], restricted[1, 1], restricted[2, 2], restricted[1, 0], restricted[2, 0],
                        restricted[2, 1]], [xhi, yhi, zhi, xy, xz, yz], atol=1e-10)


def test_left_handed_cell_is_refused():
    with pytest.raises(Exception, match="left-handed"):
        lammps.lammps_cell(TRICLINIC[[1, 0, 2]])


def test_data_file_reads_back_in_ase(tmp_path):
    import ase.io

    rng = np.random.default_rng(0)
    frac = rng.random((6, 3))
    positions = frac @ TRICLINIC
    types = np.array([0, 1, 1, 2, 0, 2])
    path = tmp_path / "conf.data"
    rotation = lammps.write_data(path, positions, TRICLINIC, types, ["Li", "Ni", "O"], [6.94, 58.69, 16.0])
    atoms = ase.io.read(path, format="lammps-data", atom_style="atomic")
    restricted, _ = lammps.lammps_cell(TRICLINIC)
    assert np.allclose(atoms.cell[:], restricted, atol=1e-12)
    assert np.allclose(atoms.get_scaled_positions(wrap=False), frac, atol=1e-12)
    assert np.allclose(atoms.positions, positions @ rotation, atol=1e-12)
    assert list(atoms.get_masses()) == pytest.approx([6.94, 58.69, 58.69, 16.0, 6.94, 16.0])


def test_spin_data_file_has_unit_directions_and_magnitudes(tmp_path):
    path = tmp_path / "conf.data"
    lammps.write_data(path, np.zeros((3, 3)) + [[0, 0, 0], [1, 1, 1], [2, 2, 2]], np.eye(3) * 5, np.array([0, 1, 1]),
                      ["O", "Fe"], [16.0, 55.845], spins=np.array([0.0, 4.2, -3.9]))
    rows = [ln.split() for ln in path.read_text().split("Atoms  # spin")[1].strip().splitlines()]
    assert [float(r[7]) for r in rows] == [1.0, 1.0, -1.0]
    assert [float(r[8]) for r in rows] == [0.0, 4.2, 3.9]


def test_spin_directions_turn_with_the_cell(tmp_path):
    """The collinear axis is the structure's z: in LAMMPS's rotated frame it is z·R, so that the
    virtual atoms sit where cathodeml puts them."""
    path = tmp_path / "conf.data"
    rotation = lammps.write_data(path, np.zeros((2, 3)), TRICLINIC, np.array([0, 0]), ["Fe"], [55.845],
                                 spins=np.array([2.0, -3.0]))
    rows = [ln.split() for ln in path.read_text().split("Atoms  # spin")[1].strip().splitlines()]
    directions = np.array([[float(v) for v in r[5:8]] for r in rows])
    assert np.allclose(directions[0], np.array([0.0, 0.0, 1.0]) @ rotation)
    assert np.allclose(directions[1], -directions[0]) and not np.allclose(directions[0], [0, 0, 1])


def _write_dump(path, frames, cell_rows, symbols, *, unwrapped=True, images=None, time_ps=None, shuffle=None):
    """A LAMMPS text dump with a triclinic box, written from known positions (what LAMMPS writes)."""
    xy, xz, yz = (float(v) for v in (cell_rows[1, 0], cell_rows[2, 0], cell_rows[2, 1]))
    lx, ly, lz = (float(v) for v in np.diag(cell_rows))
    frames = np.asarray(frames, dtype=float).tolist()
    lines = []
    for k, x in enumerate(frames):
        lines += ["ITEM: UNITS", "metal"] if time_ps is not None and k == 0 else []
        lines += ["ITEM: TIME", repr(time_ps[k])] if time_ps is not None else []
        lines += ["ITEM: TIMESTEP", str(100 * k), "ITEM: NUMBER OF ATOMS", str(len(x)),
                  "ITEM: BOX BOUNDS xy xz yz pp pp pp",
                  f"{min(0, xy, xz, xy + xz)!r} {lx + max(0, xy, xz, xy + xz)!r} {xy!r}",
                  f"{min(0, yz)!r} {ly + max(0, yz)!r} {xz!r}", f"0.0 {lz!r} {yz!r}"]
        cols = "id element xu yu zu" if unwrapped else "id element x y z ix iy iz"
        lines.append(f"ITEM: ATOMS {cols}")
        order = shuffle if shuffle is not None else range(len(x))
        for i in order:
            if unwrapped:
                lines.append(f"{i + 1} {symbols[i]} {x[i][0]!r} {x[i][1]!r} {x[i][2]!r}")
            else:
                im = images[k][i]
                lines.append(f"{i + 1} {symbols[i]} {x[i][0]!r} {x[i][1]!r} {x[i][2]!r} {im[0]} {im[1]} {im[2]}")
    path.write_text("\n".join(lines) + "\n")


def _walk(n_frames=5, n_atoms=7, seed=1):
    rng = np.random.default_rng(seed)
    restricted, _ = lammps.lammps_cell(TRICLINIC)
    start = rng.random((n_atoms, 3)) @ restricted
    steps = rng.normal(scale=1.5, size=(n_frames - 1, n_atoms, 3))
    return restricted, np.concatenate([start[None], start + np.cumsum(steps, axis=0)])


def test_dump_reader_matches_written_positions_time_and_ase(tmp_path):
    import ase.io

    restricted, walk = _walk()
    symbols = ["Li", "Li", "O", "Ni", "O", "Li", "Ni"]
    path = tmp_path / "traj.lammpstrj"
    _write_dump(path, walk, restricted, symbols, time_ps=[0.0, 0.1, 0.2, 0.3, 0.4], shuffle=[3, 0, 6, 1, 5, 2, 4])
    with open_trajectory(path) as traj:
        h = traj.header
        assert h.format == "lammps-dump" and list(h.symbols) == symbols and h.positions_unwrapped
        assert np.allclose(h.time_fs, [0, 100, 200, 300, 400])
        chunks = list(traj.chunks(chunk_bytes=2 * 7 * 3 * 8))  # two frames per chunk
    assert [c.start for c in chunks] == [0, 2, 4]
    assert np.allclose(np.concatenate([c.positions for c in chunks]), walk, atol=1e-12)
    assert np.allclose(chunks[0].cells[0], restricted, atol=1e-12)
    ase_frames = ase.io.read(path, index=":", format="lammps-dump-text")
    assert np.allclose(ase_frames[0].cell[:], restricted, atol=1e-10)


def test_wrapped_dump_with_image_counts_unwraps_to_the_walk(tmp_path):
    from cathodeml import geometry

    restricted, walk = _walk(seed=2)
    frac = geometry.fractional(walk, restricted)
    images = np.floor(frac).astype(int)
    wrapped = geometry.cartesian(frac - images, restricted)
    path = tmp_path / "wrapped.dump"
    _write_dump(path, wrapped, restricted, ["Li"] * 7, unwrapped=False, images=images)
    (tmp_path / "wrapped.dump.json").write_text(json.dumps({"temperature_K": 600.0, "timestep_fs": 2.0}))
    with open_trajectory(path) as traj:
        assert traj.header.has_images and not traj.header.positions_unwrapped
        assert traj.header.temperature_K == 600.0
        assert np.allclose(traj.header.time_fs, [0, 200, 400, 600, 800])  # TIMESTEP × the side file's dt
        (chunk,) = traj.chunks()
    from cathodeml.analysis.msd import unwrap_with_images

    assert np.allclose(unwrap_with_images(chunk.positions, chunk.images, chunk.cells), walk, atol=1e-9)


def test_dump_cut_inside_its_last_frame_keeps_the_complete_frames(tmp_path):
    """What `analyze` sees while LAMMPS is still writing: the partial last frame is left out."""
    restricted, walk = _walk()
    path = tmp_path / "traj.lammpstrj"
    _write_dump(path, walk, restricted, ["Li"] * 7)
    text = path.read_text()
    path.write_text(text[: len(text) - 40])
    with pytest.warns(UserWarning, match="incomplete"):
        with open_trajectory(path) as traj:
            assert traj.header.n_frames == len(walk) - 1
            (chunk,) = traj.chunks()
    assert np.allclose(chunk.positions, walk[:-1], atol=1e-12)


def test_dump_missing_atom_lines_in_the_middle_is_a_clear_error(tmp_path):
    restricted, walk = _walk()
    path = tmp_path / "traj.lammpstrj"
    _write_dump(path, walk, restricted, ["Li"] * 7)
    lines = path.read_text().splitlines(keepends=True)
    del lines[12]  # an atom line of the first frame
    path.write_text("".join(lines))
    with pytest.raises(InputFormatError, match="fewer than 7 atom lines|unknown dump item|expected an ITEM"):
        open_trajectory(path)


def test_info_and_analyze_read_a_lammps_dump_with_its_side_file(tmp_path):
    """A dump as an export-lammps deck leaves it: info describes it, analyze takes the temperature from
    <dump>.json and gives the D of the walk it was written from."""
    from typer.testing import CliRunner

    from cathodeml.cli import app

    rng = np.random.default_rng(3)
    restricted = np.diag([12.0, 12.0, 12.0])
    n_frames, n_li = 200, 20
    steps = rng.normal(scale=0.3, size=(n_frames - 1, n_li, 3))
    walk = rng.random((n_li, 3)) * 12 + np.concatenate([np.zeros((1, n_li, 3)), np.cumsum(steps, axis=0)])
    path = tmp_path / "traj.lammpstrj"
    _write_dump(path, walk, restricted, ["Li"] * n_li, time_ps=[0.1 * k for k in range(n_frames)])
    lammps.write_dump_metadata(path, temperature_K=700.0, type_map=["Li"], dt_fs=1.0, model="m.h5")
    runner = CliRunner()
    info = runner.invoke(app, ["info", str(path), "--json"])
    assert info.exit_code == 0, info.output
    summary = json.loads(info.output)
    assert summary["format"] == "lammps-dump" and summary["n_frames"] == n_frames and summary["temperature_K"] == 700.0
    out = runner.invoke(app, ["analyze", str(path), "--species", "Li", "--skip", "0", "--fit-window", "0.1T:0.5T",
                              "--blocks", "1", "-o", str(tmp_path / "an"), "--json"])
    assert out.exit_code == 0, out.output
    run = json.loads(out.output)["runs"][0]
    assert run["temperature_K"]["value"] == 700.0
    # a Gaussian walk: ⟨Δr²⟩ = 3·σ²·n per step of 100 fs, so D = σ²/(2·100 fs) = 0.45e-4 cm²/s
    assert run["D_self"]["value"] == pytest.approx(0.3**2 / (2 * 100e-15) * 1e-16, rel=0.25)
