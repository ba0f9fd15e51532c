"""The training loop: one jitted Adam step per batch, checkpoints that restart bit for bit.

Design.  Everything a step needs lives on the device before the loop starts: per system the
coordinates, cells, labels and the model's neighbour lists of *all* its frames (built once, on the
host, with one capacity per system).  A step receives only the batch's frame indices, the learning
rate and the three loss prefactors -- small traced values -- so each system shape compiles
exactly once and nothing else crosses between host and device inside the loop, except the
metrics fetched at display steps.  Energies, forces and virials come from the model's one
energy path (`model.energy_forces_virial` on real atoms, the virtual spin atoms placed inside it
from the frame's host moments), and only real atoms carry labels.
Several devices split each batch along frames (jax sharding; parameters and data replicated),
which is the same mean gradient as one device; across hosts (`start_distributed`) the mesh spans
every process's devices, each process draws the same global batch from the seeded sampler but
places only its own devices' frame indices, and only process 0 writes files.  The random state
(numpy PCG64 for batches, stored in the checkpoint with the optimiser state and the step) makes
`--restart` continue exactly the run that was interrupted.  No printing here: the caller passes
`progress` and `should_stop` hooks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cathodeml.errors import CathodemlError
from cathodeml.io import checkpoint as checkpoint_file
from cathodeml.io.atomic import atomic_output
from cathodeml.model.config import ModelConfig
from cathodeml.model.neighbors import build_neighbor_lists
from cathodeml.model.potential import default_stats, energy, energy_forces_virial, init_params
from cathodeml.model.stats import descriptor_stats
from cathodeml.train.config import TrainConfig
from cathodeml.train.data import (FrameSampler, LabelledSystem, auto_sel, energy_bias)
from cathodeml.train.loss import ExponentialDecay, energy_force_virial_loss, prefactors


CHECKPOINT_KIND = checkpoint_file.CHECKPOINT_KIND


# ----------------------------------------------------------------------------- model set-up


def model_config_for(settings, type_map: list[str], systems: list[LabelledSystem]) -> ModelConfig:
    """The ModelConfig of a run: `sel` resolved ("auto" from the data; a list given for the real
    types only is extended to the virtual `<El>_spin` types with their host element's value)."""
    from cathodeml import spin

    n_types = len(type_map)
    if isinstance(settings.sel, str):
        sel = auto_sel(systems, settings.rcut, n_types, settings.sel)
    else:
        sel = list(settings.sel)
        if len(sel) < n_types:
            real = [t for t in type_map if not spin.is_virtual_type(t)]
            if len(sel) != len(real):
                raise CathodemlError(f"model.sel has {len(sel)} entries for {len(real)} element types "
                                     f"({','.join(real)}); give one per type or 'auto'")
            by_name = dict(zip(real, sel))
            sel = [by_name[t] if t in by_name else by_name[spin.host_element(t)] for t in type_map]
        elif len(sel) > n_types:
            raise CathodemlError(f"model.sel has {len(sel)} entries but the type map {','.join(type_map)} "
                                 f"has {n_types}")
    return ModelConfig(
        type_map=tuple(type_map), sel=tuple(int(s) for s in sel), rcut=settings.rcut, rcut_smth=settings.rcut_smth,
        embedding_neurons=tuple(settings.embedding_neurons), axis_neuron=settings.axis_neuron,
        type_one_side=settings.type_one_side, embedding_resnet_dt=settings.embedding_resnet_dt,
        fitting_neurons=tuple(settings.fitting_neurons), fitting_resnet_dt=settings.fitting_resnet_dt,
        activation=settings.activation, precision=settings.precision,
    )


def prepare_neighbours(config: ModelConfig, systems: list[LabelledSystem]) -> None:
    """Build every frame's neighbour list once (host, vesin) and attach it to its system."""
    for s in systems:
        cells = None if s.nopbc else s.cells
        s.neighbours = build_neighbor_lists(s.all_coords(), cells, s.all_types(), config.rcut, config.ntypes)


def initial_model(config: ModelConfig, systems: list[LabelledSystem], seed: int, stat_frames: int) -> tuple[dict, dict]:
    """Fresh parameters (from `seed`) and statistics: davg/dstd from up to `stat_frames` frames
    per system (1/Å) and the per-type energy bias (eV) by least squares over all training frames,
    fitted on the real types only (virtual spin types get 0: their count is tied to their hosts')."""
    params = init_params(config, jax.random.PRNGKey(seed))
    stats = default_stats(config)
    stats["davg"], stats["dstd"] = descriptor_stats(
        config, [(s.all_coords()[:stat_frames], None if s.nopbc else s.cells[:stat_frames], s.all_types())
                 for s in systems])
    stats["type_bias"] = energy_bias(systems, config.ntypes)
    return params, stats


# ----------------------------------------------------------------------------- device data and the step


def _take(nbr, frames):
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[frames], nbr)


