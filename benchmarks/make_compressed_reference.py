"""DeePMD-kit's own compressed models as a test fixture (tests/data/deepmd/reference/compressed.npz).

For each reference se_e2_a model (tests/data/deepmd/reference/*.dp) and each table stride, runs
`dp --pt convert-backend` and `dp --pt compress -s STRIDE -e 5 -t input.json` (the minimum neighbour
distance computed by DeePMD-kit from the real water frames of ../shared/data/deepmd/water/data_0), then
DeePMD-kit's DeepPot on the compressed .pth for the cases of reference.npz.  Stored per MODEL/sSTRIDE:
`min_nbor_dist`, `compress_info` [nets, 6] (lower, upper, max, stride0, stride1, check frequency), and per
CASE `energy` (eV), `force` [n, 3] (eV/Å).  The coarse stride 0.2 makes the tables differ visibly from
the nets, so matching them checks the tables, not only the nets.  Run with the peers' python:

    /path/to/peers/bin/python benchmarks/make_compressed_reference.py
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "tests" / "data" / "deepmd" / "reference"
WATER = Path(os.environ.get("CATHODEML_WATER", "/work/shared/data/deepmd/water"))
STRIDES = (0.01, 0.2)


def main():
    peers = Path(sys.prefix)  # the venv this runs in
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    libs = glob.glob(str(peers / "lib" / "python3*" / "site-packages" / "nvidia" / "cuda_runtime" / "lib"))
    env["LD_LIBRARY_PATH"] = ":".join(libs + [env.get("LD_LIBRARY_PATH", "")])
    dp = str(peers / "bin" / "dp")
    cases = np.load(REF / "reference.npz")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = json.loads((WATER / "input_torch.json").read_text())
        spec["training"]["training_data"]["systems"] = [str(WATER / "data_0")]
        spec["training"].pop("validation_data", None)
        (tmp / "input.json").write_text(json.dumps(spec))
        for model in ("se_e2_a_tos_true", "se_e2_a_tos_false"):
            pth = tmp / f"{model}.pth"
            subprocess.run([dp, "--pt", "convert-backend", str(REF / f"{model}.dp"), str(pth)], check=True, env=env,
                           capture_output=True)
            for stride in STRIDES:
                key = f"{model}/s{stride}"
                cpth = tmp / f"{model}-s{stride}.pth"
                subprocess.run([dp, "--pt", "compress", "-i", str(pth), "-o", str(cpth), "-s", str(stride), "-e", "5",
                                "-t", str(tmp / "input.json")], check=True, env=env, capture_output=True, cwd=tmp)
                subprocess.run([sys.executable, __file__, "--eval", str(cpth), key, str(tmp / f"{model}-s{stride}.npz")],
                               check=True, env=env)
                with np.load(tmp / f"{model}-s{stride}.npz") as z:
                    out.update({k: z[k] for k in z.files})
    np.savez_compressed(REF / "compressed.npz", **out)
    print(f"wrote {REF / 'compressed.npz'} ({len(out)} arrays)")


def evaluate(cpth: str, key: str, dest: str):
    """In a fresh process (the custom ops load with deepmd.pt): tables' grids and DeePMD-kit's results."""
    import deepmd.pt  # noqa: F401  registers torch.ops.deepmd.tabulate_fusion_se_a
    import torch
    from deepmd.infer import DeepPot

    module = torch.jit.load(cpth, map_location="cpu")
    state = module.state_dict()
    info = [v.numpy() for k, v in sorted(state.items()) if "compress_info" in k]
    res = {f"{key}/compress_info": np.array(info), f"{key}/min_nbor_dist": np.array(float(module.get_min_nbor_dist()))}
    cases = np.load(REF / "reference.npz")
    pot = DeepPot(cpth)
    model = key.split("/")[0]
    for case in ("water", "triclinic", "cluster"):
        coord, types = cases[f"{model}/{case}/coord"], cases[f"{model}/{case}/types"]
        cell = cases[f"{model}/{case}/cell"] if bool(cases[f"{model}/{case}/periodic"]) else None
        e, f, _ = pot.eval(coord[None], None if cell is None else cell[None], types)[:3]
        res[f"{key}/{case}/energy"] = np.array(float(np.ravel(e)[0]))
        res[f"{key}/{case}/force"] = np.asarray(f).reshape(-1, 3)
    np.savez(dest, **res)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--eval"]:
        evaluate(*sys.argv[2:5])
    else:
        main()
