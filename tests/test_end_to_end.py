"""The whole chain through the demo pipeline (examples/demo.mk run by make, each step a `cathodeml`
subprocess), at test sizes: ingest → augment-spin → train → test → md at two temperatures →
analyze → report.  Each output file is then checked against an independent source: the OUTCAR
text itself, the virtual-atom formula, the kinetic-energy definition of temperature, a direct numpy
MSD fit, the Nernst–Einstein relation with CODATA constants, the two-point Arrhenius slope, and
the summary page against the JSON it summarises."""

from __future__ import annotations

import gzip
import json
import math
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import constants as C
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.io.dataset import read_dataset

ROOT = Path(__file__).resolve().parents[1]
OUTCARS = {"Li1Ni2O4": ROOT / "tests/data/outcars/pmg_LiNi2O4_relax5_ispin2_v5.2.11.OUTCAR.gz",
           "Fe2O2": ROOT / "tests/data/outcars/custodian_FeO_LDAU_relax28_ispin2_v5.3.5.OUTCAR.gz"}
TEMPERATURES = (300, 360)
MD_STEPS, STRIDE, DT = 40, 2, 1.0
ETA, D = 0.3, 0.2
KB_EV = C.k / C.e

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="the demo pipeline needs GNU make")


def _demo_commands(out: Path) -> list[str]:
    """The recipe lines of `make demo` (examples/demo.mk) at test sizes, in an order make would run them."""
    cmd = ["make", "-n", "--no-print-directory", "-f", str(ROOT / "examples/demo.mk"), "demo", "CATHODEML=cathodeml",
           f"OUT={out}", "STEPS=20", f"TEMPERATURES={' '.join(map(str, TEMPERATURES))}",
           f"SPIN_ARGS=--magnetic Ni,Fe --eta {ETA} --d {D}",
           f"MD_ARGS=--supercell 1x2x1 --steps {MD_STEPS} --stride {STRIDE} --dt {DT} --tdamp 100 --magmom Ni=0.82",
           "ANALYZE_ARGS=--species Li --fit-window 0.2T:0.8T --blocks 1"]
    plan = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return [line for line in plan.replace("\\\n", " ").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def chain(tmp_path_factory, monkeypatch_module) -> Path:
    """Run the demo pipeline's own command lines through the CLI in this process (so jit caches are
    shared between the md runs and the test stays short)."""
    out = tmp_path_factory.mktemp("chain")
    monkeypatch_module.chdir(ROOT)
    runner = CliRunner()
    commands = _demo_commands(out)
    assert [c.split()[1] for c in commands if c.startswith("cathodeml ")] == \
        ["ingest", "augment-spin", "train", "test", "md", "md", "analyze", "report"]
    for line in commands:
        words = shlex.split(line)
        if words[:2] == ["mkdir", "-p"]:
            Path(words[2]).mkdir(parents=True, exist_ok=True)
        elif words[0] == "cathodeml":
            result = runner.invoke(app, words[1:])
            assert result.exit_code == 0, f"{line}\n{result.output[-3000:]}\n{result.exception!r}"
        else:
            assert words[0] == "echo", f"unexpected recipe line in examples/demo.mk: {line}"
    return out


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _totens(path: Path) -> list[float]:
    text = gzip.open(path, "rt", errors="replace").read()
    return [float(x) for x in re.findall(r"free  energy   TOTEN\s*=\s*(-?\d+\.\d+)", text)]


def test_ingest_keeps_every_ionic_step_with_its_toten(chain):
    data = read_dataset(chain / "data.h5")
    by_name = {s.name: s for s in data.systems}
    assert set(by_name) == set(OUTCARS)
    for name, path in OUTCARS.items():
        np.testing.assert_allclose(by_name[name].energies, _totens(path), atol=1e-6)


def test_virtual_atoms_sit_eta_s_plus_d_above_their_hosts(chain):
    plain = {s.name: s for s in read_dataset(chain / "data.h5").systems}
    spin = read_dataset(chain / "spin.h5")
    # the real types keep their indices (demo.mk's --type-map Li,Ni,Fe,O) and the virtual types follow
    # in that order: Ni before Fe, whatever order --magnetic names them in
    assert spin.type_map == ["Li", "Ni", "Fe", "O", "Ni_spin", "Fe_spin"]
    for s in spin.systems:
        p = plain[s.name]
        n_real = p.n_atoms
        host = np.asarray(s.attrs["spin"]["host_index"])
        np.testing.assert_allclose(s.coords[:, :n_real], p.coords, atol=1e-12)
        np.testing.assert_allclose(s.energies, p.energies)
        moments = p.frame_data["magmom"][:, host]
        shift = s.coords[:, n_real:] - p.coords[:, host]
        np.testing.assert_allclose(shift[..., :2], 0.0, atol=1e-9)
        np.testing.assert_allclose(shift[..., 2], ETA * moments + D, atol=1e-9)


def test_test_errors_combine_over_systems_like_rms_values(chain):
    report = json.loads((chain / "test/test_results.json").read_text())
    systems = report["systems"]
    frames = np.array([s["frames"] for s in systems])
    e_rmse = np.array([s["energy"]["rmse"] for s in systems])
    assert report["overall"]["frames"] == frames.sum() == 33
    assert report["overall"]["energy"]["rmse"] == pytest.approx(math.sqrt((frames * e_rmse**2).sum() / frames.sum()))
    n_f = np.array([s["force"]["n"] for s in systems])
    f_rmse = np.array([s["force"]["rmse"] for s in systems])
    assert n_f.sum() == 3 * (5 * 7 + 28 * 4)  # force components of the real atoms only
    assert report["overall"]["force"]["rmse"] == pytest.approx(math.sqrt((n_f * f_rmse**2).sum() / n_f.sum()))
    for name in ("parity_energy.png", "parity_force.png"):
        head = (chain / "test" / name).read_bytes()[:24]
        assert head[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
        assert width >= 200 and height >= 200


def _trajectory(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        part = f["particles/all"]
        return {"pos": part["position/value"][:], "step": part["position/step"][:], "time": part["position/time"][:],
                "image": part["image/value"][:], "box": part["box/edges/value"][:], "species": part["species"][:],
                "mass": part["mass"][:], "T": f["observables/temperature/value"][:],
                "ke": f["observables/kinetic_energy/value"][:],
                "type_map": json.loads(f["parameters"].attrs["cathodeml"])["type_map"]}


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_md_temperature_is_twice_kinetic_energy_over_dof(chain, temperature):
    t = _trajectory(chain / f"md/traj_{temperature}K.h5")
    n = t["pos"].shape[1]
    assert n == 14 and sorted(t["type_map"][i] for i in t["species"]).count("Li") == 2
    np.testing.assert_array_equal(t["step"], np.arange(0, MD_STEPS + 1, STRIDE))
    np.testing.assert_allclose(t["time"], t["step"] * DT)
    np.testing.assert_allclose(t["T"], 2 * t["ke"] / ((3 * n - 3) * KB_EV), rtol=1e-9)
    assert t["T"][0] == pytest.approx(temperature, rel=1e-6)  # velocities rescaled to T exactly at the start


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_unwrapped_positions_minus_image_shifts_lie_in_the_cell(chain, temperature):
    t = _trajectory(chain / f"md/traj_{temperature}K.h5")
    wrapped = t["pos"] - np.einsum("fni,fij->fnj", t["image"].astype(float), t["box"])
    frac = np.einsum("fnj,fjk->fnk", wrapped, np.linalg.inv(t["box"]))
    assert frac.min() > -1e-9 and frac.max() < 1 + 1e-9


def _direct_d_self(t: dict, start_fs: float, end_fs: float) -> float:
    """D_self (cm²/s) of Li: framework-drift-corrected MSD averaged over time origins and ions,
    least-squares line through the window, slope/6."""
    li = np.array([t["type_map"][i] == "Li" for i in t["species"]])
    frame = ~li
    com = (t["pos"][:, frame] * t["mass"][frame, None]).sum(1) / t["mass"][frame].sum()
    r = t["pos"][:, li] - com[:, None, :]
    lags = np.arange(len(r))
    msd = np.array([np.mean(np.sum((r[k:] - r[:len(r) - k]) ** 2, axis=-1)) for k in lags])
    tau = lags * (t["time"][1] - t["time"][0])
    sel = (tau >= start_fs - 1e-9) & (tau <= end_fs + 1e-9)
    slope = np.polyfit(tau[sel], msd[sel], 1)[0]  # Å²/fs
    return slope / 6 * 1e-16 / 1e-15


def test_analysis_d_self_agrees_with_a_direct_msd_fit(chain):
    results = json.loads((chain / "analysis/results.json").read_text())
    for run in results["runs"]:
        t = _trajectory(Path(run["file"]))
        start, end = (run["fit_window"][k]["value"] * 1000 for k in ("start", "end"))
        assert start == pytest.approx(0.2 * MD_STEPS * DT) and end == pytest.approx(0.8 * MD_STEPS * DT)
        assert run["D_self"]["value"] == pytest.approx(_direct_d_self(t, start, end), rel=0.02)


def test_sigma_follows_nernst_einstein_from_d_sigma(chain):
    results = json.loads((chain / "analysis/results.json").read_text())
    for run in results["runs"]:
        n = run["n_ions"] / (run["volume"]["value"] * 1e-30)  # m⁻³
        d_sigma = run["D_sigma"]["value"] * 1e-4  # m²/s
        temperature = run["temperature_K"]["value"]
        sigma_s_per_m = n * C.e**2 * d_sigma / (C.k * temperature)
        assert run["sigma"]["value"] == pytest.approx(sigma_s_per_m * 10, rel=1e-6)  # S/m → mS/cm
        assert run["haven_ratio"]["value"] == pytest.approx(run["D_self"]["value"] / run["D_sigma"]["value"], rel=1e-9)


def test_two_temperature_activation_energy_is_the_arrhenius_slope(chain):
    results = json.loads((chain / "analysis/results.json").read_text())
    (t1, d1), (t2, d2) = sorted((r["temperature_K"]["value"], r["D_self"]["value"]) for r in results["runs"])
    ea = -KB_EV * math.log(d2 / d1) / (1 / t2 - 1 / t1)
    assert results["arrhenius"]["n_points"] == 2
    assert results["arrhenius"]["Ea"]["value"] == pytest.approx(ea, rel=1e-6)


def test_summary_quotes_the_json_results_and_every_link_resolves(chain):
    page = chain / "summary.md"
    text = page.read_text()
    test = json.loads((chain / "test/test_results.json").read_text())
    analysis = json.loads((chain / "analysis/results.json").read_text())
    e, f = test["overall"]["energy"], test["overall"]["force"]
    assert f"| energy (all) | {e['rmse']:.2f} / {e['mae']:.2f} |" in text
    assert f"| force (all) | {f['rmse']:.2f} / {f['mae']:.2f} |" in text
    assert f"Eₐ = {analysis['arrhenius']['Ea']['value']:.3g} ± {analysis['arrhenius']['Ea']['err']:.2g} eV" in text
    for run in analysis["runs"]:
        assert f"{run['D_self']['value']:.3g} ± {run['D_self']['err']:.2g}" in text
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert {"test/parity_energy.png", "test/parity_force.png", "analysis/msd.png", "analysis/arrhenius.png",
            "model.h5"} <= set(links)
    for link in links:
        assert (page.parent / link).is_file(), link


def test_report_of_a_missing_test_folder_says_what_to_run(tmp_path):
    result = CliRunner().invoke(app, ["report", "--test", str(tmp_path / "nowhere"), "-o", str(tmp_path / "s.md")])
    assert result.exit_code == 1
    assert "run `cathodeml test` first" in result.output
    assert not (tmp_path / "s.md").exists()


def test_report_refuses_a_json_that_is_not_an_analysis(tmp_path):
    wrong = tmp_path / "results.json"
    wrong.write_text(json.dumps({"kind": "trajectory"}))
    result = CliRunner().invoke(app, ["report", "--analysis", str(wrong), "-o", str(tmp_path / "s.md")])
    assert result.exit_code == 1 and "not a `cathodeml analyze` results.json" in result.output


def test_models_compared_side_by_side_get_one_column_each(tmp_path):
    from cathodeml.report import load_test_run, summary_markdown

    def result(e_rmse):
        err = lambda v, unit: {"rmse": v, "mae": v / 2, "n": 4, "unit": unit}  # noqa: E731
        return {"overall": {"frames": 4, "energy": err(e_rmse, "meV/atom"), "force": err(10.0, "meV/Å")},
                "systems": [{"name": "Fe2O2", "frames": 4, "atoms": 4, "energy": err(e_rmse, "meV/atom"),
                             "force": err(10.0, "meV/Å")}],
                "spin_configurations": {"Fe2O2: Fe[2×3.1]": {"energy": err(e_rmse, "meV/atom")}}}

    for name, rmse in (("plain", 40.0), ("virtual", 4.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "test_results.json").write_text(json.dumps(result(rmse)))
        (tmp_path / name / "parity_energy.png").write_bytes(b"\x89PNG")
    runs = [load_test_run(f"{n}={tmp_path / n}") for n in ("plain", "virtual")]
    text = summary_markdown(tmp_path / "summary.md", title="t", tests=runs)
    assert "| | plain | virtual |" in text
    assert "| energy (all) | 40.00 / 20.00 | 4.00 / 2.00 |" in text
    assert "| Fe2O2: Fe[2×3.1] | 40.00 / 20.00 | 4.00 / 2.00 |" in text
    assert "| parity energy | ![plain parity_energy.png](plain/parity_energy.png) | " \
           "![virtual parity_energy.png](virtual/parity_energy.png) |" in text
    assert "parity force" not in text  # no such figures: no row of dead links