@dataclasses.dataclass
class DeviceGroup:
    """Systems with identical atoms (types, order, virtual atoms), their frames stacked on the
    device (leading frame axis) with one neighbour-list capacity, so they share one compiled step.
    A group without force labels (`has_force` False) holds no "forces" array and trains on energies
    only; a spin group holds the host moments of every frame in "spin_moments" and its `sites`."""

    n_real: int
    sites: object
    has_virial: bool
    arrays: dict
    has_force: bool = True


def _group_key(s: LabelledSystem):
    hosts = () if s.sites is None else tuple(int(h) for h in s.sites.host_index)
    return (tuple(int(t) for t in s.all_types()), hosts, s.nopbc, s.virials is not None, s.forces is not None)


def device_groups(systems: list[LabelledSystem], sharding=None) -> tuple[list[DeviceGroup], list[tuple[int, int]]]:
    """Stack systems of identical atoms into device groups; return (groups, [(group, first frame)] per system)."""
    from cathodeml.model.neighbors import with_capacity

    put = (lambda x: jax.device_put(x, sharding)) if sharding is not None else jnp.asarray
    keys, members = [], []
    where = []
    for i, s in enumerate(systems):
        key = _group_key(s)
        if key not in keys:
            keys.append(key)
            members.append([])
        g = keys.index(key)
        where.append((g, sum(systems[j].n_frames for j in members[g])))
        members[g].append(i)
    groups = []
    for idx in members:
        parts = [systems[i] for i in idx]
        capacity = tuple(int(c) for c in np.max([p.neighbours.capacity for p in parts], axis=0))
        nbrs = [with_capacity(p.neighbours, capacity) if tuple(p.neighbours.capacity) != capacity else p.neighbours
                for p in parts]
        first = parts[0]
        arrays = {
            "coords": np.concatenate([p.coords for p in parts]),
            "cells": np.concatenate([np.zeros((p.n_frames, 3, 3)) if p.nopbc else p.cells for p in parts]),
            "energies": np.concatenate([p.energies for p in parts]),
            "virials": np.concatenate([p.virials if p.virials is not None else np.zeros((p.n_frames, 3, 3))
                                       for p in parts]),
            "nbr": jax.tree_util.tree_map(lambda *xs: np.concatenate(xs), *nbrs),
        }
        if first.forces is not None:
            arrays["forces"] = np.concatenate([p.forces for p in parts])
        if first.sites is not None:
            arrays["spin_moments"] = np.concatenate([p.spin_moments for p in parts])
        sites = None if first.sites is None else jax.tree_util.tree_map(put, first.sites)
        groups.append(DeviceGroup(first.n_real, sites, first.virials is not None,
                                  jax.tree_util.tree_map(put, arrays), has_force=first.forces is not None))
    return groups, where


def predict_batch(params, config, stats, batch, sites, has_virial, has_force):
    """(E [B] eV, F [B, n_real, 3] eV/Å or None, W [B, 3, 3] eV) of a batch through the one energy
    path (`model.energy_forces_virial`, virtual atoms placed inside); without force and virial
    labels only the energy is evaluated (no position derivative, a cheaper step)."""
    moments = batch.get("spin_moments")
    if not (has_force or has_virial):
        one = lambda pos, cell, nbr, m: energy(config, params, stats, pos, cell, nbr, moments=m, sites=sites)  # noqa: E731
        e = jax.vmap(one)(batch["coords"], batch["cells"], batch["nbr"], moments)
        return e, None, jnp.zeros(e.shape + (3, 3), e.dtype)
    one = lambda pos, cell, nbr, m: energy_forces_virial(config, params, stats, pos, cell, nbr, moments=m,  # noqa: E731
                                                         sites=sites, virial=has_virial)
    return jax.vmap(one)(batch["coords"], batch["cells"], batch["nbr"], moments)


