"""The training loop: optax steps over seeded batches, lcurve.out, and checkpoints that restart bit for bit.

Design.  `train` takes the pieces of a prepared run (`train.plan.plan_run`), puts every group of
systems on the device once (`train.step.device_groups`) and then calls the jitted
`train.step.train_step` once per batch, fetching metrics from the device only at display steps.
With several devices or processes the batch is split along frames (`train.distributed`); every
process runs this loop with the same data and seed, and only process 0 writes lcurve.out and
checkpoints.  The random state (numpy PCG64 for batches, stored in the checkpoint with the
optimiser state and the step) makes `--restart` continue exactly the run that was interrupted; the
checkpoint stores each array under its name in the pytree (`cathodeml.io.checkpoint`).  No
printing here: the caller passes `progress` and `should_stop` hooks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cathodeml.errors import CathodemlError
from cathodeml.io import checkpoint as checkpoint_file
from cathodeml.io.checkpoint import from_leaf_positions, from_named, named_arrays
from cathodeml.io.atomic import atomic_output
from cathodeml.model.config import ModelConfig
from cathodeml.model.potential import init_params
from cathodeml.train.config import TrainConfig
from cathodeml.train.data import FrameSampler, LabelledSystem
from cathodeml.train.distributed import any_process, devices_and_shardings, global_frame_indices
from cathodeml.train.loss import ExponentialDecay, prefactors
from cathodeml.train.stream import StreamedBatches, StreamSystem, stream_fingerprint
from cathodeml.train.step import (adam_optimiser, device_groups, ensemble_train_step, evaluate_batch, train_state,
                                  train_step)


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
    """sha256 over the training frames' shapes, coordinates and labels (for restart checks); for
    streamed systems over their frame numbers and energies (`train.stream.stream_fingerprint`)."""
    if systems and isinstance(systems[0], StreamSystem):
        return stream_fingerprint(systems)
    h = hashlib.sha256()
    for s in systems:
        for a in (s.all_types(), s.all_coords(), s.energies, s.forces):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def train(config: ModelConfig, state: RunState, train_systems: list[LabelledSystem],
          valid_systems: list[LabelledSystem], settings: TrainConfig, *, lcurve_path: Path,
          checkpoint_path: Path, extra_checkpoint: dict | None = None, progress=None, should_stop=None) -> TrainResult:
    """Run the optimisation from `state` to settings.training.steps.

    Neighbour lists must be prepared (`train.plan.prepare_neighbours`).  Writes lcurve.out (appending from
    state.step on a restart, after dropping lines past it) and checkpoints every save_freq steps,
    at the end and when `should_stop()` turns true (then returns with interrupted=True).
    `progress(step, total, info)` is called after every step; info holds the latest RMSEs.
    With several processes every one runs this (same data, same seed) and only process 0 writes
    lcurve.out and checkpoints; `should_stop` is then agreed across processes at display steps.
    """
    member = Member(state, settings, lcurve_path, checkpoint_path)
    return train_members(config, [member], train_systems, valid_systems, extra_checkpoint=extra_checkpoint,
                         progress=progress, should_stop=should_stop)[0]


@dataclasses.dataclass
class Member:
    """One model of a run: its state, its settings (they differ only in model.seed) and its files."""

    state: RunState
    settings: TrainConfig
    lcurve_path: Path
    checkpoint_path: Path


def train_members(config: ModelConfig, members: list[Member], train_systems: list[LabelledSystem],
                  valid_systems: list[LabelledSystem], *, extra_checkpoint: dict | None = None, progress=None,
                  should_stop=None) -> list[TrainResult]:
    """`train` for K models of one configuration on the same batches, in one program: their states are
    stacked along a leading member axis and `train.step.ensemble_train_step` (a vmap of the step) updates
    all of them at once, so the data, the neighbour lists and the compiled step are shared and one
    device call advances every member.  Every member must be at the same step with the same sampler
    state (a fresh ensemble, or the checkpoints of one interrupted together); each member writes its
    own lcurve and checkpoint, identical to those of a run of that member alone.  One member: exactly
    `train` (no member axis).  Several devices are not combined with members (train them one by one)."""
    settings = members[0].settings
    t_cfg, loss_cfg = settings.training, settings.loss
    if any(m.state.step != members[0].state.step or m.state.sampler_state != members[0].state.sampler_state
           for m in members):
        raise CathodemlError("the members' checkpoints stopped at different steps "
                             f"({', '.join(str(m.state.step) for m in members)}); train them one by one (--sequential)")
    stacked = len(members) > 1
    schedule = ExponentialDecay(settings.learning_rate.start_lr, settings.learning_rate.stop_lr,
                                settings.learning_rate.decay_steps, t_cfg.steps)
    n_dev, replicated, by_frames = devices_and_shardings([s.batch_size for s in train_systems])
    if stacked and n_dev > 1:
        raise CathodemlError(f"an ensemble trained in one program runs on one device ({n_dev} found); "
                             "train the members one by one (--sequential)")
    streamed = bool(train_systems) and isinstance(train_systems[0], StreamSystem)
    if streamed and n_dev > 1:
        raise CathodemlError(f"streamed training data (training.stream) runs on one device ({n_dev} found); "
                             "hold the data resident or train on one device")
    batches = (StreamedBatches(train_systems, config, t_cfg.seed) if streamed
               else ResidentBatches(train_systems, t_cfg.seed, replicated, by_frames))
    valid_groups, valid_where = device_groups(valid_systems, replicated)
    n_shown = [s.n_frames if not t_cfg.valid_frames else min(s.n_frames, t_cfg.valid_frames) for s in valid_systems]
    validation = _Validation(valid_groups, valid_where, valid_systems, n_shown)
    has_virial = batches.has_virial and (loss_cfg.start_pref_v > 0 or loss_cfg.limit_pref_v > 0)

    state = members[0].state
    if state.sampler_state is not None:
        batches.set_state(state.sampler_state)
    put = (lambda x: jax.device_put(x, replicated)) if replicated is not None else jnp.asarray
    optimiser = adam_optimiser()
    states = [train_state(m.state.params, m.state.opt_state, m.state.step) for m in members]
    current = jax.tree_util.tree_map(put, _stack(states) if stacked else states[0])
    step_fn = ensemble_train_step if stacked else train_step
    stats_dev = jax.tree_util.tree_map(put, state.stats)
    fingerprint = data_fingerprint(train_systems)
    writer = jax.process_index() == 0
    several = jax.process_count() > 1

    def one(tree, k: int):
        return jax.tree_util.tree_map(lambda x: x[k], tree) if stacked else tree

    def save(step: int) -> None:
        if not writer:
            return
        for k, m in enumerate(members):
            now = one(current, k)
            write_checkpoint(m.checkpoint_path, config, m.settings,
                             RunState(now.params, now.opt_state, state.stats, step, batches.state()),
                             fingerprint, extra_checkpoint or {})

    if writer:
        for m in members:
            _prepare_lcurve(m.lcurve_path, state.step, has_virial)
    histories: list[list[dict]] = [[] for _ in members]
    step = state.step
    interrupted = False
    t0 = time.perf_counter()
    first_step_time = None
    display_time = 0.0
    info: dict = {}
    with contextlib.ExitStack() as files:
        files.callback(batches.close)
        lcurves = [files.enter_context(open(m.lcurve_path, "a")) for m in members] if writer else []
        while step < t_cfg.steps:
            lr = schedule(step)
            pref = prefactors(loss_cfg, lr, settings.learning_rate.start_lr)
            s, frames = batches.next()
            current, metrics = step_fn(
                current, optimiser, stats_dev, s.arrays, frames, lr, pref,
                s.sites,
                config=config, n_real=s.n_real, has_virial=has_virial and s.has_virial,
                batch_sharding=by_frames, has_force=s.has_force)
            step += 1
            if first_step_time is None:
                jax.block_until_ready(current)
                first_step_time = time.perf_counter()
            shown = step % t_cfg.disp_freq == 0 or step == 1 or step == t_cfg.steps
            if shown:
                t_val = time.perf_counter()
                rows = []
                for i, lcurve in enumerate(lcurves or [None] * len(members)):
                    trn = _rmse(one(metrics, i), s.n_real)
                    val = (validation(one(current, i).params, stats_dev, pref, config, has_virial, trn["rmse"])
                           if valid_systems else None)
                    rows.append({"step": step, "lr": lr, "train": trn, "valid": val})
                    histories[i].append(rows[-1])
                    if lcurve is not None:
                        lcurve.write(_lcurve_row(rows[-1], has_virial))
                        lcurve.flush()
                display_time += time.perf_counter() - t_val
                info = rows[0] if not stacked else _mean_row(rows)
            if step % t_cfg.save_freq == 0 and step < t_cfg.steps:
                save(step)
            if progress is not None:
                progress(step, t_cfg.steps, info)
            if should_stop is not None and (any_process(should_stop()) if shown else not several and should_stop()):
                interrupted = True
                break
    jax.block_until_ready(current)
    elapsed = time.perf_counter() - t0
    timed_steps = step - state.step - 1
    busy = time.perf_counter() - first_step_time - display_time if first_step_time else 0.0
    rate = timed_steps / busy if timed_steps > 0 and busy > 0 else float("nan")
    save(step)
    results = []
    for k in range(len(members)):
        params = one(current, k).params
        final = {}
        if valid_systems:
            pref = prefactors(loss_cfg, schedule(step), settings.learning_rate.start_lr)
            final["valid"] = validation(params, stats_dev, pref, config, has_virial, None, every_frame=True)
        results.append(TrainResult(jax.tree_util.tree_map(np.asarray, params), state.stats, step, interrupted,
                                   histories[k], elapsed, rate, final))
    return results


class ResidentBatches:
    """Batches of systems held on the device (`train.step.device_groups`), drawn by a `FrameSampler`:
    `next()` → (the DeviceGroup, the batch's frame indices into it); `state()` is the sampler's."""

    def __init__(self, systems: list[LabelledSystem], seed: int, replicated=None, by_frames=None):
        self.groups, self.where = device_groups(systems, replicated)
        self.sampler = FrameSampler(systems, seed)
        self.by_frames = by_frames
        self.has_virial = any(g.has_virial for g in self.groups)

    def next(self):
        k, frames = self.sampler.next()
        g, offset = self.where[k]
        return self.groups[g], global_frame_indices(frames + offset, self.by_frames)

    def state(self) -> dict:
        return self.sampler.state()

    def set_state(self, state: dict) -> None:
        self.sampler.set_state(state)

    def close(self) -> None:
        pass


def _stack(trees: list):
    return jax.tree_util.tree_map(lambda *xs: jnp.stack([jnp.asarray(x) for x in xs]), *trees)


def _mean_row(rows: list[dict]) -> dict:
    """The members' display rows averaged (what the progress bar of an ensemble shows)."""
    def mean(dicts):
        return None if dicts[0] is None else {key: float(np.mean([d[key] for d in dicts])) for key in dicts[0]}

    return {**rows[0], "train": mean([r["train"] for r in rows]), "valid": mean([r["valid"] for r in rows])}


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
            params = from_leaf_positions(template, trees["params"])
            adam = from_leaf_positions(optax.scale_by_adam().init(template), trees["opt_state"])
            opt_state = opt_template._replace(count=adam.count, inner_state=(adam,) + opt_template.inner_state[1:])
        else:
            params = from_named(template, trees["params"])
            opt_state = from_named(opt_template, trees["opt_state"])
    except (KeyError, ValueError):
        raise CathodemlError(f"{path}: checkpoint does not match its model configuration (corrupt file?)") from None
    return config, meta, RunState(params, opt_state, dict(trees["stats"]), int(meta["step"]), meta["sampler"])
