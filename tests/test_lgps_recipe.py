"""The LGPS recipe (examples/lgps/Makefile) at test sizes, so it cannot rot: the published
DP-GEN frames (a slice in tests/data) → train → test on a held-out system → NVT at two
temperatures → analyze, every step through the Makefile as a user runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "tests" / "data" / "deepmd" / "lgps_slice"


@pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")
def test_lgps_recipe_runs_end_to_end_at_test_sizes(tmp_path):
    out = tmp_path / "lgps"
    cathodeml = Path(sys.executable).with_name("cathodeml")
    args = ["make", "-s", "-j", "2", "-f", "examples/lgps/Makefile",
            f"CATHODEML={cathodeml if cathodeml.exists() else 'cathodeml'}", f"OUT={out}", f"DATA={SLICE}",
            f"HOLDOUT={SLICE}/iter.000002-data.001", "TRAIN_STEPS=20", "TEMPERATURES=900 1000", "MD_STEPS=60",
            "STRIDE=2", "EQUIL_PS=0", "ANALYZE_ARGS=--species Li --skip 20fs --fit-window 0.2T:0.6T --blocks 2"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr

    train = json.loads((out / "train.json").read_text())
    assert train["type_map"] == ["Li", "Ge", "P", "S"] and train["steps"] == 20
    # the 50-atom system has no type_map.raw: its types were named by the preset's type map
    assert {s["atoms"] for s in train["train_systems"]} == {50, 400}
    test = json.loads((out / "test" / "iter.000002-data.001" / "test_results.json").read_text())
    assert test["energy"]["rmse_per_atom"]["value"] > 0
    results = json.loads((out / "analysis" / "results.json").read_text())
    assert [round(r["temperature_K"]["value"]) for r in results["runs"]] == [900, 1000]
    for run in results["runs"]:
        assert run["n_ions"] == 160 and run["skipped"]["value"] == pytest.approx(0.02)
        assert run["D_self"]["unit"] == "cm^2/s" and run["sigma"]["unit"] == "mS/cm"
    assert results["arrhenius"]["Ea"]["unit"] == "eV"

    # a second `make` finds everything up to date: nothing is retrained or rerun
    targets = [f"{out}/analysis/results.json", f"{out}/test/iter.000002-data.001/test_results.json"]
    again = subprocess.run(args + ["-q", *targets], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, "make -q: the recipe's outputs are not up to date after a full run"