def _batch_loss(params, config, stats, batch, n_real, sites, has_virial, pref, has_force=True):
    e, f, v = predict_batch(params, config, stats, batch, sites, has_virial, has_force)
    pred = {"energy": e, "force": f, "virial": v}
    label = {"energy": batch["energies"], "force": batch.get("forces"), "virial": batch["virials"]}
    loss, metrics = energy_force_virial_loss(pred, label, n_real, pref, has_virial, has_force=has_force)
    metrics["loss"] = loss
    return loss, metrics


def _gather(arrays, frames, batch_sharding):
    batch = jax.tree_util.tree_map(lambda x: x[frames], arrays)
    if batch_sharding is not None:
        batch = jax.tree_util.tree_map(lambda x: jax.lax.with_sharding_constraint(x, batch_sharding), batch)
    return batch


@functools.lru_cache(maxsize=None)
def adam_optimiser(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam with DeePMD-kit's (and PyTorch's) constants, then the step p <- p - lr * adam(g).

    The learning rate (1/step) is an injected hyperparameter: the host computes DeePMD-kit's
    stepwise decay (`train.loss.ExponentialDecay`) and `train_step` writes it into the state as a
    traced value, so a new rate never recompiles.  Cached, so every run gets the same (hashable)
    object and the jitted step, which takes it as a static argument, compiles once per shape.
    """
    def chain(learning_rate):
        return optax.chain(optax.scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(learning_rate))

    return optax.inject_hyperparams(chain)(learning_rate=0.0)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class TrainState:
    """What one optimisation step changes: parameters, optimiser state (Adam moments, counts and
    the injected learning rate), and the number of steps taken (int array).  A pytree."""

    params: dict
    opt_state: object
    step: object


def train_state(params, opt_state, step: int) -> TrainState:
    """A TrainState with `step` as a device integer (a traced leaf, not a static value)."""
    return TrainState(params, opt_state, jnp.asarray(step, dtype=jnp.int64))


@partial(jax.jit, static_argnames=("optimiser", "config", "n_real", "has_virial", "batch_sharding", "has_force"))
def train_step(state: TrainState, optimiser, stats, arrays, frames, lr, pref, sites, *, config, n_real, has_virial,
               batch_sharding=None, has_force=True):
    """One optimiser step on the frames `frames` of one system; returns (TrainState, metrics).

    `optimiser` is `adam_optimiser()` (static); the update is p <- p - lr * adam(g), as DeePMD-kit.
    lr (1/step) and pref [p_e, p_f, p_v] are traced, so the step compiles once per system shape.
    has_force False (a system without force labels): the force term is left out of the loss.
    """
    batch = _gather(arrays, frames, batch_sharding)
    grads, metrics = jax.grad(lambda p: _batch_loss(p, config, stats, batch, n_real, sites, has_virial, pref,
                                                    has_force), has_aux=True)(state.params)
    opt_state = state.opt_state
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
    updates, opt_state = optimiser.update(grads, opt_state, state.params)
    return TrainState(optax.apply_updates(state.params, updates), opt_state, state.step + 1), metrics


@partial(jax.jit, static_argnames=("config", "n_real", "has_virial", "has_force"))
def evaluate_batch(params, stats, arrays, frames, sites, *, config, n_real, has_virial, has_force=True):
    """Per-frame squared errors of the model on frames `frames` of a group: energy [B] (eV²),
    force summed over real atoms and components [B] (eV²/Å²; zeros without force labels),
    virial summed over components [B] (eV²)."""
    batch = _gather(arrays, frames, None)
    e, f, v = predict_batch(params, config, stats, batch, sites, has_virial, has_force)
    se_f = jnp.sum((f - batch["forces"]) ** 2, axis=(1, 2)) if has_force else jnp.zeros_like(e)
    return {"se_e": (e - batch["energies"]) ** 2, "se_f": se_f,
            "se_v": jnp.sum((v - batch["virials"]) ** 2, axis=(1, 2))}


# ----------------------------------------------------------------------------- the run


@dataclasses.dataclass
class TrainResult:
    """Outcome of `train`: final parameters, last metrics, and how the run ended."""

    params: dict
    stats: dict
    step: int
    interrupted: bool
    history: list[dict]
    seconds: float
    steps_per_second: float
    final: dict


@dataclasses.dataclass
class RunState:
    """Everything a checkpoint restores: weights, optimiser state, batch sampler, step."""

    params: dict
    opt_state: object
    stats: dict
    step: int
    sampler_state: dict | None = None


def data_fingerprint(systems: list[LabelledSystem]) -> str:
    """sha256 over the training frames' shapes, coordinates and labels (for restart checks)."""
    h = hashlib.sha256()
    for s in systems:
        for a in (s.all_types(), s.all_coords(), s.energies, s.forces):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def launched_tasks() -> int:
    """How many copies of this program the launcher started: srun's SLURM_STEP_NUM_TASKS (or
    SLURM_NTASKS inside an srun step) or mpirun's OMPI_COMM_WORLD_SIZE; 1 outside a parallel launch."""
    import os

    env = os.environ
    if "OMPI_COMM_WORLD_SIZE" in env:
        return int(env["OMPI_COMM_WORLD_SIZE"])
    if "SLURM_STEP_ID" in env:  # an srun step, not the batch script itself
        return int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    return 1


