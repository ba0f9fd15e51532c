"""The trajectory reader: cathodeml H5MD (written here by hand per the layout contract), XDATCAR.gz
and extxyz through ASE, streamed in chunks that reproduce the stored frames exactly."""

import ase.io
import numpy as np
import pytest
from ase import Atoms

from analysis_synth import gaussian_walk, write_h5md
from cathodeml.analysis.msd import unwrap_with_images
from cathodeml.analysis.pipeline import AnalysisSettings, analyze_trajectory, parse_fit_window
from cathodeml.errors import CathodemlError
from cathodeml.io.trajectory import open_trajectory

CELL = np.array([[12.0, 0.0, 0.0], [2.0, 11.0, 0.0], [1.0, -1.5, 13.0]])


def _walk(seed=0, n_frames=60, n=12):
    rng = np.random.default_rng(seed)
    return gaussian_walk(rng, n_frames, n, 0.6, start=rng.random((n, 3)) @ CELL)


@pytest.mark.parametrize("unwrapped", [True, False])
def test_h5md_chunks_give_back_the_continuous_positions(tmp_path, unwrapped):
    x = _walk()
    symbols = ["Li"] * 8 + ["Cl"] * 4
    path = tmp_path / "traj.h5"
    write_h5md(path, x, CELL, symbols, ["Li", "Cl"], dt_fs=20.0, temperature_K=650.0, unwrapped=unwrapped)
    with open_trajectory(path) as traj:
        h = traj.header
        assert h.format == "h5md" and h.n_frames == 60 and h.symbols == tuple(symbols)
        assert h.temperature_K == 650.0 and h.timestep_fs == 20.0 and h.has_images
        assert h.masses[0] == pytest.approx(6.94, abs=0.01)  # from the element when no mass dataset
        chunks = list(traj.chunks(chunk_bytes=7 * 12 * 24))  # 7 frames per chunk: boundaries inside the run
        assert [c.start for c in chunks] == list(range(0, 60, 7))
        got = np.concatenate([unwrap_with_images(c.positions, c.images, c.cells) for c in chunks])
    np.testing.assert_allclose(got, x, atol=1e-9)


def test_xdatcar_gz_is_read_through_ase(data_dir):
    with open_trajectory(data_dir / "trajectories" / "Li6PS5Cl_XDATCAR.gz") as traj:
        h = traj.header
        assert h.format == "vasp-xdatcar" and h.n_frames == 140 and h.n_atoms == 416
        counts = {s: h.symbols.count(s) for s in set(h.symbols)}
        assert counts == {"Li": 192, "P": 32, "S": 160, "Cl": 32}
        assert h.time_fs is None and h.temperature_K is None and not h.positions_unwrapped
        li = np.flatnonzero(np.array(h.symbols) == "Li")
        chunks = list(traj.chunks(atoms=li, chunk_bytes=50 * 416 * 24))
    assert [len(c) for c in chunks] == [50, 50, 40]
    assert chunks[0].positions.shape == (50, 192, 3)
    assert np.abs(np.linalg.det(chunks[0].cells[0])) == pytest.approx(20.3123**3, rel=1e-3)


def test_extxyz_minimum_image_unwrapping_matches_the_h5md_result(tmp_path):
    x = _walk(seed=3, n_frames=80)
    symbols = ["Li"] * 8 + ["Cl"] * 4
    frac = x @ np.linalg.inv(CELL)
    frames = [Atoms(symbols, positions=(f - np.floor(f)) @ CELL, cell=CELL, pbc=True) for f in frac]
    ase.io.write(tmp_path / "traj.extxyz", frames, format="extxyz")
    write_h5md(tmp_path / "traj.h5", x, CELL, symbols, ["Li", "Cl"], dt_fs=20.0, temperature_K=650.0)
    settings = AnalysisSettings(fit_window=parse_fit_window("100fs:800fs"),
                                blocks=2, chunk_bytes=9 * 12 * 24)
    with open_trajectory(tmp_path / "traj.extxyz") as traj:
        a = analyze_trajectory(traj, settings, temperature_k=650.0, timestep_fs=20.0)
    with open_trajectory(tmp_path / "traj.h5") as traj:
        b = analyze_trajectory(traj, settings)
    np.testing.assert_allclose(a.msd_self, b.msd_self, rtol=1e-6, atol=1e-6)  # extxyz stores 8 decimals
    np.testing.assert_allclose(a.msd_total, b.msd_total, rtol=1e-6, atol=1e-6)  # extxyz stores 8 decimals
    assert a.D_self.value == pytest.approx(b.D_self.value, rel=1e-6)


