"""augment-spin against DeePMD-kit 3.2's own spin preprocessing, on DeePMD-kit's NiO spin example.

DeePMD-kit builds its virtual atoms inside the model (`SpinModel.process_spin_input`: R' = R +
virtual_scale·S); cathodeml writes them into the dataset.  This script checks that both put the
virtual atoms at the same place (vector mode, η = virtual_scale from DeePMD-kit's input) and times
the placement (numpy, and jitted for md), and the full `augment_dataset` (placement + PBC overlap
check + bookkeeping) on the NiO set replicated to `--copies` × 151 frames.  Benchmark only:
deepmd-kit is not a runtime or test dependency.

    python benchmarks/bench_augment_spin.py [--copies 20]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cathodeml.io.dataset import Dataset, concatenate, read_dataset
from cathodeml.spin import SpinSettings, augment_dataset, virtual_positions, virtual_sites

NIO = Path(__file__).resolve().parents[1] / "tests/data/deepmd/nio_spin"


def best_of(fn, repeat=5):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def deepmd_placement(scale):
    """DeePMD-kit's own `process_spin_input` (numpy dpmodel backend), without a backbone model."""
    from deepmd.dpmodel.model.spin_model import SpinModel
    from deepmd.utils.spin import Spin

    spin = Spin(use_spin=[True, False], virtual_scale=[scale])
    model = object.__new__(SpinModel)
    model.spin = spin
    model.ntypes_real = spin.ntypes_real
    model.virtual_scale_mask = spin.get_virtual_scale_mask()
    model.spin_mask = spin.get_spin_mask()
    return model.process_spin_input


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=20)
    args = parser.parse_args()
    import jax

    scale = json.loads((NIO / "input_torch.json").read_text())["model"]["spin"]["virtual_scale"][0]
    ds = read_dataset(NIO)
    big = concatenate([concatenate(ds.systems)] * args.copies)
    big.name = "NiO"
    data = Dataset(ds.type_map, [big])
    nf, na = big.n_frames, big.n_atoms
    settings = SpinSettings.create(["Ni"], eta=scale, d=0.0, mode="vector")
    sites = virtual_sites(big.atom_types, ds.type_map, settings)
    spin = big.frame_data["spin"]
    moments = spin[:, sites.host_index]

    process = deepmd_placement(scale)
    atype = np.repeat(big.atom_types[None], nf, axis=0)
    ref_coord, _, _ = process(big.coords, atype, spin)
    ours = virtual_positions(big.coords, moments, sites.host_index, sites.eta, sites.d, "vector")
    max_diff = float(np.abs(ref_coord[:, na + sites.host_index] - ours).max())

    t_deepmd = best_of(lambda: process(big.coords, atype, spin))
    t_numpy = best_of(lambda: virtual_positions(big.coords, moments, sites.host_index, sites.eta, sites.d, "vector"))
    jitted = jax.jit(lambda r, m: virtual_positions(r, m, sites.host_index, sites.eta, sites.d, "vector"))
    r_dev, m_dev = jax.device_put(big.coords), jax.device_put(moments)
    jitted(r_dev, m_dev).block_until_ready()
    t_jit = best_of(lambda: jitted(r_dev, m_dev).block_until_ready())
    t_full = best_of(lambda: augment_dataset(data, settings), repeat=1)

    print(f"NiO spin set × {args.copies}: {nf} frames × {na} atoms, 16 Ni virtual atoms per frame, η = {scale}")
    print(f"max |R'_cathodeml − R'_deepmd| = {max_diff:.2e} Å")
    rows = [("DeePMD-kit 3.2 process_spin_input (numpy)", t_deepmd),
            ("cathodeml virtual_positions (numpy)", t_numpy),
            ("cathodeml virtual_positions (jax.jit, CPU)", t_jit),
            ("cathodeml augment_dataset (placement + PBC overlap check)", t_full)]
    for name, t in rows:
        print(f"{name:60s} {t * 1e3:9.2f} ms   {t / t_deepmd:7.2f} × DeePMD-kit   {nf / t:12.0f} frames/s")


if __name__ == "__main__":
    main()