def start_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None) -> tuple[int, int]:
    """Join a multi-process run with `jax.distributed.initialize` (unset arguments are detected
    from SLURM, Open MPI or JAX_COORDINATOR_ADDRESS); returns (this process's index, process count).

    Must run before any JAX computation; a run already initialised (e.g. by a test) is kept.
    """
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize(coordinator_address, num_processes, process_id)
        except (ValueError, RuntimeError) as exc:
            raise CathodemlError(f"--distributed: jax.distributed.initialize failed ({str(exc).splitlines()[0]}); "
                                 "launch one task per host with srun or mpirun, or drop --distributed") from None
    return jax.process_index(), jax.process_count()


def _devices_and_shardings(batch_sizes: list[int]):
    devices = jax.devices()  # every process's devices when distributed; the local ones otherwise
    if len(devices) < 2:
        return 1, None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if any(b % len(devices) for b in batch_sizes):
        raise CathodemlError(f"{len(devices)} devices ({jax.process_count()} process(es)) need a batch size "
                             f"divisible by {len(devices)} (got {sorted(set(batch_sizes))}); "
                             "set training.batch_size accordingly")
    mesh = Mesh(np.array(devices), ("frames",))
    return len(devices), NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("frames"))


def _frame_indices(frames: np.ndarray, by_frames):
    """The batch's frame indices as a global array split along frames: every process knows the whole
    batch (same sampler, same seed) but places only the indices of its own devices' frames."""
    if by_frames is None:
        return frames
    return jax.make_array_from_callback(frames.shape, by_frames, lambda index: frames[index])


