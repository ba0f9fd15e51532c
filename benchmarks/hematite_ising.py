"""An independent baseline for the hematite spin claim: a nearest-shells Ising fit of the same split.

E/atom = E0 + Σ_k J_k · Σ_{pairs in shell k} s_i s_j, with s = sign of the Fe moment and the Fe–Fe
shells of hematite (2.9–3.0 Å: J1+J2; 3.37 Å: J3; 3.70 Å: J4), fitted by least squares on the
training orderings and evaluated on the held-out ones.  It says what the data allow: the ordering
energies are (almost) a short-range pair function of the spin signs.

  python benchmarks/hematite_ising.py results/hematite/train.h5 results/hematite/heldout.h5
"""

import sys

import numpy as np

from cathodeml.io.dataset import read_dataset

SHELLS_A = [(2.8, 3.05), (3.3, 3.45), (3.6, 3.8)]


def shell_correlations(path, shells=SHELLS_A):
    """([nf, n_shells] Σ s_i s_j per shell over the cell, [nf] energy eV/atom)."""
    s = read_dataset(path).systems[0]
    fe = np.flatnonzero(s.atom_types == 0)  # type map Fe,O
    images = np.array(np.meshgrid([-2, -1, 0, 1, 2], [-2, -1, 0, 1, 2], [-1, 0, 1])).reshape(3, -1).T
    rows = []
    for f in range(s.n_frames):
        cell, r = s.cells[f], s.coords[f][fe]
        sign = np.sign(s.frame_data["magmom"][f][fe])
        frac = (r[None] - r[:, None]) @ np.linalg.inv(cell)
        dist = np.linalg.norm((frac[None] + images[:, None, None]) @ cell, axis=-1)  # [images, i, j]
        ss = sign[:, None] * sign[None]
        rows.append([(((dist > lo) & (dist < hi)) * ss[None]).sum() / 2 for lo, hi in shells])
    return np.array(rows, float), s.energies / s.n_atoms


def main(train_path, heldout_path):
    xt, yt = shell_correlations(train_path)
    xv, yv = shell_correlations(heldout_path)
    a = np.c_[np.ones(len(xt)), xt]
    coef, *_ = np.linalg.lstsq(a, yt, rcond=None)
    rmse = lambda x, y: 1000 * np.sqrt(np.mean((np.c_[np.ones(len(x)), x] @ coef - y) ** 2))  # noqa: E731
    print(f"J (meV/atom per unit of the shell sum): {', '.join(f'{1000 * j:.3f}' for j in coef[1:])}")
    print(f"Ising fit: train {rmse(xt, yt):.2f} meV/atom, held-out {rmse(xv, yv):.2f} meV/atom; "
          f"held-out RMSE of the training mean (what a spin-blind model can do): "
          f"{1000 * np.sqrt(np.mean((yv - yt.mean()) ** 2)):.2f} meV/atom")


if __name__ == "__main__":
    main(*sys.argv[1:3])
