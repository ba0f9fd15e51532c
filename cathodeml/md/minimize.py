"""FIRE energy minimisation at fixed cell, run before MD to relax a structure onto the model.

FIRE (Bitzek et al., PRL 97, 170201 (2006)) is damped dynamics that steers the velocity towards
the force and restarts whenever it goes uphill; it needs only forces, is robust on rough learned
surfaces, and is what ASE and LAMMPS offer for this step.  The step is a pure function over a
small pytree so many steps run inside one jitted `lax.while_loop`, which also stops -- keeping
the last valid state -- when an atom leaves the neighbour list's skin/2, exactly as the MD loop
does; the host then rebuilds the list and carries on.  Fictitious dynamics: unit masses, time in
metal units (√(amu·Å²/eV) ≈ 10.18 fs), as ASE's FIRE.

Units: positions Å, forces eV/Å, energies eV.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import SimulationError
from cathodeml.md.potentials import Potential, energy_and_forces


@dataclasses.dataclass(frozen=True)
class FireSettings:
    """fmax: force tolerance (eV/Å, largest per-atom |F|); max_steps; dt/dt_max in metal time
    units; max_step: largest total displacement per step (Å); FIRE constants n_min, f_inc, f_dec,
    alpha_start, f_alpha; skin (Å) of the neighbour list."""

    fmax: float = 0.05
    max_steps: int = 2000
    dt: float = 0.1
    dt_max: float = 1.0
    max_step: float = 0.2
    n_min: int = 5
    f_inc: float = 1.1
    f_dec: float = 0.5
    alpha_start: float = 0.1
    f_alpha: float = 0.99
    skin: float = 1.0


def _pytree(cls):
    fields = [f.name for f in dataclasses.fields(cls)]
    return jax.tree_util.register_dataclass(cls, data_fields=fields, meta_fields=[])


@_pytree
@dataclasses.dataclass(frozen=True)
class FireState:
    """positions [N,3] Å, velocities [N,3] (fictitious), forces [N,3] eV/Å, energy eV, dt, alpha,
    n_positive (steps since power last went negative), step."""

    positions: jax.Array
    velocities: jax.Array
    forces: jax.Array
    energy: jax.Array
    dt: jax.Array
    alpha: jax.Array
    n_positive: jax.Array
    step: jax.Array


def fire_step(state: FireState, force_fn, settings: FireSettings) -> FireState:
    """One FIRE step: mix v towards F while the power F·v is positive (growing dt), else stop and
    shrink dt; then an Euler step with the total displacement capped at max_step (Å)."""
    f, v = state.forces, state.velocities
    power = jnp.vdot(f, v)
    f_norm = jnp.sqrt(jnp.vdot(f, f))
    v_norm = jnp.sqrt(jnp.vdot(v, v))
    uphill = power <= 0.0
    mixed = (1.0 - state.alpha) * v + state.alpha * v_norm * f / jnp.where(f_norm > 0, f_norm, 1.0)
    grow = (~uphill) & (state.n_positive > settings.n_min)
    dt = jnp.where(uphill, state.dt * settings.f_dec, jnp.where(grow, jnp.minimum(state.dt * settings.f_inc, settings.dt_max), state.dt))
    alpha = jnp.where(uphill, settings.alpha_start, jnp.where(grow, state.alpha * settings.f_alpha, state.alpha))
    n_positive = jnp.where(uphill, 0, state.n_positive + 1)
    v = jnp.where(uphill, jnp.zeros_like(v), mixed) + dt * f
    dr = dt * v
    dr_norm = jnp.sqrt(jnp.vdot(dr, dr))
    dr = jnp.where(dr_norm > settings.max_step, dr * settings.max_step / dr_norm, dr)
    x = state.positions + dr
    energy, forces = force_fn(x)
    return FireState(x, v, forces, energy, dt, alpha, n_positive, state.step + 1)


def max_force(forces) -> jax.Array:
    """Largest per-atom force magnitude (eV/Å)."""
    return jnp.sqrt(jnp.max(jnp.sum(forces * forces, axis=-1)))


def minimize(potential: Potential, positions, cell, settings: FireSettings = FireSettings(),
             chunk: int = 200) -> tuple[np.ndarray, dict]:
    """Relax positions (Å) at fixed cell (Å) until max |F| < settings.fmax (eV/Å).

    Returns (positions [N,3] Å, report {"steps", "energy_initial", "energy_final" (eV),
    "fmax_initial", "fmax_final" (eV/Å), "converged"}).  Raises SimulationError on NaN energies.
    """
    cell = jnp.asarray(cell, dtype=jnp.float64)
    half_skin2 = (0.5 * settings.skin) ** 2

    def run_chunk(state, neighbors, reference, last_step):
        force_fn = lambda x: energy_and_forces(potential, x, cell, neighbors)  # noqa: E731

        def cond(carry):
            s, moved = carry
            return (s.step < last_step) & (max_force(s.forces) >= settings.fmax) & ~moved & jnp.isfinite(s.energy)

        def body(carry):
            s, _ = carry
            new = fire_step(s, force_fn, settings)
            moved = jnp.max(jnp.sum((new.positions - reference) ** 2, axis=-1)) > half_skin2
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(moved, b, a), new, s)
            return s, moved

        return jax.lax.while_loop(cond, body, (state, jnp.asarray(False)))

    run_chunk = jax.jit(run_chunk)
    forces_at = jax.jit(lambda x, nbr: energy_and_forces(potential, x, cell, nbr))
    x = jnp.asarray(positions, dtype=jnp.float64)
    neighbors = potential.build_neighbors(np.asarray(x), np.asarray(cell), settings.skin, None)
    energy, forces = forces_at(x, neighbors)
    state = FireState(x, jnp.zeros_like(x), forces, energy, jnp.asarray(settings.dt), jnp.asarray(settings.alpha_start),
                      jnp.asarray(0), jnp.asarray(0))
    e0, f0 = float(energy), float(max_force(forces))
    reference = x
    while True:
        last = min(int(state.step) + chunk, settings.max_steps)
        state, moved = run_chunk(state, neighbors, reference, jnp.asarray(last))
        if not np.isfinite(float(state.energy)):
            raise SimulationError(f"minimisation step {int(state.step)}: the energy became NaN/inf; "
                                  "check the structure (overlapping atoms?) and the model")
        if bool(moved):
            neighbors = potential.build_neighbors(np.asarray(state.positions), np.asarray(cell), settings.skin, neighbors)
            reference = state.positions
            continue
        if float(max_force(state.forces)) < settings.fmax or int(state.step) >= settings.max_steps:
            break
    fmax = float(max_force(state.forces))
    return np.asarray(state.positions), {"steps": int(state.step), "energy_initial": e0, "energy_final": float(state.energy),
                                         "fmax_initial": f0, "fmax_final": fmax, "converged": fmax < settings.fmax}