def _agreed(flag: bool) -> bool:
    """True when `flag` is true on any process (all processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag], dtype=np.int32))))


def train(config: ModelConfig, state: RunState, train_systems: list[LabelledSystem],
          valid_systems: list[LabelledSystem], settings: TrainConfig, *, lcurve_path: Path,
          checkpoint_path: Path, extra_checkpoint: dict | None = None, progress=None, should_stop=None) -> TrainResult:
    """Run the optimisation from `state` to settings.training.steps.

    Neighbour lists must be prepared (`prepare_neighbours`).  Writes lcurve.out (appending from
    state.step on a restart, after dropping lines past it) and checkpoints every save_freq steps,
    at the end and when `should_stop()` turns true (then returns with interrupted=True).
    `progress(step, total, info)` is called after every step; info holds the latest RMSEs.
    With several processes every one runs this (same data, same seed) and only process 0 writes
    lcurve.out and checkpoints; `should_stop` is then agreed across processes at display steps.
    """
    t_cfg, loss_cfg = settings.training, settings.loss
    schedule = ExponentialDecay(settings.learning_rate.start_lr, settings.learning_rate.stop_lr,
                                settings.learning_rate.decay_steps, t_cfg.steps)
    n_dev, replicated, by_frames = _devices_and_shardings([s.batch_size for s in train_systems])
    train_groups, train_where = device_groups(train_systems, replicated)
    valid_groups, valid_where = device_groups(valid_systems, replicated)
    n_shown = [s.n_frames if not t_cfg.valid_frames else min(s.n_frames, t_cfg.valid_frames) for s in valid_systems]
    validation = _Validation(valid_groups, valid_where, valid_systems, n_shown)
    has_virial = any(g.has_virial for g in train_groups) and (loss_cfg.start_pref_v > 0 or loss_cfg.limit_pref_v > 0)

    sampler = FrameSampler(train_systems, t_cfg.seed)
    if state.sampler_state is not None:
        sampler.set_state(state.sampler_state)
    put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jnp.asarray
    optimiser = adam_optimiser()
    current = jax.tree_util.tree_map(put, train_state(state.params, state.opt_state, state.step))
    stats_dev = jax.tree_util.tree_map(put, state.stats)
    fingerprint = data_fingerprint(train_systems)
    writer = jax.process_index() == 0
    several = jax.process_count() > 1

    def save(step: int) -> None:
        if not writer:
            return
        write_checkpoint(checkpoint_path, config, settings,
                         RunState(current.params, current.opt_state, state.stats, step, sampler.state()),
                         fingerprint, extra_checkpoint or {})

    if writer:
        _prepare_lcurve(lcurve_path, state.step, has_virial)
    history: list[dict] = []
    step = state.step
    interrupted = False
    t0 = time.perf_counter()
    first_step_time = None
    display_time = 0.0
    info: dict = {}
    with open(lcurve_path, "a") if writer else contextlib.nullcontext() as lcurve:
        while step < t_cfg.steps:
            lr = schedule(step)
            pref = prefactors(loss_cfg, lr, settings.learning_rate.start_lr)
            k, frames = sampler.next()
            g, offset = train_where[k]
            s = train_groups[g]
            current, metrics = train_step(
                current, optimiser, stats_dev, s.arrays, _frame_indices(frames + offset, by_frames), lr, pref,
                s.sites,
                config=config, n_real=s.n_real, has_virial=has_virial and s.has_virial,
                batch_sharding=by_frames, has_force=s.has_force)
            step += 1
            if first_step_time is None:
                jax.block_until_ready(current)
                first_step_time = time.perf_counter()
            shown = step % t_cfg.disp_freq == 0 or step == 1 or step == t_cfg.steps
            if shown:
                trn = _rmse(metrics, s.n_real)
                t_val = time.perf_counter()
                val = validation(current.params, stats_dev, pref, config, has_virial, trn["rmse"]) if valid_systems else None
                display_time += time.perf_counter() - t_val
                row = {"step": step, "lr": lr, "train": trn, "valid": val}
                history.append(row)
                if writer:
                    lcurve.write(_lcurve_row(row, has_virial))
                    lcurve.flush()
                info = row
            if step % t_cfg.save_freq == 0 and step < t_cfg.steps:
                save(step)
            if progress is not None:
                progress(step, t_cfg.steps, info)
            if should_stop is not None and (_agreed(should_stop()) if shown else not several and should_stop()):
                interrupted = True
                break
    jax.block_until_ready(current)
    elapsed = time.perf_counter() - t0
    timed_steps = step - state.step - 1
    busy = time.perf_counter() - first_step_time - display_time if first_step_time else 0.0
    rate = timed_steps / busy if timed_steps > 0 and busy > 0 else float("nan")
    save(step)
    params_host = jax.tree_util.tree_map(np.asarray, current.params)
    final = {}
    if valid_systems:
        pref = prefactors(loss_cfg, schedule(step), settings.learning_rate.start_lr)
        final["valid"] = validation(current.params, stats_dev, pref, config, has_virial, None, every_frame=True)
    return TrainResult(params_host, state.stats, step, interrupted, history, elapsed, rate, final)


def new_run_state(params: dict, stats: dict) -> RunState:
    """The state of a run that has not started: Adam moments zero, step 0."""
    return RunState(params=params, opt_state=adam_optimiser().init(params), stats=stats, step=0)


def _rmse(metrics: dict, n_real: int) -> dict:
    m = {k: float(v) for k, v in metrics.items()}
    out = {"rmse": float(np.sqrt(m["loss"])), "rmse_e": float(np.sqrt(m["mse_e"]) / n_real),
           "rmse_f": float(np.sqrt(m["mse_f"])) if "mse_f" in m else float("nan")}
    if "mse_v" in m:
        out["rmse_v"] = float(np.sqrt(m["mse_v"]) / n_real)
    return out


class _Validation:
    """Validation RMSEs pooled over frames, evaluated in fixed-size chunks (one compilation per group)."""

    chunk = 4

    def __init__(self, groups, where, systems, n_shown):
        self.groups, self.where, self.systems, self.n_shown = groups, where, systems, n_shown

    def __call__(self, params, stats, pref, config, has_virial, train_rmse, every_frame: bool = False) -> dict:
        """{"rmse_e" eV/atom, "rmse_f" eV/Å, ["rmse_v" eV/atom], "rmse" √loss} over the shown frames."""
        se = {"e": 0.0, "f": 0.0, "v": 0.0}
        n_frames = n_force = 0
        for s, (g, offset), shown in zip(self.systems, self.where, self.n_shown):
            n = s.n_frames if every_frame else shown
            group = self.groups[g]
            for start in range(0, n, self.chunk):
                take = min(self.chunk, n - start)
                frames = offset + np.minimum(np.arange(start, start + self.chunk), n - 1)
                m = evaluate_batch(params, stats, group.arrays, frames, group.sites, config=config,
                                   n_real=s.n_real, has_virial=has_virial and group.has_virial,
                                   has_force=group.has_force)
                m = {k: np.asarray(v)[:take] for k, v in m.items()}
                se["e"] += float(np.sum(m["se_e"])) / s.n_real ** 2
                se["f"] += float(np.sum(m["se_f"]))
                se["v"] += float(np.sum(m["se_v"])) / s.n_real ** 2
            n_frames += n
            n_force += 3 * n * s.n_real if group.has_force else 0
        out = {"rmse_e": np.sqrt(se["e"] / n_frames), "rmse_f": np.sqrt(se["f"] / n_force) if n_force else np.nan}
        mse_e_norm = se["e"] / n_frames  # ⟨ΔE²⟩/N² averaged; the loss uses ⟨ΔE²⟩/N
        n_mean = sum(s.n_real for s in self.systems) / len(self.systems)
        loss = pref[0] * mse_e_norm * n_mean + (pref[1] * out["rmse_f"] ** 2 if n_force else 0.0)
        if has_virial:
            out["rmse_v"] = np.sqrt(se["v"] / n_frames)
            loss += pref[2] * se["v"] / n_frames * n_mean
        out["rmse"] = np.sqrt(loss)
        return {k: float(v) for k, v in out.items()}


def _lcurve_row(row: dict, has_virial: bool) -> str:
    from cathodeml.train.loss import lcurve_line

    keys = ["rmse", "rmse_e", "rmse_f"] + (["rmse_v"] if has_virial else [])
    trn = [row["train"].get(k, float("nan")) for k in keys]
    val = [row["valid"].get(k, float("nan")) for k in keys] if row["valid"] else [float("nan")] * len(keys)
    return lcurve_line(row["step"], val, trn, row["lr"])


def _prepare_lcurve(path: Path, step: int, has_virial: bool) -> None:
    """Fresh lcurve.out with its header at step 0; on a restart keep only rows up to `step`."""
    from cathodeml.train.loss import lcurve_header

    if step == 0 or not path.exists():
        with atomic_output(path) as tmp:
            tmp.write_text(lcurve_header(has_virial))
        return
    kept = [line for line in path.read_text().splitlines(keepends=True)
            if line.startswith("#") or (line.split() and int(line.split()[0]) <= step)]
    with atomic_output(path) as tmp:
        tmp.write_text("".join(kept))


# ----------------------------------------------------------------------------- checkpoints


def write_checkpoint(path: Path, config: ModelConfig, settings: TrainConfig, state: RunState, fingerprint: str,
                     extra: dict) -> None:
    """Write a restart file atomically (`cathodeml.io.checkpoint`): params, optimiser state and
    stats as arrays named by their place in the model (e.g. params/fitting/0/0/w), the sampler
    state, step, both configs and the data fingerprint as JSON."""
    meta = {"step": int(state.step), "model": config.to_dict(), "settings": settings.to_dict(),
            "sampler": state.sampler_state, "fingerprint": fingerprint, **extra}
    trees = {"params": named_arrays(state.params), "opt_state": named_arrays(state.opt_state),
             "stats": {k: np.asarray(v) for k, v in state.stats.items()}}
    checkpoint_file.write_checkpoint(path, trees, meta)


def read_checkpoint(path: Path) -> tuple[ModelConfig, dict, RunState]:
    """(model config, metadata dict, RunState) from a checkpoint written by `write_checkpoint`
    (or by an older cathodeml, whose arrays were named by leaf position)."""
    trees, meta = checkpoint_file.read_checkpoint(path)
    config = ModelConfig.from_dict(meta["model"])
    template = init_params(config, jax.random.PRNGKey(0))
    opt_template = adam_optimiser().init(template)
    try:
        if meta.get("layout") is None:  # leaf-position layout: params and bare Adam state, in flattening order
            params = _unflatten(template, trees["params"])
            adam = _unflatten(optax.scale_by_adam().init(template), trees["opt_state"])
            opt_state = opt_template._replace(count=adam.count, inner_state=(adam,) + opt_template.inner_state[1:])
        else:
            params = _from_named(template, trees["params"])
            opt_state = _from_named(opt_template, trees["opt_state"])
    except (KeyError, ValueError):
        raise CathodemlError(f"{path}: checkpoint does not match its model configuration (corrupt file?)") from None
    return config, meta, RunState(params, opt_state, dict(trees["stats"]), int(meta["step"]), meta["sampler"])


def _key_name(key) -> str:
    """The name of one pytree key (dict key, list index, NamedTuple field) as an HDF5 name."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    raise TypeError(f"unsupported pytree key {key!r}")


