"""One MD run with its files: trajectory, thermo log, checkpoint, restart.

`cathodeml md` is "load a model and a structure, then run"; the run itself -- create or
continue the H5MD trajectory, draw Maxwell–Boltzmann velocities, write a thermo log and
checkpoints, and on `--restart` check that the checkpoint belongs to the same system and
settings before continuing exactly where it stopped -- is the same for any potential, so it
lives here, and the tests drive it with analytic potentials.  Files next to `traj.h5`:
`traj.h5.ckpt` (checkpoint, replaced atomically) and `traj.thermo.log` (one line per frame).

Units: Å, fs, eV, amu, K.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.io.checkpoint import MD_CHECKPOINT_KIND, read_checkpoint, write_checkpoint
from cathodeml.io.h5md import TrajectoryWriter
from cathodeml.md import integrators as integ
from cathodeml.md.potentials import Potential
from cathodeml.md.runner import Frame, RunResult, RunSettings, Simulation
from cathodeml.units import FS_PER_NS, SECONDS_PER_DAY

# Settings that must not change on --restart (n_steps may: it extends the run).
_FIXED_ON_RESTART = ("dt_fs", "stride", "ensemble", "temperature_K", "tdamp_fs", "chain_length", "sy_steps",
                     "n_loop", "n_dof")
_LOG_HEADER = "# step time_fs temperature_K potential_eV kinetic_eV conserved_eV\n"


@dataclasses.dataclass(frozen=True)
class MDSystem:
    """What is simulated: positions [N,3] Å, cell [3,3] Å, masses [N] amu, species [N] indices
    into type_map, and a fingerprint dict (model hash, ...) that a restart must match."""

    positions: np.ndarray
    cell: np.ndarray
    masses: np.ndarray
    species: np.ndarray
    type_map: list[str]
    fingerprint: dict = dataclasses.field(default_factory=dict)


def checkpoint_path(output: Path) -> Path:
    """traj.h5 → traj.h5.ckpt"""
    return output.with_name(output.name + ".ckpt")


def log_path(output: Path) -> Path:
    """traj.h5 → traj.thermo.log"""
    return output.with_suffix(".thermo.log")


def run_md(potential: Potential, system: MDSystem, settings: RunSettings, output: Path, *, seed: int = 0,
           restart: bool = False, overwrite: bool = False, write_velocities: bool = False,
           parameters: dict | None = None, velocities=None, should_stop: Callable[[], bool] = lambda: False,
           on_progress: Callable[[int], None] | None = None, on_frame: Callable[[Frame], None] | None = None,
           on_start: Callable[[int], None] | None = None, spin_search=None,
           deviation=None) -> tuple[RunResult, dict]:
    """Run MD from the system's positions (or from the checkpoint with `restart`), writing the
    trajectory `output`, its checkpoint and thermo log.  Returns (RunResult, summary dict with
    frames, observables' means and standard deviations, throughput).

    spin_search: a `cathodeml.md.respin.SpinSearchSchedule` (md --spin-search): its searches run
    every `settings.every` steps, its moments go into every frame and checkpoint, its changes
    into `traj.spin.log`.

    deviation: a `cathodeml.ensemble.MDDeviation` (md --models): the ensemble's model deviation of
    every frame goes to `traj.model_devi.out` (DeePMD-kit's columns); with its `stop` the run
    stops after the first frame above its trust_hi."""
    from cathodeml.md import respin

    output = Path(output)
    ckpt, log = checkpoint_path(output), log_path(output)
    spin_log = spin_log_path(output)
    devi_log = model_devi_path(output)
    if spin_search is not None:
        spin_search.log = spin_log
    fingerprint = _fingerprint(system, settings)
    sim = Simulation(potential, system.cell, system.masses, settings)
    if restart:
        arrays, meta = read_checkpoint(ckpt, MD_CHECKPOINT_KIND)
        _check_same_run(meta["fingerprint"], fingerprint, ckpt)
        step = int(meta["step"])
        if step >= settings.n_steps:
            raise CathodemlError(f"{ckpt} is at step {step} already; ask for more --steps (total) to continue")
        chain = integ.ChainState(jnp.asarray(arrays["chain_xi"]), jnp.asarray(arrays["chain_v_xi"]))
        if spin_search is not None:
            if "spin_moments" not in arrays:
                raise CathodemlError(f"{ckpt} was written without --spin-search; restart without it or start afresh")
            spin_search.restore(arrays["spin_moments"])
            respin.truncate_log(spin_log, step)
        if deviation is not None:
            _truncate_devi(devi_log, step)
        state = sim.initial_state(arrays["positions"], arrays["velocities"], step, chain, meta.get("neighbor_capacity"))
        rng_key = arrays["rng_key"]
        writer = TrajectoryWriter.reopen(output, keep_step=step)
        _truncate_log(log, step)
    else:
        for path in (output, ckpt):
            if path.exists() and not overwrite:
                raise CathodemlError(f"{path} exists: pass --restart to continue that run or --overwrite to start afresh")
        key = jax.random.PRNGKey(seed)
        key, sub = jax.random.split(key)
        rng_key = np.asarray(key)
        if velocities is None:
            velocities = integ.maxwell_boltzmann_velocities(sub, system.masses, settings.temperature_K, sim.n_dof)
        state = sim.initial_state(system.positions, velocities)
        ckpt.unlink(missing_ok=True)
        params = {"temperature_K": settings.temperature_K, "timestep_fs": settings.dt_fs, "stride": settings.stride,
                  "ensemble": settings.ensemble, "tdamp_fs": settings.tdamp_fs, "chain_length": settings.chain_length,
                  "n_dof": sim.n_dof, "seed": seed, "skin": settings.skin, **(parameters or {})}
        writer = TrajectoryWriter.create(output, species=system.species, masses=system.masses, type_map=system.type_map,
                                         cell=system.cell, parameters=params, write_velocities=write_velocities,
                                         spin_moments=spin_search is not None)
        log.write_text(_LOG_HEADER)
        if spin_search is not None:
            spin_log.write_text(respin.LOG_HEADER)
        if deviation is not None:
            from cathodeml.ensemble import header

            devi_log.write_text(header(f"{deviation.ensemble.size} models"))
    if on_start is not None:
        on_start(int(state.step))

    def frame_out(frame: Frame) -> None:
        writer.append(step=frame.step, time_fs=frame.time_fs, positions=frame.positions, cell=system.cell,
                      velocities=frame.velocities, observables=dataclasses.asdict(frame),
                      spin_moments=None if spin_search is None else spin_search.per_atom())
        with open(log, "a") as fh:
            fh.write(f"{frame.step} {frame.time_fs:.3f} {frame.temperature:.4f} {frame.potential_energy:.8f} "
                     f"{frame.kinetic_energy:.8f} {frame.conserved_energy:.8f}\n")
        if deviation is not None:
            from cathodeml.ensemble import format_rows

            with open(devi_log, "a") as fh:
                fh.write(format_rows(deviation(frame.step, frame.positions)))
        if on_frame is not None:
            on_frame(frame)

    def checkpoint_out(s: integ.MDState) -> None:
        extra = {} if spin_search is None else {"spin_moments": np.asarray(spin_search.host_moments)}
        write_checkpoint(ckpt, {"positions": np.asarray(s.positions), "velocities": np.asarray(s.velocities),
                                "chain_xi": np.asarray(s.chain.xi), "chain_v_xi": np.asarray(s.chain.v_xi),
                                "rng_key": np.asarray(rng_key), **extra},
                         {"step": int(s.step), "fingerprint": fingerprint, "neighbor_capacity": sim.neighbor_capacity},
                         MD_CHECKPOINT_KIND)

    with writer:
        stop = should_stop if deviation is None else (lambda: should_stop() or deviation.stop_now)
        result = sim.run(state, on_frame=frame_out, on_checkpoint=checkpoint_out, should_stop=stop,
                         on_progress=on_progress, emit_first_frame=not restart, respin=spin_search,
                         respin_every=0 if spin_search is None else spin_search.settings.every)
        n_frames = writer.n_frames
    summary = _summary(log, result, settings, n_frames)
    if spin_search is not None:
        summary["spin_search"] = _spin_summary(spin_log)
    if deviation is not None:
        summary["model_deviation"] = _devi_summary(devi_log, deviation)
    return result, summary


def model_devi_path(output: Path) -> Path:
    """traj.h5 → traj.model_devi.out (md --models: one line per frame, DeePMD-kit's columns)"""
    return output.with_suffix(".model_devi.out")


def _truncate_devi(path: Path, step: int) -> None:
    """Keep the header and the rows up to `step` (a restart rewrites what came after)."""
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    path.write_text("".join(ln for ln in lines if ln.startswith("#") or (ln.split() and int(ln.split()[0]) <= step)))


def _devi_summary(path: Path, deviation) -> dict:
    """Frames, the largest max_devi_f, and the frames above trust_hi over the whole run (restarts included)."""
    from cathodeml.ensemble import read_model_devi

    devi = read_model_devi(path)
    hi = deviation.trust_hi
    above = devi[devi[:, 4] > hi, 0].astype(int).tolist() if hi is not None else []
    return {"file": str(path), "models": deviation.ensemble.size, "frames": int(devi.shape[0]),
            "max_devi_f_max": float(devi[:, 4].max()) if devi.size else float("nan"),
            "max_devi_f_mean": float(devi[:, 4].mean()) if devi.size else float("nan"),
            "trust_hi": hi, "frames_above_trust_hi": len(above), "first_above_step": above[0] if above else None,
            "stopped_at_trust_hi": deviation.stop_now}


def spin_log_path(output: Path) -> Path:
    """traj.h5 → traj.spin.log (md --spin-search: one line per search)"""
    return output.with_suffix(".spin.log")


def _spin_summary(spin_log: Path) -> dict:
    """Searches and changes over the whole run (restarts included), from traj.spin.log."""
    rows = [ln.split() for ln in spin_log.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    jumps = [float(r[3]) for r in rows if int(r[4]) > 0]
    return {"searches": len(rows), "changes": len(jumps), "atoms_changed": sum(int(r[4]) for r in rows),
            "energy_jumps_eV": float(np.sum(jumps)) if jumps else 0.0,
            "search_seconds": float(sum(float(r[6]) for r in rows)), "log": str(spin_log)}


def _fingerprint(system: MDSystem, settings: RunSettings) -> dict:
    fixed = {k: getattr(settings, k) for k in _FIXED_ON_RESTART}
    return {"n_atoms": int(len(system.species)), "species": np.asarray(system.species).tolist(),
            "type_map": list(system.type_map), "cell": np.round(np.asarray(system.cell), 10).tolist(),
            "settings": fixed, **{k: v for k, v in system.fingerprint.items()}}


def _check_same_run(saved: dict, now: dict, ckpt: Path) -> None:
    saved = json.loads(json.dumps(saved))
    now = json.loads(json.dumps(now))
    for key in sorted(set(saved) | set(now)):
        if key == "settings":
            for name in _FIXED_ON_RESTART:
                if saved["settings"].get(name) != now["settings"].get(name):
                    raise CathodemlError(f"{ckpt} was written with {name} = {saved['settings'].get(name)}, not "
                                         f"{now['settings'].get(name)}; restart with the original settings")
        elif saved.get(key) != now.get(key):
            raise CathodemlError(f"{ckpt} belongs to a different run ({key} differs); restart with the same model, "
                                 "structure and --supercell, or start afresh with --overwrite")


def _truncate_log(log: Path, step: int) -> None:
    if not log.exists():
        log.write_text(_LOG_HEADER)
        return
    lines = log.read_text().splitlines(keepends=True)
    kept = [ln for ln in lines if ln.startswith("#") or (ln.split() and int(ln.split()[0]) <= step)]
    log.write_text("".join(kept))


def _summary(log: Path, result: RunResult, settings: RunSettings, n_frames: int) -> dict:
    data = np.loadtxt(log, ndmin=2) if log.exists() else np.zeros((0, 6))
    cols = {"temperature_K": 2, "potential_energy_eV": 3, "kinetic_energy_eV": 4, "conserved_energy_eV": 5}
    obs = {}
    for name, c in cols.items():
        if data.shape[0]:
            obs[name] = {"mean": float(data[:, c].mean()), "std": float(data[:, c].std())}
    if data.shape[0] > 1:
        obs["conserved_energy_drift_eV"] = float(data[-1, 5] - data[0, 5])
    per_s = result.steps_done / result.wall_s if result.wall_s > 0 else 0.0
    return {"steps_done": result.steps_done, "final_step": int(result.state.step), "frames": n_frames,
            "neighbor_builds": result.neighbor_builds, "wall_s": result.wall_s, "steps_per_s": per_s,
            "ns_per_day": per_s * settings.dt_fs / FS_PER_NS * SECONDS_PER_DAY, "stopped_early": result.stopped,
            "observables": obs}
