"""The analysis as a library, without the CLI: `analyze_trajectory` → `summarize_analysis` →
`write_analysis` writes byte for byte what `cathodeml analyze` writes on the same trajectories,
replicas merge into one temperature, and the Arrhenius fit over random walkers with a known
D(T) gives back the activation energy they were made with."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from analysis_synth import gaussian_walk, write_h5md
from cathodeml.analysis.pipeline import AnalysisSettings, analyze_trajectory
from cathodeml.analysis.results import fit_arrhenius_points, summarize_analysis, write_analysis
from cathodeml.cli import app
from cathodeml.errors import CathodemlError
from cathodeml.io.results import ArrheniusPoint, results_json_text
from cathodeml.io.trajectory import open_trajectory
from cathodeml.units import BOLTZMANN_EV_PER_K

CELL = np.array([[14.0, 0.0, 0.0], [0.0, 14.0, 0.0], [2.0, 0.0, 14.0]])
EA, D0 = 0.20, 2e-3  # eV, Å²/fs
DT = 10.0  # fs between stored frames
TEMPS = (500.0, 600.0, 750.0)


def _d_true(t):
    return D0 * math.exp(-EA / (BOLTZMANN_EV_PER_K * t))  # Å²/fs


@pytest.fixture(scope="module")
def walkers(tmp_path_factory):
    """Three H5MD runs: 120 Li walkers with D(T) among 20 still Cl atoms."""
    root = tmp_path_factory.mktemp("walkers")
    rng = np.random.default_rng(11)
    paths = []
    for t in TEMPS:
        n_frames = 500
        li = gaussian_walk(rng, n_frames, 120, math.sqrt(2 * _d_true(t) * DT), start=rng.random((120, 3)) @ CELL)
        cl = np.broadcast_to(rng.random((20, 3)) @ CELL, (n_frames, 20, 3)) + rng.normal(0, 0.05, (n_frames, 20, 3))
        path = root / f"run_{int(t)}K.h5"
        write_h5md(path, np.concatenate([li, cl], axis=1), CELL, ["Li"] * 120 + ["Cl"] * 20, ["Li", "Cl"],
                   dt_fs=DT, temperature_K=t)
        paths.append(path)
    return paths


def _analyze(paths, settings):
    runs = []
    for p in paths:
        with open_trajectory(p) as traj:
            runs.append(analyze_trajectory(traj, settings))
    return runs


def test_library_writes_what_the_cli_writes(walkers, tmp_path):
    paths = [*walkers, walkers[0]]  # a replica at 500 K as well
    cli_out, lib_out = tmp_path / "cli", tmp_path / "lib"
    result = CliRunner().invoke(app, ["analyze", *map(str, paths), "--rdf", "Li-Cl", "--blocks", "4",
                                      "--arrhenius-fit", "lnsigmaT", "--at", "320", "--no-plots", "--json",
                                      "-o", str(cli_out)])
    assert result.exit_code == 0, result.output

    settings = AnalysisSettings(species="Li", blocks=4, rdf_pairs=(("Li", "Cl"),))
    results = summarize_analysis(_analyze(paths, settings), species="Li", fit="lnsigmaT", at_K=320.0)
    write_analysis(lib_out, results, figures=False)

    names = sorted(p.name for p in cli_out.iterdir())
    assert names == sorted(p.name for p in lib_out.iterdir())
    assert {"results.json", "arrhenius.csv", "rdf.csv", "msd_run_500K.csv", "msd_run_500K_2.csv"} <= set(names)
    for name in names:
        assert (lib_out / name).read_bytes() == (cli_out / name).read_bytes(), name
    assert results_json_text(results.to_dict()) + "\n" == result.stdout


def test_replicas_merge_and_the_fit_gives_back_the_walkers_activation_energy(walkers):
    runs = _analyze([*walkers, walkers[1]], AnalysisSettings(blocks=4))
    results = summarize_analysis(runs)
    assert [t.temperature_K for t in results.temperatures] == list(TEMPS)
    assert [t.n_replicas for t in results.temperatures] == [1, 2, 1]
    # two copies of one run: the same D, and the Haven ratio of the merged D's
    merged = results.temperatures[1]
    assert merged.D_self.value == pytest.approx(runs[1].D_self.value)
    assert merged.haven_ratio.value == pytest.approx(merged.D_self.value / merged.D_sigma.value)
    for t in results.temperatures:  # D in cm²/s: 1 Å²/fs = 0.1 cm²/s
        expected = _d_true(t.temperature_K) * 0.1
        assert abs(t.D_self.value - expected) < 4 * t.D_self.err + 0.03 * expected
    ea = results.arrhenius.record["Ea"]
    assert results.arrhenius.record["n_points"] == 3 and ea["unit"] == "eV"
    assert abs(ea["value"] - EA) < 4 * ea["err"] + 0.01
    assert results.to_dict()["Ea"] == ea


def test_one_temperature_has_no_fit_and_a_point_without_sigma_stops_a_sigma_fit():
    assert fit_arrhenius_points([ArrheniusPoint(500.0, 1e-6, 1e-7), ArrheniusPoint(500.04, 2e-6, 1e-7)]) is None
    points = [ArrheniusPoint(500.0, 1e-6, 1e-7, source="a"), ArrheniusPoint(600.0, 3e-6, 1e-7, source="b")]
    with pytest.raises(CathodemlError, match="needs sigma for every point; missing for a, b"):
        fit_arrhenius_points(points, "lnsigmaT")
    with pytest.raises(CathodemlError, match="choose one of lnD"):
        fit_arrhenius_points(points, "lnX")
    # two exact points fix the line: Ea from their ratio, k_B T1 T2 ln(D2/D1) / (T2 - T1)
    fit = fit_arrhenius_points(points, "lnD")
    expected = BOLTZMANN_EV_PER_K * 500.0 * 600.0 * math.log(3.0) / 100.0
    assert fit.record["Ea"]["value"] == pytest.approx(expected, rel=1e-12)
    assert json.loads(results_json_text({"a": fit.record}))["a"]["extrapolated"]["temperature_K"] == 300.0