def named_arrays(tree) -> dict:
    """A pytree as nested dicts of numpy arrays keyed by its dict keys, list indices ("0", ...)
    and NamedTuple fields: what `cathodeml.io.checkpoint` stores by name."""
    out: dict = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        *parents, last = [_key_name(k) for k in path]
        node = out
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = np.asarray(leaf)
    return out


def _from_named(template, named: dict):
    """`template`'s pytree with every leaf read from `named` (see `named_arrays`) at its path;
    KeyError for a missing array, ValueError for a shape that differs from the template's."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    leaves = []
    for path, like in paths:
        node = named
        for key in path:
            node = node[_key_name(key)]
        if np.shape(node) != np.shape(like):
            raise ValueError(f"{jax.tree_util.keystr(path)}: shape {np.shape(node)}, expected {np.shape(like)}")
        leaves.append(np.asarray(node))
    return jax.tree_util.tree_unflatten(treedef, leaves)


def _unflatten(template, group: dict):
    """`template`'s pytree from arrays named by leaf position ("00000", ...): older checkpoints."""
    leaves, treedef = jax.tree_util.tree_flatten(template)
    stored = [group[f"{i:05d}"] for i in range(len(group))]
    if len(stored) != len(leaves) or any(np.shape(a) != np.shape(b) for a, b in zip(stored, leaves)):
        raise ValueError("leaf count or shapes differ from the model configuration")
    return jax.tree_util.tree_unflatten(treedef, [np.asarray(a) for a in stored])


