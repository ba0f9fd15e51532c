"""`cathodeml analyze --arrhenius D_T.csv` without trajectories: a table of T, D[, D_err] from
earlier runs or another code gives back the activation energy of the Arrhenius law it was made
from, the weighted and unweighted fits agree with numpy/scipy's own least squares, and every bad
table is one clear error line."""

import json
import math

import numpy as np
import pytest
import scipy.stats
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.units import BOLTZMANN_EV_PER_K as KB

EA, D0 = 0.31, 4.2e-3  # eV, cm²/s
TEMPS = np.array([450.0, 500.0, 575.0, 650.0, 800.0])


def _law(t):
    return D0 * np.exp(-EA / (KB * np.asarray(t)))


def _run(*args):
    return CliRunner().invoke(app, ["analyze", *[str(a) for a in args]])


def _fit(table, tmp_path, *extra):
    result = _run("--arrhenius", table, "-o", tmp_path / "out", "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("layout", ["headerless-3", "headerless-2", "header-csv", "header-whitespace", "header-units"])
def test_a_table_of_an_exact_arrhenius_law_gives_back_its_activation_energy_and_prefactor(tmp_path, layout):
    d = _law(TEMPS)
    err = 0.05 * d
    rows = {
        "headerless-3": "\n".join(f"{t:g},{v:.17g},{e:.17g}" for t, v, e in zip(TEMPS, d, err)),
        "headerless-2": "\n".join(f"{t:g} {v:.17g}" for t, v in zip(TEMPS, d)),
        "header-csv": "T,D,D_err\n" + "\n".join(f"{t:g},{v:.17g},{e:.17g}" for t, v, e in zip(TEMPS, d, err)),
        "header-whitespace": "temperature\td\terr\n" + "\n".join(f"{t:g}\t{v:.17g}\t{e:.17g}"
                                                                  for t, v, e in zip(TEMPS, d, err)),
        "header-units": "t_K , D_CM2_S  # from another code\n" + "\n".join(f"{t:g}, {v:.17g}" for t, v in zip(TEMPS, d)),
    }[layout]
    table = _write(tmp_path / "D_T.csv", f"# D(T) of a made-up conductor\n\n{rows}\n# end\n")
    res = _fit(table, tmp_path)
    fit = res["arrhenius"]
    assert res["runs"] == [] and fit["n_points"] == len(TEMPS) and fit["quantity"] == "D"
    assert fit["weighted"] is (layout in ("headerless-3", "header-csv", "header-whitespace"))
    assert fit["Ea"] == res["Ea"] and res["Ea"]["unit"] == "eV"
    assert res["Ea"]["value"] == pytest.approx(EA, rel=1e-9)
    assert fit["prefactor"]["value"] == pytest.approx(D0, rel=1e-8) and fit["prefactor"]["unit"] == "cm^2/s"
    ext = fit["extrapolated"]
    assert ext["temperature_K"] == 300.0 and ext["value"] == pytest.approx(_law(300.0), rel=1e-8)
    assert ext["ci_low"] <= ext["value"] <= ext["ci_high"]


def _noisy_table(tmp_path, rel_err, scatter, seed, *, weighted=True):
    rng = np.random.default_rng(seed)
    d = _law(TEMPS) * np.exp(rng.normal(0.0, scatter, len(TEMPS)))
    err = rel_err * d * (1 + rng.random(len(TEMPS)))  # unequal error bars, so the weights matter
    text = "T_K,D_cm2_s,D_err\n" + "\n".join(f"{t:g},{v:.17g},{e:.17g}" for t, v, e in zip(TEMPS, d, err))
    if not weighted:
        text = "T,D\n" + "\n".join(f"{t:g},{v:.17g}" for t, v in zip(TEMPS, d))
    return _write(tmp_path / "D_T.csv", text + "\n"), d, err


@pytest.mark.parametrize("scatter, cov", [(0.3, True), (0.002, "unscaled")])
def test_the_weighted_fit_is_numpys_polyfit_with_weights_one_over_sigma_lnD(tmp_path, scatter, cov):
    # Points scattering more than their error bars: the covariance is scaled by the reduced χ² (polyfit cov=True);
    # points closer than their error bars: the error bars alone set it (cov="unscaled"), never deflated.
    table, d, err = _noisy_table(tmp_path, 0.05, scatter, seed=7)
    fit = _fit(table, tmp_path)["arrhenius"]
    assert fit["weighted"] is True
    (slope, intercept), c = np.polyfit(1.0 / TEMPS, np.log(d), 1, w=d / err, cov=cov)
    assert fit["Ea"]["value"] == pytest.approx(-slope * KB, rel=1e-9)
    assert fit["Ea"]["err"] == pytest.approx(math.sqrt(c[0, 0]) * KB, rel=1e-7)
    assert fit["prefactor"]["value"] == pytest.approx(math.exp(intercept), rel=1e-9)
    assert fit["prefactor"]["err"] == pytest.approx(math.exp(intercept) * math.sqrt(c[1, 1]), rel=1e-7)
    # D(300 K) and its first-order error from the same covariance, by hand
    x = np.array([1.0, 1.0 / 300.0])
    var = x @ np.array([[c[1, 1], c[1, 0]], [c[0, 1], c[0, 0]]]) @ x
    ext = fit["extrapolated"]
    assert ext["value"] == pytest.approx(math.exp(intercept + slope / 300.0), rel=1e-9)
    assert ext["err"] == pytest.approx(ext["value"] * math.sqrt(var), rel=1e-6)


def test_the_unweighted_fit_and_its_standard_errors_are_scipys_linregress(tmp_path):
    table, d, _ = _noisy_table(tmp_path, 0.05, 0.1, seed=3, weighted=False)
    fit = _fit(table, tmp_path)["arrhenius"]
    lr = scipy.stats.linregress(1.0 / TEMPS, np.log(d))
    assert fit["weighted"] is False
    assert fit["Ea"]["value"] == pytest.approx(-lr.slope * KB, rel=1e-9)
    assert fit["Ea"]["err"] == pytest.approx(lr.stderr * KB, rel=1e-7)
    assert fit["prefactor"]["err"] / fit["prefactor"]["value"] == pytest.approx(lr.intercept_stderr, rel=1e-7)
    # unknown errors: the 95 % interval uses Student t with n − 2 degrees of freedom
    ext = fit["extrapolated"]
    t = scipy.stats.t.ppf(0.975, len(TEMPS) - 2)
    assert math.log(ext["ci_high"] / ext["value"]) == pytest.approx(t * ext["err"] / ext["value"], rel=1e-7)


def test_the_table_route_writes_results_csv_and_figure_and_prints_the_same_json(tmp_path):
    table, _, _ = _noisy_table(tmp_path, 0.05, 0.05, seed=1)
    out = tmp_path / "out"
    result = _run("--arrhenius", table, "-o", out, "--json", "--at", "350")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed == json.loads((out / "results.json").read_text())
    assert printed["arrhenius"]["extrapolated"]["temperature_K"] == 350.0
    assert sorted(p.name for p in out.iterdir()) == ["arrhenius.csv", "arrhenius.png", "results.json"]
    assert (out / "arrhenius.png").stat().st_size > 0
    # what it wrote reads back as the same points: the CSV table and the results.json both
    for again in (out / "arrhenius.csv", out / "results.json"):
        back = _fit(again, tmp_path / again.suffix[1:])
        assert back["Ea"]["value"] == pytest.approx(printed["Ea"]["value"], rel=1e-8)
        assert back["arrhenius"]["weighted"] is True


def test_the_table_route_prints_a_summary_without_json(tmp_path):
    table = _write(tmp_path / "D_T.csv", "\n".join(f"{t:g} {v:.17g}" for t, v in zip(TEMPS, _law(TEMPS))) + "\n")
    result = _run("--arrhenius", table, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "Eₐ = 0.31" in result.stdout and "D(300 K)" in result.stdout


@pytest.mark.parametrize("text, message", [
    (None, "nothing to analyse"),
    ("500 1e-6\n", "two or more different temperatures"),
    ("T,D\n500,1e-6\n500.02,2e-6\n", "only T = 500 K"),
    ("T,D\n", "a header but no rows"),
    ("# nothing here\n\n", "empty table"),
    ("500 1e-6\n600 0\n", "non-positive or missing D"),
    ("500 1e-6\n600 -2e-6\n", "non-positive or missing D"),
    ("500 1e-6\n0 2e-6\n", "line 2: T = 0; temperatures must be positive"),
    ("T,D\n-500,1e-6\n600,2e-6\n", "line 2: T = -500"),
    ("temp,D\n500,1e-6\n600,2e-6\n", "no T column"),
    ("T;D\n500;1e-6\n600;2e-6\n", "no T or D column"),
    ("T,D,D_err\n500,1e-6,x\n600,2e-6,1e-7\n", "line 2: not a number"),
    ("T,D,D_err\n500,1e-6,-1e-7\n600,2e-6,1e-7\n", "negative error bar"),
    ("500 1e-6 1e-7 5\n600 2e-6 1e-7 5\n", "4 columns without a header"),
    ("500 1e-6\n600 2e-6 1e-7\n", "line 2: 3 columns where the table has 2"),
])
def test_a_bad_table_is_one_clear_error_line(tmp_path, text, message):
    args = [] if text is None else ["--arrhenius", _write(tmp_path / "D_T.csv", text)]
    result = _run(*args, "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.csv", "no such file"),
    (lambda p: p, "not a readable table"),
    (lambda p: (p / "D_T.csv").write_bytes(b"T,D\n\xff\xfe\x00\x81\n") and p / "D_T.csv", "not a readable table"),
])
def test_an_unreadable_table_is_one_clear_error_line(tmp_path, make, message):
    folder = tmp_path / "in"
    folder.mkdir()
    result = _run("--arrhenius", make(folder), "-o", tmp_path / "out")
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and message in result.stderr


def test_a_table_given_as_a_trajectory_says_to_use_arrhenius(tmp_path):
    table = _write(tmp_path / "D_T.csv", "500 1e-6\n600 2e-6\n")
    result = _run(table, "-o", tmp_path / "out")
    assert result.exit_code == 1 and f"--arrhenius {table}" in result.stderr and result.stderr.count("\n") == 1


def test_help_names_the_table_route():
    result = CliRunner().invoke(app, ["analyze", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "--arrhenius D_T.csv" in result.stdout
