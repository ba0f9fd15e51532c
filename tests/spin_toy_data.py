"""Known-answer spin data for the tests: the same structures labelled in several spin states.

Why a toy: the spin paper's claim -- a potential that does not see the moments cannot fit data
where one structure appears with several energies, and virtual spin atoms fix that -- is a
statement about the *data*, so it can be checked on data whose answer we know exactly.

The model system is rock-salt "NiO" (TM on one fcc sublattice, O on the other), randomly
displaced and strained.  Its energy (eV) is

    E = Σ_{i<j} φ_{ab}(r_ij)                                    smooth Morse pair potential
      + Σ_{i∈TM} [ A·m_i² + B·m_i² Σ_{j∈O} g(r_ij) ]             on-site + bond-length dependent spin energy
      + J Σ_{i<j∈TM} m_i m_j g(r_ij)                             Heisenberg-like TM–TM coupling

with φ_{ab}(r) = D_ab [e^{−2α(r−r_ab)} − 2e^{−α(r−r_ab)}]·f_c(r), g(r) = e^{−(r−r_g)/λ}·f_c(r),
and f_c a cosine switch from r_on to r_c (all terms smooth at the cutoff).  Moments m_i (μB)
are held fixed per spin state: "LS" m = 0, "HS" m = +2, "AFM" m = ±2 on alternating (001)
planes.  Forces are −∂E/∂r at fixed moments (jax autodiff); LS and HS energies of one structure
differ by ≈ 0.45 eV/atom, far above what any spin-blind model can split.

The tests import this module (it lives next to them); benchmarks/spin_toy.py is the demo that
trains on the same toy from the command line.
"""

from __future__ import annotations

import itertools

import numpy as np

TYPE_MAP = ["Ni", "O"]
LATTICE_A = 4.17  # rock-salt NiO lattice constant (Å)

# Pair potential parameters, indexed by (type a, type b): D (eV), r0 (Å); α (1/Å) shared.
_MORSE = {(0, 0): (0.10, 2.95), (0, 1): (1.00, 2.085), (1, 1): (0.10, 2.95)}
_ALPHA = 1.6
_R_ON, _R_CUT = 3.5, 4.5
# Spin energy parameters: A (eV/μB²), B (eV/μB²), J (eV/μB²), r_g and λ (Å).
SPIN_A, SPIN_B, SPIN_J = 0.10, 0.02, 0.02
_R_G, _LAMBDA = 2.085, 0.4
STATES = {"LS": 0.0, "HS": 2.0, "AFM": 2.0}


def rocksalt_cell(repeats=(2, 1, 1), a: float = LATTICE_A):
    """Ideal rock-salt supercell: positions [N, 3] Å, cell [3, 3] Å (rows), types [N] (0 = Ni, 1 = O)."""
    fcc = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]])
    cells = np.array(list(itertools.product(*(range(r) for r in repeats))), dtype=float)
    frac_ni = (fcc[None] + cells[:, None]).reshape(-1, 3)
    frac_o = (fcc[None] + cells[:, None] + np.array([0.5, 0, 0])).reshape(-1, 3)
    frac = np.concatenate([frac_ni, frac_o]) / np.array(repeats)
    cell = np.diag(np.array(repeats, dtype=float) * a)
    types = np.array([0] * len(frac_ni) + [1] * len(frac_o))
    return frac @ cell, cell, types


def state_moments(state: str, positions: np.ndarray, types: np.ndarray, a: float = LATTICE_A) -> np.ndarray:
    """Moments [N] μB for a named spin state (O atoms carry 0)."""
    m = np.where(types == 0, STATES[state], 0.0)
    if state == "AFM":
        plane = np.rint(positions[:, 2] / (a / 2)).astype(int) % 2
        m = np.where(types == 0, np.where(plane == 0, 2.0, -2.0), 0.0)
    return m


def _switch(r):
    import jax.numpy as jnp

    u = jnp.clip((r - _R_ON) / (_R_CUT - _R_ON), 0.0, 1.0)
    return 0.5 * (1.0 + jnp.cos(jnp.pi * u))