# ----------------------------------------------------------------------------- setting up a run


@dataclasses.dataclass
class RunPlan:
    """Everything `train` needs, assembled from config, data files and (optionally) a checkpoint."""

    config: ModelConfig
    settings: TrainConfig
    state: RunState
    train_systems: list[LabelledSystem]
    valid_systems: list[LabelledSystem]
    spin: dict | None
    data_paths: list[str]
    valid_paths: list[str]
    restarted_from: str | None = None


def _read_all(paths: list[str], what: str, type_map=()):
    from cathodeml.io.dataset import read_dataset

    if not paths:
        raise CathodemlError(f"no {what} data given; pass --data FILE (or list training.data in the config)")
    return [(str(p), read_dataset(p, type_map)) for p in paths]


def _unified_type_map(requested: tuple[str, ...], datasets) -> list[str]:
    from cathodeml import spin

    present: list[str] = []
    for _, ds in datasets:
        for s in ds.systems:
            for t in np.unique(s.atom_types):
                name = ds.type_map[t]
                if name not in present:
                    present.append(name)
    if not requested:
        real = [n for n in present if not spin.is_virtual_type(n)]
        return real + [n for n in present if spin.is_virtual_type(n)]
    type_map = list(requested) + [n for n in present if spin.is_virtual_type(n) and n not in requested]
    missing = [n for n in present if n not in type_map]
    if missing:
        raise CathodemlError(f"species {','.join(missing)} are in the data but not in model.type_map "
                             f"{','.join(requested)}; add them or leave type_map empty")
    return type_map


