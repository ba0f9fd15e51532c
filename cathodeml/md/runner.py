"""The MD loop: many jitted steps per call, neighbour lists with a skin, guards, frames, checkpoints.

The host only decides *when* things happen; the steps themselves run inside one jitted
`lax.while_loop` that goes until the next output frame and stops early -- keeping the last valid
state -- when any atom has moved more than half the skin since the neighbour list was built, or
when a guard trips (non-finite or exploding energy, runaway temperature).  A list is therefore
never used outside the range where it is exact, without a displacement check on the host after
every step.  At every checkpoint the list is rebuilt and the forces recomputed, so a run restarted
from a checkpoint repeats the uninterrupted run's arithmetic.  Everything that touches files
(frames, checkpoints) is a callback, and stopping on a signal is a flag the caller sets: this
module neither opens files nor prints.

Units: Å, fs, eV, amu, K.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import CathodemlError, SimulationError
from cathodeml.md import integrators as integ
from cathodeml.md.potentials import Potential, energy_and_forces


_OK, _REBUILD, _NONFINITE, _EXPLODED, _HOT, _CLOSE = 0, 1, 2, 3, 4, 5
_KERNELS: dict = {}


@dataclasses.dataclass(frozen=True)
class _CapacityHint:
    """Stands in for a previous neighbour list: builders only read its capacity."""

    capacity: object

    def __post_init__(self):
        if isinstance(self.capacity, list):
            object.__setattr__(self, "capacity", tuple(self.capacity))


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """MD settings: dt (fs), total steps, output stride (steps), ensemble "nvt"|"nve", target
    temperature (K), Tdamp (fs), chain length, Suzuki–Yoshida sub-steps, neighbour skin (Å),
    checkpoint interval (steps, a multiple of stride; 0 = only at the end or on a signal),
    guards: min_distance (Å) between real atoms, max_temperature_K (K; default 5·T + 500 K),
    max_energy_change (eV/atom away from the starting potential energy)."""

    dt_fs: float = 1.0
    n_steps: int = 1000
    stride: int = 100
    ensemble: str = "nvt"
    temperature_K: float = 300.0
    tdamp_fs: float = 100.0
    chain_length: int = 3
    sy_steps: int = 3
    n_loop: int = 1
    skin: float = 2.0
    checkpoint_every: int = 0
    min_distance: float = 0.5
    max_temperature_K: float | None = None
    max_energy_change: float = 2.0
    n_dof: int | None = None

    def validate(self) -> None:
        if self.dt_fs <= 0:
            raise CathodemlError(f"--dt must be positive (got {self.dt_fs} fs)")
        if self.n_steps < 0:
            raise CathodemlError("--steps must be zero or positive")
        if self.stride < 1:
            raise CathodemlError("--stride must be at least 1")
        if self.ensemble not in ("nvt", "nve"):
            raise CathodemlError(f"--ensemble must be nvt or nve (got {self.ensemble!r})")
        if self.ensemble == "nvt" and (self.temperature_K <= 0 or self.tdamp_fs <= 0 or self.chain_length < 1):
            raise CathodemlError("NVT needs a positive --temperature, a positive --tdamp and --chain ≥ 1")
        if self.checkpoint_every % self.stride:
            raise CathodemlError(f"--checkpoint-every ({self.checkpoint_every}) must be a multiple of --stride ({self.stride})")
        if self.skin <= 0:
            raise CathodemlError("--skin must be positive")


@dataclasses.dataclass(frozen=True)
class Frame:
    """One output frame (host numpy): step, time (fs), positions [N,3] Å unwrapped, velocities
    [N,3] Å/fs, and observables: temperature (K), potential/kinetic/conserved energy (eV)."""

    step: int
    time_fs: float
    positions: np.ndarray
    velocities: np.ndarray
    temperature: float
    potential_energy: float
    kinetic_energy: float
    conserved_energy: float


@dataclasses.dataclass
class RunResult:
    """What a run did: final state, steps done, neighbour-list builds, wall time (s), whether it
    stopped on request before the end."""

    state: integ.MDState
    steps_done: int
    neighbor_builds: int
    wall_s: float
    stopped: bool


def thermostat_for(settings: RunSettings, n_atoms: int) -> integ.NoseHooverChain | None:
    """The Nosé–Hoover chain for these settings (None for NVE); N_f = 3N − 3 unless set."""
    if settings.ensemble == "nve":
        return None
    n_dof = settings.n_dof if settings.n_dof is not None else integ.degrees_of_freedom(n_atoms)
    return integ.NoseHooverChain(temperature_K=settings.temperature_K, tdamp_fs=settings.tdamp_fs, n_dof=n_dof,
                                 chain_length=settings.chain_length, n_loop=settings.n_loop,
                                 weights=integ.suzuki_yoshida_weights(settings.sy_steps))


class Simulation:
    """A potential bound to a cell, masses and settings, with the jitted kernels compiled once.

    positions are Å (unwrapped), cell [3,3] Å (rows are lattice vectors), masses [N] amu.
    """

    def __init__(self, potential: Potential, cell, masses, settings: RunSettings):
        settings.validate()
        self.potential = potential
        self.cell = jnp.asarray(cell, dtype=jnp.float64)
        self.masses = jnp.asarray(masses, dtype=jnp.float64)
        self.settings = settings
        self.n_atoms = int(self.masses.shape[0])
        self.thermostat = thermostat_for(settings, self.n_atoms)
        self.n_dof = self.thermostat.n_dof if self.thermostat else (
            settings.n_dof if settings.n_dof is not None else integ.degrees_of_freedom(self.n_atoms))
        t_ref = settings.temperature_K if settings.ensemble == "nvt" else max(settings.temperature_K, 0.0)
        self.max_temperature = settings.max_temperature_K or 5.0 * t_ref + 500.0
        # Simulations of the same potential, cell, masses and settings (a restart in the same
        # process, the tests) share compiled kernels instead of compiling them again; dt, run
        # length and output cadence are arguments of the kernel, not part of it.
        kernel_settings = dataclasses.replace(settings, dt_fs=1.0, n_steps=0, stride=1, checkpoint_every=0)
        key = (potential, kernel_settings, np.asarray(masses, dtype=np.float64).tobytes(),
               np.asarray(cell, dtype=np.float64).tobytes())
        if key not in _KERNELS:
            if len(_KERNELS) >= 8:
                _KERNELS.pop(next(iter(_KERNELS)))
            _KERNELS[key] = (jax.jit(self._advance_impl), jax.jit(self._observables_impl),
                             jax.jit(lambda x, nbr: energy_and_forces(potential, x, self.cell, nbr)))
        self._advance, self._observables, self._forces = _KERNELS[key]
        self.neighbors = None
        self.reference_positions = None
        self.neighbor_builds = 0

    # --- host side -------------------------------------------------------------------------
    def rebuild_neighbors(self, positions, capacity=None) -> None:
        """Build the neighbour data (cutoff + skin) at `positions` (Å), keeping the capacity of the
        current list (or the given `capacity`, e.g. from a checkpoint) unless atoms need more."""
        positions = np.asarray(positions)
        previous = self.neighbors if capacity is None else _CapacityHint(capacity)
        self.neighbors = self.potential.build_neighbors(positions, np.asarray(self.cell), self.settings.skin, previous)
        self.reference_positions = jnp.asarray(positions)
        self.neighbor_builds += 1

    @property
    def neighbor_capacity(self):
        """Capacity of the current neighbour list (int or tuple; JSON-able), None without one."""
        cap = getattr(self.neighbors, "capacity", None)
        return list(cap) if isinstance(cap, tuple) else cap

    def initial_state(self, positions, velocities, step: int = 0, chain: integ.ChainState | None = None,
                      capacity=None) -> integ.MDState:
        """State at `positions` (Å) with `velocities` (Å/fs); forces evaluated with a new list (of
        at least `capacity`, as saved in a checkpoint, so a restart repeats the same arithmetic)."""
        self.rebuild_neighbors(positions, capacity)
        x = jnp.asarray(positions, dtype=jnp.float64)
        energy, forces = self._forces(x, self.neighbors)
        length = self.thermostat.chain_length if self.thermostat else 0
        return integ.MDState(positions=x, velocities=jnp.asarray(velocities, dtype=jnp.float64), forces=forces,
                             potential_energy=energy, chain=chain if chain is not None else integ.empty_chain(length),
                             step=jnp.asarray(step, dtype=jnp.int64))

    def refresh(self, state: integ.MDState) -> integ.MDState:
        """Rebuild the list and recompute forces at the state's positions (done at checkpoints, so
        that a restart from the checkpoint, which must build its own list, computes the same)."""
        self.rebuild_neighbors(state.positions)
        energy, forces = self._forces(state.positions, self.neighbors)
        return dataclasses.replace(state, forces=forces, potential_energy=energy)

    def observables(self, state: integ.MDState) -> dict[str, float]:
        """temperature (K), potential/kinetic/conserved energy (eV) of a state."""
        values = np.asarray(self._observables(state))
        return dict(zip(("temperature", "potential_energy", "kinetic_energy", "conserved_energy"), values.tolist()))

    def _observables_impl(self, state: integ.MDState) -> jax.Array:
        ke = integ.kinetic_energy(state.velocities, self.masses)
        return jnp.stack([2.0 * ke / (self.n_dof * integ.BOLTZMANN_EV_PER_K), state.potential_energy, ke,
                          integ.conserved_energy(state, self.masses, self.thermostat)])

    def frame(self, state: integ.MDState) -> Frame:
        obs = self.observables(state)
        step = int(state.step)
        return Frame(step=step, time_fs=step * self.settings.dt_fs, positions=np.asarray(state.positions),
                     velocities=np.asarray(state.velocities), **obs)

    # --- jitted kernel ---------------------------------------------------------------------
    def _advance_impl(self, state, neighbors, reference, target_step, energy_reference, energy_window, dt):
        half_skin2 = (0.5 * self.settings.skin) ** 2
        force_fn = lambda x: energy_and_forces(self.potential, x, self.cell, neighbors)  # noqa: E731

        def cond(carry):
            s, status = carry
            return (s.step < target_step) & (status == _OK)

        def body(carry):
            s, _ = carry
            if self.thermostat is None:
                new = integ.velocity_verlet_step(s, force_fn, self.masses, dt)
            else:
                new = integ.nose_hoover_chain_step(s, force_fn, self.masses, dt, self.thermostat)
            moved = jnp.max(jnp.sum((new.positions - reference) ** 2, axis=-1)) > half_skin2
            t = integ.temperature(new.velocities, self.masses, self.n_dof)
            close = False
            if self.potential.closest_distance is not None:
                close = self.potential.closest_distance(new.positions, self.cell, neighbors) < self.settings.min_distance
            status = jnp.select(
                [moved, ~jnp.isfinite(new.potential_energy) | ~jnp.all(jnp.isfinite(new.forces)), close,
                 jnp.abs(new.potential_energy - energy_reference) > energy_window, t > self.max_temperature],
                [_REBUILD, _NONFINITE, _CLOSE, _EXPLODED, _HOT], _OK)
            keep = status == _OK
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, s)
            return s, status

        return jax.lax.while_loop(cond, body, (state, jnp.asarray(_OK)))

    def run(self, state: integ.MDState, *, on_frame: Callable[[Frame], None] | None = None,
            on_checkpoint: Callable[[integ.MDState], None] | None = None,
            should_stop: Callable[[], bool] = lambda: False,
            on_progress: Callable[[int], None] | None = None,
            emit_first_frame: bool = True, respin: Callable[[integ.MDState], bool] | None = None,
            respin_every: int = 0) -> RunResult:
        """Run from `state` to settings.n_steps, calling on_frame every stride steps (and at the
        start), on_checkpoint every checkpoint_every steps, at the end and when should_stop()
        turns true (the run then stops at the next frame).  Raises SimulationError naming the step
        when a guard trips; frames emitted before stay valid.

        respin(state) -> changed, every `respin_every` steps (a multiple of stride) before that
        step's frame, and at the start of a new run: it may change the potential's spin states,
        after which the list is rebuilt and the forces recomputed (`md --spin-search`)."""
        st = self.settings
        t0 = time.perf_counter()
        start_step = int(state.step)
        energy_reference = float(state.potential_energy)
        energy_window = st.max_energy_change * self.n_atoms
        if self.neighbors is None:
            state = self.initial_state(state.positions, state.velocities, int(state.step), state.chain)
        if respin is not None and respin_every % st.stride:
            raise CathodemlError(f"spin searches every {respin_every} steps must fall on frames: use a multiple of "
                                 f"--stride ({st.stride})")
        if respin is not None and emit_first_frame and int(state.step) % respin_every == 0 and respin(state):
            state = self.refresh(state)
        if emit_first_frame and on_frame is not None:
            on_frame(self.frame(state))
        stalled = 0
        stopped = False
        while int(state.step) < st.n_steps:
            step_now = int(state.step)
            target = min((step_now // st.stride + 1) * st.stride, st.n_steps)
            state, status = self._advance(state, self.neighbors, self.reference_positions,
                                          jnp.asarray(target, dtype=jnp.int64), energy_reference, energy_window,
                                          jnp.asarray(st.dt_fs))
            status = int(status)
            step_now_after = int(state.step)
            if on_progress is not None and step_now_after > step_now:
                on_progress(step_now_after)
            if status == _REBUILD:
                # a rebuild with no step since the last one means one step moved an atom that far
                stalled = stalled + 1 if step_now_after == step_now else 0
                if stalled > 1:
                    raise SimulationError(f"step {step_now_after + 1}: an atom moved more than half the skin "
                                          f"({st.skin / 2:g} Å) in one step; raise --skin or lower --dt")
                self.rebuild_neighbors(state.positions)
                continue
            stalled = 0  # steps were made on the new list: the next rebuild starts a fresh count
            if status != _OK:
                raise SimulationError(self._guard_message(status, step_now_after + 1))
            if respin is not None and step_now_after % respin_every == 0 and respin(state):
                state = self.refresh(state)
            if step_now_after % st.stride == 0 or step_now_after == st.n_steps:
                if on_frame is not None:
                    on_frame(self.frame(state))
                stop = should_stop()
                due = st.checkpoint_every and step_now_after % st.checkpoint_every == 0
                if due or stop or step_now_after == st.n_steps:
                    state = self.refresh(state)
                    if on_checkpoint is not None:
                        on_checkpoint(state)
                if stop and step_now_after < st.n_steps:
                    stopped = True
                    break
        return RunResult(state=state, steps_done=int(state.step) - start_step, neighbor_builds=self.neighbor_builds,
                         wall_s=time.perf_counter() - t0, stopped=stopped)

    def _guard_message(self, status: int, step: int) -> str:
        if status == _NONFINITE:
            return f"step {step}: the energy or forces became NaN/inf; lower --dt or check the model on this structure"
        if status == _CLOSE:
            return (f"step {step}: two atoms came closer than {self.settings.min_distance:g} Å; the potential is "
                    "being driven outside its training data: lower the temperature or --dt, or --minimize first")
        if status == _EXPLODED:
            return (f"step {step}: the potential energy moved more than {self.settings.max_energy_change:g} eV/atom "
                    "away from the start; the model is extrapolating: lower the temperature or --dt, or --minimize first")
        return (f"step {step}: the temperature exceeded {self.max_temperature:.0f} K; the run is blowing up: "
                "lower --dt, check the model, or --minimize first")