def toy_energy(positions, cell, types, moments):
    """Toy spin–lattice energy (eV) of one frame; jax-differentiable in `positions` (Å).

    cell [3, 3] Å rows; types [N] ints; moments [N] μB.  Periodic images within r_c are summed
    (the cell must be at least r_c/2 wide, true for the supercells used here).
    """
    import jax.numpy as jnp

    n = positions.shape[0]
    shifts = jnp.asarray(list(itertools.product((-1, 0, 1), repeat=3)), dtype=positions.dtype) @ cell
    d = positions[None, :, None, :] - positions[:, None, None, :] + shifts[None, None, :, :]
    r2 = jnp.sum(d * d, axis=-1)
    self_pair = (jnp.eye(n)[:, :, None] * (jnp.sum(jnp.abs(shifts), axis=-1) == 0)[None, None, :]) > 0
    within = (r2 < _R_CUT ** 2) & ~self_pair
    r = jnp.sqrt(jnp.where(within, r2, 1.0))
    fc = jnp.where(within, _switch(r), 0.0)
    t = jnp.asarray(types)
    table_d = jnp.array([[_MORSE[(min(a, b), max(a, b))][0] for b in range(2)] for a in range(2)])
    table_r = jnp.array([[_MORSE[(min(a, b), max(a, b))][1] for b in range(2)] for a in range(2)])
    dab = table_d[t[:, None], t[None, :]][:, :, None]
    rab = table_r[t[:, None], t[None, :]][:, :, None]
    x = jnp.exp(-_ALPHA * (r - rab))
    pair = 0.5 * jnp.sum(dab * (x * x - 2.0 * x) * fc)
    g = jnp.exp(-(r - _R_G) / _LAMBDA) * fc
    m = jnp.asarray(moments)
    is_tm = (t == 0).astype(positions.dtype)
    is_o = (t == 1).astype(positions.dtype)
    onsite = jnp.sum(is_tm * (SPIN_A * m ** 2 + SPIN_B * m ** 2 * jnp.sum(g * is_o[None, :, None], axis=(1, 2))))
    coupling = 0.5 * SPIN_J * jnp.sum((is_tm * m)[:, None, None] * (is_tm * m)[None, :, None] * g)
    return pair + onsite + coupling


def toy_dataset(n_structures: int = 12, states=("LS", "HS"), repeats=(2, 1, 1), seed: int = 0,
                displacement: float = 0.08, strain: float = 0.02):
    """A cathodeml Dataset: `n_structures` distorted rock-salt cells, each labelled in every state.

    Frames carry energies (eV), forces (eV/Å), `magmom` [nf, N] μB and `spin` [nf, N, 3]
    (0, 0, m), as `cathodeml ingest` writes them, so `augment-spin` and `train` read it as
    real data.  The frame order is structure-major: frame k·len(states)+s is structure k in
    state s.
    """
    import jax

    from cathodeml.io.dataset import Dataset, System

    rng = np.random.default_rng(seed)
    base, cell0, types = rocksalt_cell(repeats)
    grad = jax.jit(jax.value_and_grad(toy_energy), static_argnums=())
    coords, cells, energies, forces, moments = [], [], [], [], []
    for _ in range(n_structures):
        deform = np.eye(3) + strain * rng.uniform(-1, 1, (3, 3))
        deform = 0.5 * (deform + deform.T)
        cell = cell0 @ deform
        pos = base @ deform + displacement * rng.standard_normal(base.shape)
        for state in states:
            m = state_moments(state, base, types)
            e, de = grad(pos, cell, types, m)
            coords.append(pos)
            cells.append(cell)
            energies.append(float(e))
            forces.append(-np.asarray(de))
            moments.append(m)
    magmom = np.array(moments)
    spin = np.zeros(magmom.shape + (3,))
    spin[..., 2] = magmom
    system = System(atom_types=types, coords=np.array(coords), cells=np.array(cells),
                    energies=np.array(energies), forces=np.array(forces),
                    frame_data={"magmom": magmom, "spin": spin}, name="toyNiO")
    return Dataset(type_map=list(TYPE_MAP), systems=[system], attrs={"source": "tests/spin_toy_data.py"})
