"""`cathodeml analyze` end to end: random walkers at three temperatures with an Arrhenius D(T)
give back D, Eₐ and a results.json where every number has an uncertainty and a unit; bad input
is one clear error line."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis_synth import gaussian_walk, write_h5md
from cathodeml.cli import app
from cathodeml.units import BOLTZMANN_EV_PER_K

CELL = np.array([[16.0, 0.0, 0.0], [0.0, 16.0, 0.0], [3.0, 0.0, 15.0]])
EA, D0 = 0.20, 2e-3  # eV, Å²/fs
DT = 10.0  # fs between stored frames


def _d_true(t):
    return D0 * math.exp(-EA / (BOLTZMANN_EV_PER_K * t))  # Å²/fs


def _run(*args):
    return CliRunner().invoke(app, ["analyze", *[str(a) for a in args]])


@pytest.fixture(scope="module")
def walker_runs(tmp_path_factory):
    """Three H5MD runs (500, 600, 750 K): 300 Li walkers with D(T) plus 40 Cl framework atoms,
    everything riding on a common drift that the analysis must remove."""
    root = tmp_path_factory.mktemp("walkers")
    rng = np.random.default_rng(42)
    paths = []
    for t in (500.0, 600.0, 750.0):
        n_frames = 1200
        li = gaussian_walk(rng, n_frames, 300, math.sqrt(2 * _d_true(t) * DT), start=rng.random((300, 3)) @ CELL)
        cl = np.broadcast_to(rng.random((40, 3)) @ CELL, (n_frames, 40, 3)) + rng.normal(0, 0.05, (n_frames, 40, 3))
        drift = np.arange(n_frames)[:, None, None] * np.array([0.004, -0.003, 0.002])  # 4.8 Å over the run
        x = np.concatenate([li, cl], axis=1) + drift
        path = root / f"traj_{int(t)}K.h5"
        write_h5md(path, x, CELL, ["Li"] * 300 + ["Cl"] * 40, ["Li", "Cl"], dt_fs=DT, temperature_K=t)
        paths.append(path)
    return paths


def test_analyze_recovers_d_and_activation_energy_of_arrhenius_walkers(walker_runs, tmp_path):
    result = _run(*walker_runs, "--rdf", "Li-Cl", "-o", tmp_path, "--quiet")
    assert result.exit_code == 0, result.output
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["kind"] == "analysis" and len(res["runs"]) == 3
    for run in res["runs"]:
        d = run["D_self"]
        assert d["unit"] == "cm^2/s"
        expected = _d_true(run["temperature_K"]["value"]) * 0.1
        assert abs(d["value"] - expected) < 4 * d["err"] + 0.03 * expected
        assert run["haven_ratio"]["err"] > 0 and run["sigma"]["unit"] == "mS/cm"
        assert run["fit_window"]["start"]["value"] >= 1.0
        assert run["rdf"]["Li-Cl"]["r_peak"]["unit"] == "Å"
    ea = res["arrhenius"]["Ea"]
    assert ea["unit"] == "eV" and abs(ea["value"] - EA) < 4 * ea["err"] + 0.01
    ext = res["arrhenius"]["extrapolated"]
    assert ext["temperature_K"] == 300.0 and ext["ci_low"] < ext["value"] < ext["ci_high"]
    for name in ("msd_traj_500K.csv", "arrhenius.csv", "rdf.csv", "msd.png", "arrhenius.png", "rdf_Li-Cl.png"):
        assert (tmp_path / name).stat().st_size > 0
    msd = np.genfromtxt(tmp_path / "msd_traj_600K.csv", delimiter=",", names=True, skip_header=1)
    assert np.allclose(msd["msd_distinct_A2"], msd["msd_total_A2"] - msd["msd_self_A2"])


def test_without_drift_correction_the_framework_drift_inflates_d(walker_runs, tmp_path):
    ok = json.loads(_run(walker_runs[0], "--json", "--no-plots", "-o", tmp_path).stdout)
    raw = json.loads(_run(walker_runs[0], "--json", "--no-plots", "--no-drift-correction", "-o", tmp_path).stdout)
    # a drift v adds v²t² to the MSD: much steeper than the 6Dt of these walkers
    assert raw["runs"][0]["D_self"]["value"] > 3 * ok["runs"][0]["D_self"]["value"]


def test_earlier_results_and_csv_tables_join_the_arrhenius_fit(walker_runs, tmp_path):
    first = tmp_path / "a"
    assert _run(walker_runs[0], walker_runs[1], "-o", first, "--quiet", "--no-plots").exit_code == 0
    table = tmp_path / "extra.csv"
    d750 = _d_true(750.0) * 0.1
    table.write_text(f"T,D,D_err\n750,{d750},{0.02 * d750}\n")
    out = tmp_path / "b"
    result = _run(first / "results.json", "--arrhenius", table, "-o", out, "--json", "--at", "350")
    assert result.exit_code == 0, result.output
    fit = json.loads(result.stdout)["arrhenius"]
    assert fit["n_points"] == 3 and fit["extrapolated"]["temperature_K"] == 350.0
    assert abs(fit["Ea"]["value"] - EA) < 4 * fit["Ea"]["err"] + 0.01


def test_two_runs_at_one_temperature_are_replicas(walker_runs, tmp_path):
    result = _run(walker_runs[0], walker_runs[0], "-o", tmp_path, "--json", "--no-plots")
    res = json.loads(result.stdout)
    assert res["arrhenius"] is None
    (t,) = res["temperatures"]
    assert t["n_replicas"] == 2 and t["D_self"]["value"] == pytest.approx(res["runs"][0]["D_self"]["value"])


def test_xdatcar_needs_temperature_and_timestep(data_dir, tmp_path):
    xdatcar = data_dir / "trajectories" / "Li6PS5Cl_XDATCAR.gz"
    result = _run(xdatcar, "-o", tmp_path, "--temperature", "600")
    assert result.exit_code == 1 and "--timestep" in result.stderr
    result = _run(xdatcar, "-o", tmp_path, "--timestep", "100")
    assert result.exit_code == 1 and "--temperature" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--species", "Na"], "species 'Na' is absent"),
    (["--temperature", "650"], "do not match"),
    (["--fit-window", "1ps:30ps"], "lasts only"),
    (["--timestep", "3"], "--timestep says"),
    (["--blocks", "200"], "fewer --blocks"),
    (["--rdf", "Li-Ti"], "no Ti atoms"),
    (["--arrhenius-fit", "lnX"], "lnD"),
])
def test_bad_input_is_one_clear_error_line(walker_runs, tmp_path, args, message):
    result = _run(walker_runs[1], "-o", tmp_path, "--quiet", *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "results.json").exists()


def test_mismatched_temperature_list_is_an_error(walker_runs, tmp_path):
    result = _run(*walker_runs, "--temperature", "500,600", "-o", tmp_path)
    assert result.exit_code == 1 and "2 values for 3 trajectories" in result.stderr


def test_li6ps5cl_aimd_diffusion_agrees_with_kinisi(data_dir, tmp_path):
    # Reference: kinisi 2.1.0 DiffusionAnalyzer.from_xdatcar on this same file (time_step 2 fs, step_skip 50),
    # diffusion(start_dt=4 ps): D* = 1.133e-5 ± 0.11e-5 cm²/s (benchmarks/validate_analyze.py, BENCHMARKS.md).
    d_kinisi, err_kinisi = 1.133e-5, 0.11e-5
    result = _run(data_dir / "trajectories" / "Li6PS5Cl_XDATCAR.gz", "--temperature", "600", "--timestep", "100",
                  "--fit-window", "4ps:T", "--blocks", "4", "-o", tmp_path, "--json", "--no-plots")
    assert result.exit_code == 0, result.output
    run = json.loads(result.stdout)["runs"][0]
    assert run["n_ions"] == 192 and run["duration"]["value"] == pytest.approx(13.9)
    d = run["D_self"]
    assert abs(d["value"] - d_kinisi) < 2 * math.hypot(d["err"], err_kinisi)
    # isotropic cubic argyrodite: the three axes agree within their errors
    axes = run["D_self_axes"]
    assert max(abs(axes[a]["value"] - d["value"]) / axes[a]["err"] for a in "xyz") < 3


def test_skip_leaves_the_equilibration_out(tmp_path):
    """The first 9 ps the ions sit still (an 'equilibration' with D = 0), then they diffuse with
    D(750 K): without --skip D is biased low, with --skip 9ps it is the walkers' D and the
    frames before 9 ps are gone."""
    rng = np.random.default_rng(7)
    n_still, n_moving = 900, 900
    d = _d_true(750.0)
    moving = gaussian_walk(rng, n_moving, 300, math.sqrt(2 * d * DT), start=rng.random((300, 3)) @ CELL)
    x = np.concatenate([np.broadcast_to(moving[:1], (n_still, 300, 3)), moving], axis=0)
    path = tmp_path / "traj_750K.h5"
    write_h5md(path, x, CELL, ["Li"] * 300, ["Li"], dt_fs=DT, temperature_K=750.0)
    runs = {}
    for skip in ("0", "9ps"):
        out = tmp_path / f"skip_{skip}"
        result = _run(path, "--skip", skip, "--fit-window", "1ps:0.5T", "--blocks", "3", "-o", out, "--quiet")
        assert result.exit_code == 0, result.output
        runs[skip] = json.loads((out / "results.json").read_text())["runs"][0]
    kept = runs["9ps"]
    assert kept["n_frames"] == n_moving and kept["skipped"]["value"] == 9.0
    assert abs(kept["D_self"]["value"] - d * 0.1) < 4 * kept["D_self"]["err"] + 0.03 * d * 0.1
    assert runs["0"]["D_self"]["value"] < 0.85 * kept["D_self"]["value"]
    bad = _run(path, "--skip", "30ps", "-o", tmp_path / "bad", "--quiet")
    assert bad.exit_code == 1 and "removes the whole run" in bad.output