def _spin_of(datasets) -> dict | None:
    from cathodeml import spin

    found = {json.dumps(None if (s := spin.dataset_spin_settings(ds)) is None else s.to_dict(), sort_keys=True)
             for _, ds in datasets}
    if len(found) > 1:
        raise CathodemlError("the data files mix spin settings (or spin and plain data); augment all of them "
                             "with the same `cathodeml augment-spin` options")
    return json.loads(found.pop())


def _as_systems(datasets, type_map: list[str]) -> list[LabelledSystem]:
    from cathodeml.io.dataset import Dataset, remap_types
    from cathodeml.train.data import labelled_systems

    out = []
    for path, ds in datasets:
        systems = [dataclasses.replace(s, atom_types=remap_types(s.atom_types, ds.type_map, type_map, where=path),
                                       name=f"{Path(path).name}:{s.name}" if len(datasets) > 1 else s.name)
                   for s in ds.systems]
        out += labelled_systems(Dataset(type_map, systems, ds.attrs), path)
    return out


def plan_run(settings: TrainConfig, restart: str | None = None) -> RunPlan:
    """Read the data, split validation, resolve sel, build neighbour lists and either fresh
    parameters and statistics or the state of `restart` (a checkpoint)."""
    from cathodeml.train.data import assign_batch_sizes, split_validation

    t = settings.training
    # model.type_map also names the types of deepmd/npy systems that have no type_map.raw
    train_sets = _read_all(list(t.data), "training", settings.model.type_map)
    valid_sets = _read_all(list(t.valid_data), "validation", settings.model.type_map) if t.valid_data else []
    spin = _spin_of(train_sets + valid_sets)
    ckpt = read_checkpoint(Path(restart)) if restart else None
    type_map = list(ckpt[0].type_map) if ckpt else _unified_type_map(settings.model.type_map, train_sets + valid_sets)
    systems = _as_systems(train_sets, type_map)
    if valid_sets:
        train_systems, valid_systems = systems, _as_systems(valid_sets, type_map)
    else:
        train_systems, valid_systems = split_validation(systems, t.validation_fraction,
                                                        np.random.Generator(np.random.PCG64(t.seed + 1)))
    assign_batch_sizes(train_systems, t.batch_size)
    assign_batch_sizes(valid_systems, 1)
    if ckpt:
        config, meta, state = ckpt
        if meta.get("fingerprint") != data_fingerprint(train_systems):
            raise CathodemlError(f"{restart} was written for different training data (or another seed / "
                                 "validation split); restart with the same data and config")
    else:
        config = model_config_for(settings.model, type_map, train_systems)
    prepare_neighbours(config, train_systems + valid_systems)
    if not ckpt:
        params, stats = initial_model(config, train_systems, settings.model.seed, t.stat_frames)
        state = new_run_state(params, stats)
    return RunPlan(config, settings, state, train_systems, valid_systems, spin,
                   [p for p, _ in train_sets], [p for p, _ in valid_sets], restart)