def test_a_trajectory_jumping_more_than_half_a_cell_is_refused(tmp_path):
    symbols = ["Li", "Cl"]
    pos = [np.array([[1.0, 1.0, 1.0], [5.0, 5.0, 5.0]]) for _ in range(12)]
    pos[6] = pos[6] + np.array([[5.5, 0.0, 0.0], [0.0, 0.0, 0.0]])  # 0.46 of a 12 Å cell in one frame
    ase.io.write(tmp_path / "jump.extxyz", [Atoms(symbols, positions=p, cell=np.diag([12.0] * 3), pbc=True) for p in pos])
    with open_trajectory(tmp_path / "jump.extxyz") as traj:
        with pytest.raises(CathodemlError, match="half a cell"):
            analyze_trajectory(traj, AnalysisSettings(), temperature_k=300.0, timestep_fs=10.0)


def test_missing_and_junk_files_are_user_errors(tmp_path):
    with pytest.raises(CathodemlError, match="no such"):
        open_trajectory(tmp_path / "nothing.h5")
    junk = tmp_path / "junk.xyz"
    junk.write_text("this is not\na trajectory\n")
    with pytest.raises(CathodemlError):
        open_trajectory(junk)


def test_info_describes_an_h5md_trajectory(tmp_path):
    import json

    from typer.testing import CliRunner

    from cathodeml.cli import app

    x = _walk(n_frames=30)
    write_h5md(tmp_path / "t.h5", x, CELL, ["Li"] * 8 + ["Cl"] * 4, ["Li", "Cl"], dt_fs=20.0, temperature_K=650.0)
    result = CliRunner().invoke(app, ["info", "--json", str(tmp_path / "t.h5")])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["kind"] == "trajectory" and s["n_frames"] == 30 and s["composition"] == {"Li": 8, "Cl": 4}
    assert s["duration_ps"] == pytest.approx(29 * 0.02) and s["volume_A3"] == pytest.approx(abs(np.linalg.det(CELL)))


def test_files_from_the_md_writer_read_back_continuous(tmp_path):
    from cathodeml.io.h5md import TrajectoryWriter

    x = _walk(seed=9, n_frames=40)
    path = tmp_path / "md.h5"
    obs = {"temperature": 600.0, "potential_energy": -1.0, "kinetic_energy": 0.5, "conserved_energy": -0.5}
    with TrajectoryWriter.create(path, species=[0] * 8 + [1] * 4, masses=[6.94] * 8 + [35.45] * 4, type_map=["Li", "Cl"],
                                 cell=CELL, parameters={"temperature_K": 600.0, "timestep_fs": 2.0, "stride": 10,
                                                        "ensemble": "nvt"}) as w:
        for k, frame in enumerate(x):
            w.append(step=10 * k, time_fs=20.0 * k, positions=frame, cell=CELL, observables=obs)
    with open_trajectory(path) as traj:
        h = traj.header
        assert h.temperature_K == 600.0 and h.timestep_fs == 20.0 and h.symbols == tuple(["Li"] * 8 + ["Cl"] * 4)
        chunk = next(traj.chunks())
    np.testing.assert_allclose(unwrap_with_images(chunk.positions, chunk.images, chunk.cells), x, atol=1e-12)


def test_a_trajectory_that_md_is_still_writing_can_be_read(tmp_path):
    """md keeps its H5MD file open (and locked by HDF5) for the whole run; info and analyze, run
    from another process, must read the frames flushed so far, not call it 'not a trajectory'."""
    import subprocess
    import sys

    from cathodeml.io.h5md import TrajectoryWriter

    path, cell = tmp_path / "running.h5", np.eye(3) * 10.0
    positions = np.random.default_rng(0).uniform(0, 10, (4, 3))
    obs = {"temperature": 300.0, "potential_energy": -1.0, "kinetic_energy": 0.1, "conserved_energy": -0.9}
    reader = ("import sys; from cathodeml.io.dataset import file_kind; from cathodeml.io.trajectory import open_trajectory\n"
              "t = open_trajectory(sys.argv[1]); print(file_kind(sys.argv[1]), t.header.n_frames)")
    with TrajectoryWriter.create(path, species=np.zeros(4, int), masses=np.full(4, 6.94), type_map=["Li"], cell=cell,
                                 parameters={"dt_fs": 1.0}) as writer:
        for step in range(3):
            writer.append(step=step, time_fs=float(step), positions=positions + 0.1 * step, cell=cell, observables=obs)
        read = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True)
        assert read.stdout.split() == ["trajectory", "3"], read.stderr[-1000:]
        info = subprocess.run([sys.executable, "-m", "cathodeml.cli", "info", str(path), "--json"],
                              capture_output=True, text=True)
        assert info.returncode == 0, info.stderr[-1000:]
