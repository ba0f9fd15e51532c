"""The training step: one jitted optax update of a pytree train state on a batch of one device group.

Why this shape.  Everything a step needs lives on the device before the loop starts
(`device_groups`): per group of systems with identical atoms, the coordinates, cells, labels and
the model's neighbour lists of *all* its frames, stacked along frames with one neighbour-list
capacity.  A step receives only the batch's frame indices, the learning rate and the three loss
prefactors -- small traced values -- so each group shape compiles exactly once and nothing else
crosses between host and device inside the loop.  Energies, forces and virials come from the
model's one energy path (`model.energy_forces_virial` on real atoms, the virtual spin atoms placed
inside it from the frame's host moments; `predict_batch`, shared with `cathodeml test`), and only
real atoms carry labels.  The update is an optax chain (Adam's scaling, then the learning rate as
an injected hyperparameter) applied to a `TrainState` pytree of parameters, optimiser state and
step, as in flax, so `train_step` is a pure function state -> state that jit can trace whole.
The array layout of a group (keys "coords", "nbr", ...) is written here, once, next to the
functions that read it; the loop only passes groups through.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cathodeml.model.potential import energy, energy_forces_virial
from cathodeml.train.data import LabelledSystem
from cathodeml.train.loss import energy_force_virial_loss


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


def device_groups(systems: list[LabelledSystem], sharding=None, on_host: bool = False
                  ) -> tuple[list[DeviceGroup], list[tuple[int, int]]]:
    """Stack systems of identical atoms into device groups; return (groups, [(group, first frame)] per system).
    on_host: leave the arrays as numpy (a streamed batch: the jitted step transfers them when called)."""
    from cathodeml.model.neighbors import with_capacity

    put = ((lambda x: x) if on_host else (lambda x: jax.device_put(x, sharding)) if sharding is not None
           else jnp.asarray)
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


@partial(jax.jit, static_argnames=("optimiser", "config", "n_real", "has_virial", "batch_sharding", "has_force"))
def ensemble_train_step(states: TrainState, optimiser, stats, arrays, frames, lr, pref, sites, *, config, n_real,
                        has_virial, batch_sharding=None, has_force=True):
    """`train_step` for K models at once: `states` carries a leading member axis (params, Adam
    moments, step), everything else -- the batch, lr, prefactors, statistics -- is shared, so one
    compiled program updates every member on the same frames; metrics get the member axis too."""
    def one(state):
        return train_step(state, optimiser, stats, arrays, frames, lr, pref, sites, config=config, n_real=n_real,
                          has_virial=has_virial, batch_sharding=batch_sharding, has_force=has_force)

    return jax.vmap(one)(states)


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
