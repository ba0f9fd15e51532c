"""The spin paper's claim on toy spin–lattice data, from the command line.

The data (tests/spin_toy_data.py: rock-salt "NiO" with Morse pairs plus on-site, bond-length
dependent and Heisenberg-like spin energies, each structure labelled in several spin states)
is the tests' known-answer set. Run as a script: it trains the tiny model with and without
virtual spin atoms and prints both energy RMSEs (and the NiO set's, from tests/data) -- the
figures in BENCHMARKS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from spin_toy_data import toy_dataset  # noqa: E402  (the tests own the known-answer data)


TOY_CONFIG = """
[model]
rcut = 5.0
rcut_smth = 0.5
embedding_neurons = [8, 16]
axis_neuron = 4
fitting_neurons = [32, 32]
[learning_rate]
start_lr = 1e-2
stop_lr = 1e-4
decay_steps = 10
[loss]
start_pref_e = 1.0
limit_pref_e = 1.0
start_pref_f = 0.1
limit_pref_f = 0.1
[training]
steps = {steps}
batch_size = 4
disp_freq = 100
save_freq = 100000
validation_fraction = 0.0
"""


def _cli(*args) -> dict:
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "cathodeml.cli", *args, "--json"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout)


def _train_and_test(work, config_text, train_path, test_path, tag, valid=None) -> dict:
    config = work / f"{tag}.toml"
    config.write_text(config_text)
    extra = ["--valid", str(valid)] if valid else []
    summary = _cli("train", str(config), "--data", str(train_path), *extra, "-o", str(work / f"{tag}.h5"))
    report = _cli("test", str(work / f"{tag}.h5"), str(test_path))["overall"]
    return {"energy_rmse_meV_per_atom": report["energy"]["rmse"], "force_rmse_meV_per_A": report["force"]["rmse"],
            "steps_per_second": summary["steps_per_second"]}


def main(argv=None) -> dict:
    """Toy and NiO, each trained with and without virtual spin atoms; returns the figures."""
    import argparse
    import json
    import tempfile
    from pathlib import Path

    from cathodeml import spin
    from cathodeml.io.dataset import read_dataset, write_dataset

    parser = argparse.ArgumentParser(description="spin vs no-spin training on the toy and NiO data")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--nio-steps", type=int, default=1000)
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parent.parent
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = spin.SpinSettings.create(["Ni"], 0.3, 0.3)
        for tag, seed, n in (("toy_train", 0, 16), ("toy_test", 1, 8)):
            plain = toy_dataset(n, states=("LS", "HS", "AFM"), displacement=0.02, strain=0.01, seed=seed)
            write_dataset(work / f"{tag}.h5", plain)
            write_dataset(work / f"{tag}_spin.h5", spin.augment_dataset(plain, settings)[0])
        config = TOY_CONFIG.format(steps=args.steps)
        results["toy"] = {
            "no_spin": _train_and_test(work, config, work / "toy_train.h5", work / "toy_test.h5", "toy_plain"),
            "spin": _train_and_test(work, config, work / "toy_train_spin.h5", work / "toy_test.h5", "toy_spin"),
        }
        nio = root / "tests" / "data" / "deepmd" / "nio_spin"
        vector = spin.SpinSettings.create(["Ni"], 0.314, 0.0, mode="vector")  # DeePMD-kit's virtual_scale
        for part in ("data_0", "data_1", "data_2"):
            ds = read_dataset(nio / part)
            write_dataset(work / f"nio_{part}.h5", ds)
            write_dataset(work / f"nio_{part}_spin.h5", spin.augment_dataset(ds, vector)[0])
        train_plain = work / "nio_train.h5"
        train_spin = work / "nio_train_spin.h5"
        for suffix, target in (("", train_plain), ("_spin", train_spin)):
            for part in ("data_0", "data_1"):
                write_dataset(target, read_dataset(work / f"nio_{part}{suffix}.h5"), append=target.exists())
        nio_config = (root / "configs" / "tiny.toml").read_text().replace("steps = 300", f"steps = {args.nio_steps}")
        results["nio"] = {
            "no_spin": _train_and_test(work, nio_config, train_plain, work / "nio_data_2.h5", "nio_plain",
                                       valid=work / "nio_data_2.h5"),
            "spin": _train_and_test(work, nio_config, train_spin, work / "nio_data_2.h5", "nio_spin",
                                    valid=work / "nio_data_2_spin.h5"),
        }
    for case in results.values():
        case["energy_rmse_ratio_no_spin_over_spin"] = (case["no_spin"]["energy_rmse_meV_per_atom"]
                                                       / case["spin"]["energy_rmse_meV_per_atom"])
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":  # pragma: no cover - demo script
    main()
