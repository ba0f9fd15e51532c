"""Velocity Verlet (NVE) and Nosé–Hoover chain (NVT) integrators as pure, jittable functions.

Like JAX-MD's simulate.py, a simulation is a small frozen state (a pytree) and functions that map
one state to the next, so the runner can put thousands of steps inside one `lax.while_loop` and
the same code serves any potential: the force field is handed in as a function of positions.
Unlike JAX-MD, the thermostat follows Martyna–Tuckerman–Klein / Tuckerman 2006 exactly as ASE's
`NoseHooverChainNVT` and LAMMPS do: N_f = 3N − 3 (total momentum is zero), Q₁ = N_f·k_B·T·τ²,
Q_j = k_B·T·τ², and a Suzuki–Yoshida composition with weights that really are 4th order, so the
conserved quantity we log is conserved to O(dt²) and runs can be compared with those codes.

Units throughout: positions Å, velocities Å/fs, forces eV/Å, masses amu, energies eV, time fs,
thermostat velocities 1/fs, thermostat masses eV·fs².
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.units import AMU_A2_PER_FS2_IN_EV, BOLTZMANN_EV_PER_K


# force_fn(positions [N,3] Å) -> (potential energy eV, forces [N,3] eV/Å)
ForceFn = Callable[[jax.Array], tuple[jax.Array, jax.Array]]


def _pytree(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@_pytree
@dataclasses.dataclass(frozen=True)
class ChainState:
    """Nosé–Hoover chain variables: positions xi [M] (dimensionless) and velocities v_xi [M] (1/fs)."""

    xi: jax.Array
    v_xi: jax.Array


@_pytree
@dataclasses.dataclass(frozen=True)
class MDState:
    """One MD state. positions [N,3] Å (unwrapped), velocities [N,3] Å/fs, forces [N,3] eV/Å,
    potential_energy eV, thermostat chain (zeros of length 0 for NVE), step (int)."""

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    potential_energy: jax.Array
    chain: ChainState
    step: jax.Array


@dataclasses.dataclass(frozen=True)
class NoseHooverChain:
    """Thermostat settings: target temperature (K), τ = Tdamp (fs), chain length M, degrees of
    freedom N_f, `n_loop` (n_c) sub-steps per half step and Suzuki–Yoshida `weights`."""

    temperature_K: float
    tdamp_fs: float
    n_dof: int
    chain_length: int = 3
    n_loop: int = 1
    weights: tuple[float, ...] = ()

    def __post_init__(self):
        if not self.weights:
            object.__setattr__(self, "weights", suzuki_yoshida_weights(3))

    @property
    def kT(self) -> float:
        """k_B·T in eV."""
        return BOLTZMANN_EV_PER_K * self.temperature_K

    @property
    def masses(self) -> np.ndarray:
        """Q_j in eV·fs²: Q₁ = N_f·k_B·T·τ², Q_j = k_B·T·τ² for j ≥ 2."""
        return chain_masses(self.kT, self.n_dof, self.tdamp_fs, self.chain_length)


def suzuki_yoshida_weights(n: int) -> tuple[float, ...]:
    """Suzuki–Yoshida composition weights (dimensionless, summing to 1).

    n = 1: the bare symmetric (2nd-order) step; n = 3 or 5: 4th order (Yoshida 1990, Suzuki 1991);
    n = 7: 6th order (Yoshida's solution A).
    """
    if n == 1:
        return (1.0,)
    if n == 3:
        w = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
        return (w, 1.0 - 2.0 * w, w)
    if n == 5:
        w = 1.0 / (4.0 - 4.0 ** (1.0 / 3.0))
        return (w, w, 1.0 - 4.0 * w, w, w)
    if n == 7:
        w1, w2, w3 = 0.784513610477560, 0.235573213359357, -1.17767998417887
        w4 = 1.0 - 2.0 * (w1 + w2 + w3)
        return (w1, w2, w3, w4, w3, w2, w1)
    raise ValueError(f"no Suzuki–Yoshida weights for {n} sub-steps (use 1, 3, 5 or 7)")


def chain_masses(kT: float, n_dof: int, tau_fs: float, length: int) -> np.ndarray:
    """Thermostat masses Q [length] in eV·fs² for k_B·T (eV), N_f and τ (fs)."""
    q = np.full(length, kT * tau_fs**2)
    q[0] *= n_dof
    return q


def kinetic_energy(velocities: jax.Array, masses: jax.Array) -> jax.Array:
    """½ Σ m v² in eV, for velocities [N,3] Å/fs and masses [N] amu."""
    return 0.5 * AMU_A2_PER_FS2_IN_EV * jnp.sum(masses[:, None] * velocities**2)


def temperature(velocities: jax.Array, masses: jax.Array, n_dof: int) -> jax.Array:
    """Instantaneous temperature 2·KE/(N_f·k_B) in K."""
    return 2.0 * kinetic_energy(velocities, masses) / (n_dof * BOLTZMANN_EV_PER_K)


def chain_energy(chain: ChainState, thermostat: NoseHooverChain) -> jax.Array:
    """Thermostat contribution to the conserved quantity in eV:
    Σ ½ Q_j v_j² + N_f k_B T ξ₁ + k_B T Σ_{j≥2} ξ_j."""
    q = jnp.asarray(thermostat.masses)
    kT = thermostat.kT
    return (0.5 * jnp.sum(q * chain.v_xi**2) + thermostat.n_dof * kT * chain.xi[0]
            + kT * jnp.sum(chain.xi[1:]))


def conserved_energy(state: MDState, masses: jax.Array, thermostat: NoseHooverChain | None) -> jax.Array:
    """KE + PE (+ thermostat energy for NVT), in eV: constant along exact trajectories."""
    total = kinetic_energy(state.velocities, masses) + state.potential_energy
    if thermostat is not None:
        total = total + chain_energy(state.chain, thermostat)
    return total


def empty_chain(length: int = 0) -> ChainState:
    """Chain variables at rest (all zeros) for a chain of `length` thermostats."""
    return ChainState(xi=jnp.zeros(length), v_xi=jnp.zeros(length))


def init_state(positions, velocities, force_fn: ForceFn, thermostat: NoseHooverChain | None = None, step: int = 0) -> MDState:
    """State at rest of the thermostat, with forces evaluated at `positions` (Å) by `force_fn`."""
    positions = jnp.asarray(positions, dtype=jnp.float64)
    energy, forces = force_fn(positions)
    length = thermostat.chain_length if thermostat is not None else 0
    return MDState(positions=positions, velocities=jnp.asarray(velocities, dtype=jnp.float64), forces=forces,
                   potential_energy=energy, chain=empty_chain(length), step=jnp.asarray(step, dtype=jnp.int64))


def nose_hoover_chain_propagate(velocities: jax.Array, masses: jax.Array, chain: ChainState,
                                thermostat: NoseHooverChain, dt: float) -> tuple[jax.Array, ChainState]:
    """Apply exp(iL_NHC·dt) (dt in fs): the chain acts on the particle velocities (Å/fs) by one
    uniform scaling per sub-step.  n_loop × len(weights) symmetric sub-steps, each of length
    w·dt/n_loop; inside each, chain velocities are kicked from the end of the chain to the start,
    the particles scaled, and the kicks replayed from start to end (Tuckerman 2006, Eqs. 29–31)."""
    q = jnp.asarray(thermostat.masses)
    kT = thermostat.kT
    m = thermostat.chain_length
    ke2 = 2.0 * kinetic_energy(velocities, masses)  # Σ m v² in eV
    xi, v = chain.xi, chain.v_xi
    scale = jnp.asarray(1.0)

    def force_on(j, v, ke2):
        if j == 0:
            return (ke2 - thermostat.n_dof * kT) / q[0]
        return (q[j - 1] * v[j - 1] ** 2 - kT) / q[j]

    def kick(j, v, ke2, delta):
        if j < m - 1:
            v = v.at[j].multiply(jnp.exp(-0.25 * delta * v[j + 1]))
        v = v.at[j].add(0.5 * delta * force_on(j, v, ke2))
        if j < m - 1:
            v = v.at[j].multiply(jnp.exp(-0.25 * delta * v[j + 1]))
        return v

    for _ in range(thermostat.n_loop):
        for w in thermostat.weights:
            delta = w * dt / thermostat.n_loop
            for j in reversed(range(m)):
                v = kick(j, v, ke2, delta)
            factor = jnp.exp(-delta * v[0])
            scale = scale * factor
            ke2 = ke2 * factor**2
            xi = xi + delta * v
            for j in range(m):
                v = kick(j, v, ke2, delta)
    return velocities * scale, ChainState(xi=xi, v_xi=v)


def _verlet(state: MDState, force_fn: ForceFn, masses: jax.Array, dt: float) -> MDState:
    inv_m = 1.0 / (masses[:, None] * AMU_A2_PER_FS2_IN_EV)  # (eV/Å → Å/fs²) per atom
    v = state.velocities + 0.5 * dt * state.forces * inv_m
    x = state.positions + dt * v
    energy, forces = force_fn(x)
    v = v + 0.5 * dt * forces * inv_m
    return dataclasses.replace(state, positions=x, velocities=v, forces=forces, potential_energy=energy,
                               step=state.step + 1)


def velocity_verlet_step(state: MDState, force_fn: ForceFn, masses: jax.Array, dt: float) -> MDState:
    """One NVE step of length dt (fs): half kick, drift, force evaluation, half kick."""
    return _verlet(state, force_fn, masses, dt)


def nose_hoover_chain_step(state: MDState, force_fn: ForceFn, masses: jax.Array, dt: float,
                           thermostat: NoseHooverChain) -> MDState:
    """One NVT step of length dt (fs): exp(iL_NHC dt/2) · velocity Verlet · exp(iL_NHC dt/2)."""
    v, chain = nose_hoover_chain_propagate(state.velocities, masses, state.chain, thermostat, 0.5 * dt)
    state = _verlet(dataclasses.replace(state, velocities=v, chain=chain), force_fn, masses, dt)
    v, chain = nose_hoover_chain_propagate(state.velocities, masses, state.chain, thermostat, 0.5 * dt)
    return dataclasses.replace(state, velocities=v, chain=chain)


def maxwell_boltzmann_velocities(key: jax.Array, masses, temperature_K: float, n_dof: int | None = None) -> jax.Array:
    """Velocities [N,3] Å/fs drawn from Maxwell–Boltzmann at `temperature_K` (K), with zero total
    momentum and rescaled so the instantaneous temperature (N_f = 3N − 3 by default) is exactly T."""
    masses = jnp.asarray(masses, dtype=jnp.float64)
    n = masses.shape[0]
    n_dof = 3 * n - 3 if n_dof is None else n_dof
    sigma = jnp.sqrt(BOLTZMANN_EV_PER_K * temperature_K / (masses * AMU_A2_PER_FS2_IN_EV))
    v = jax.random.normal(key, (n, 3), dtype=jnp.float64) * sigma[:, None]
    v = v - jnp.sum(masses[:, None] * v, axis=0) / jnp.sum(masses)
    if temperature_K <= 0 or n_dof <= 0:
        return jnp.zeros_like(v)
    t_now = temperature(v, masses, n_dof)
    return v * jnp.sqrt(temperature_K / t_now)


def degrees_of_freedom(n_atoms: int, zero_momentum: bool = True) -> int:
    """N_f = 3N − 3 when the total momentum is held at zero (periodic solids, liquids), else 3N."""
    return 3 * n_atoms - (3 if zero_momentum and n_atoms > 1 else 0)

