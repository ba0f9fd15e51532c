"""The LGPS recipe (examples/lgps/Makefile) at test sizes, so it cannot rot, run through make as a
user runs it: (1) the training step on a slice of the published DP-GEN frames (systems without
type_map.raw included); (2) test → NVT at two temperatures → analyze → report with the model of
the recorded validation run (examples/lgps/model.h5) on frames it never saw in training."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLICE = ROOT / "tests" / "data" / "deepmd" / "lgps_slice"
HELD_400 = SLICE / "heldout400" / "iter.000002-data.001"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="the recipe needs GNU make")


def _make(out: Path, *variables: str, targets=(), timeout=900) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("cathodeml")
    args = ["make", "-s", "-j", "2", "-f", "examples/lgps/Makefile", f"CATHODEML={exe if exe.exists() else 'cathodeml'}",
            f"OUT={out}", *variables, *targets]
    return subprocess.run(args, cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True,
                          timeout=timeout)


def test_recipe_trains_on_the_dpgen_layout(tmp_path):
    out = tmp_path / "lgps"
    held = SLICE / "train" / "LiGePS-iter.000003-data.003"
    done = _make(out, f"DATA={SLICE / 'train'}", f"HOLDOUT={held}", "TRAIN_STEPS=4", targets=[f"{out}/model.h5"])
    assert done.returncode == 0, done.stdout + done.stderr
    train = json.loads((out / "train.json").read_text())
    # neither system has type_map.raw: type.raw indexes the preset's type map, as in DeePMD-kit
    assert train["type_map"] == ["Li", "Ge", "P", "S"] and train["steps"] == 4
    assert [s["name"] for s in train["train_systems"]] == ["LiGePS-iter.000000-data.000"]  # the held-out one is not
    assert train["valid_frames"] == 4


def test_recipe_md_and_analysis_with_the_recorded_model(tmp_path):
    out = tmp_path / "lgps"
    variables = [f"MODEL={ROOT / 'examples/lgps/model.h5'}", f"HOLDOUT={HELD_400}", "TEMPERATURES=900 1000",
                 "MD_STEPS=60", "STRIDE=2", "ANALYZE_ARGS=--species Li --skip 20fs --fit-window 0.2T:0.6T --blocks 1"]
    done = _make(out, *variables)
    assert done.returncode == 0, done.stdout + done.stderr

    test = json.loads((out / "test" / HELD_400.name / "test_results.json").read_text())["overall"]
    assert test["frames"] == 2
    # frames held out of the recorded model's training: its recorded accuracy (3.0 meV/atom, 207 meV/Å on
    # all 133 frames of that system, benchmarks/VALIDATION.md) with room for two frames' scatter
    assert test["energy"]["rmse"] < 10.0 and test["force"]["rmse"] < 300.0
    results = json.loads((out / "analysis" / "results.json").read_text())
    assert [round(r["temperature_K"]["value"]) for r in results["runs"]] == [900, 1000]
    for run in results["runs"]:
        assert run["n_ions"] == 160 and run["skipped"]["value"] == pytest.approx(0.02)
        assert run["n_frames"] == 31 - 5  # 60 steps of 2 fs, a frame every 2 steps → 31, less the 20 fs skipped
        assert run["D_self"]["value"] > 0 and run["sigma"]["unit"] == "mS/cm"
    assert results["arrhenius"]["Ea"]["unit"] == "eV"
    assert "held out: iter.000002-data.001" in (out / "summary.md").read_text()

    # a second `make` finds everything up to date: nothing is rerun
    again = _make(out, *variables, "-q", targets=[f"{out}/summary.md"], timeout=60)
    assert again.returncode == 0, "make -q: the recipe's outputs are not up to date after a full run"
