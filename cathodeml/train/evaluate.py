"""`cathodeml test`: a trained model's errors on labelled data, broken down as the papers report them.

Predictions go through the training step's own batch function (`step.predict_batch`, the
model's one energy path with virtual spin atoms placed inside it), vmapped over chunks of
frames, so a test number is exactly what training optimised.  Errors are reported per system, per element (force components of that
element's atoms), per atomic spin state (element and moment group by the one rule of
`cathodeml.spin`: signed moments split at gaps wider than STATE_GAP_MUB, as `info` and
`augment-spin` report them) and per frame spin configuration
(energies of frames with the same count of atoms in each state), in meV/atom and meV/Å.
A model trained on spin data rebuilds the virtual atoms of a plain dataset from its recorded
spin settings, so the same file can be tested with and without spin models.  Plots and JSON
are written by the command; this module only computes.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import numpy as np

from cathodeml.errors import CathodemlError, TypeMapError
from cathodeml.train.data import LabelledSystem, labelled_systems
from cathodeml.train.step import predict_batch


MEV = 1000.0


def systems_for_model(model, dataset, where: str) -> list[LabelledSystem]:
    """Labelled systems of `dataset` in the model's type map, with virtual atoms if the model has spin.

    A plain dataset tested with a spin model is augmented with the model's spin settings; an
    augmented dataset must carry the same settings as the model.
    """
    from cathodeml import spin
    from cathodeml.io.dataset import Dataset, remap_types

    data_spin = spin.dataset_spin_settings(dataset)
    if model.spin is not None:
        settings = spin.SpinSettings.from_dict(model.spin)
        if data_spin is None:
            dataset, _ = spin.augment_dataset(dataset, settings)
        elif data_spin != settings:
            raise CathodemlError(f"{where} was augmented with spin settings {data_spin.to_dict()} but the model "
                                 f"was trained with {settings.to_dict()}; test on the plain data (virtual atoms "
                                 "are rebuilt) or on data augmented like the training set")
    elif data_spin is not None:
        raise CathodemlError(f"{where} has virtual spin atoms but the model was trained without spin; "
                             "test on the stripped data (`cathodeml augment-spin --strip`)")
    model_map = list(model.config.type_map)
    systems = []
    for s in dataset.systems:
        try:
            types = remap_types(s.atom_types, dataset.type_map, model_map, where=f"{where}:{s.name}")
        except TypeMapError as exc:
            raise TypeMapError(f"{exc}; the model knows only {','.join(model_map)}") from None
        systems.append(dataclasses.replace(s, atom_types=types))
    return labelled_systems(Dataset(model_map, systems, dataset.attrs), where)


@partial(jax.jit, static_argnames=("config", "want_virial"))
def _predict_chunk(params, stats, batch, sites, *, config, want_virial):
    return predict_batch(params, config, stats, batch, sites, want_virial, True)


def predict_system(model, system: LabelledSystem, chunk: int = 8, want_virial: bool | None = None) -> tuple:
    """Model energies [nf] (eV), forces [nf, n_real, 3] (eV/Å) and, when the system has virial
    labels (or `want_virial`), virials [nf, 3, 3] (eV; else None) for every frame, through the
    training step's own energy path (`step.predict_batch`).

    Frames go through in chunks of `chunk` (the last one padded by repeating a frame, so one
    compilation serves the system).
    """
    from cathodeml.model.neighbors import build_neighbor_lists

    cfg = model.config
    nf = system.n_frames
    cells = np.zeros((nf, 3, 3)) if system.nopbc else system.cells
    chunk = min(chunk, nf)
    energies, forces, virials = [], [], []
    want_virial = system.virials is not None if want_virial is None else want_virial
    nbr_all = build_neighbor_lists(system.all_coords(), None if system.nopbc else system.cells, system.all_types(),
                                   cfg.rcut, cfg.ntypes)
    for start in range(0, nf, chunk):
        idx = np.minimum(np.arange(start, start + chunk), nf - 1)
        batch = {"coords": system.coords[idx], "cells": cells[idx],
                 "nbr": jax.tree_util.tree_map(lambda x: np.asarray(x)[idx], nbr_all)}
        if system.sites is not None:
            batch["spin_moments"] = system.spin_moments[idx]
        e, f, v = _predict_chunk(model.params, model.stats, batch, system.sites, config=cfg, want_virial=want_virial)
        keep = min(chunk, nf - start)
        energies.append(np.asarray(e)[:keep])
        forces.append(np.asarray(f)[:keep])
        virials.append(np.asarray(v)[:keep])
    return np.concatenate(energies), np.concatenate(forces), np.concatenate(virials) if want_virial else None


def _errors(diff: np.ndarray) -> dict:
    diff = np.asarray(diff, dtype=np.float64).ravel()
    if diff.size == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "n": 0}
    return {"rmse": float(np.sqrt(np.mean(diff ** 2))), "mae": float(np.mean(np.abs(diff))), "n": int(diff.size)}


def _scaled(err: dict, factor: float, unit: str) -> dict:
    return {"rmse": err["rmse"] * factor, "mae": err["mae"] * factor, "n": err["n"], "unit": unit}


def atom_spin_states(systems: list[LabelledSystem], type_map) -> dict:
    """Spin states of each magnetic element, {element: [{"center", "min", "max", "count"}]} μB.

    `cathodeml.spin.element_spin_states` over the systems' moments (`LabelledSystem.moments`,
    the signed `spin.state_moments`); non-magnetic elements (e.g. Li, O) are left out.
    """
    from cathodeml.spin import element_spin_states

    values: dict[str, list[np.ndarray]] = {}
    for s in systems:
        if s.moments is None:
            continue
        for t in np.unique(s.atom_types[: s.n_real]):
            values.setdefault(type_map[t], []).append(s.moments[:, s.atom_types[: s.n_real] == t].ravel())
    return element_spin_states({el: np.concatenate(v) for el, v in values.items()})


def error_report(systems: list[LabelledSystem], predictions: list[tuple[np.ndarray, np.ndarray]], type_map) -> dict:
    """Every error figure: overall, per system, per element, per atomic spin state and per frame
    spin configuration.  predictions: (energies, forces[, virials or None]) per system.
    Energies and virials in meV/atom, forces in meV/Å (component-wise RMSE and MAE).  Systems
    without force labels add nothing to the force figures (NaN with n = 0 when no system has any)."""
    from cathodeml.spin import state_index

    type_map = list(type_map)
    states = atom_spin_states(systems, type_map)
    e_diff, f_diff = [], []
    per_system, per_element, per_state, per_config = [], {}, {}, {}
    v_diff = []
    for s, (e_pred, f_pred, *rest) in zip(systems, predictions):
        de = (e_pred - s.energies) / s.n_real
        df = f_pred - s.forces if s.forces is not None else np.zeros((s.n_frames, 0, 3))
        e_diff.append(de)
        f_diff.append(df.ravel())
        entry = {"name": s.name, "frames": s.n_frames, "atoms": s.n_real,
                 "energy": _scaled(_errors(de), MEV, "meV/atom"), "force": _scaled(_errors(df), MEV, "meV/Å")}
        if rest and rest[0] is not None and s.virials is not None:
            dv = (rest[0] - s.virials) / s.n_real
            v_diff.append(dv.ravel())
            entry["virial"] = _scaled(_errors(dv), MEV, "meV/atom")
        per_system.append(entry)
        real_types = s.atom_types[: s.n_real]
        force_types = real_types if s.forces is not None else real_types[:0]
        for t in np.unique(force_types):
            per_element.setdefault(type_map[t], []).append(df[:, force_types == t].ravel())
        labels = [""] * s.n_frames
        for element, st in states.items():
            t = type_map.index(element)
            cols = np.flatnonzero(real_types == t)
            if s.moments is None or cols.size == 0:
                continue
            idx = state_index(s.moments[:, cols], st)
            for k, group in enumerate(st):
                name = f"{element} {group['center']:.1f} μB"
                mask = idx == k
                if s.forces is not None:
                    per_state.setdefault(name, []).append(df[:, cols][mask].ravel())
            for f in range(s.n_frames):
                counts = np.bincount(idx[f][idx[f] >= 0], minlength=len(st))
                part = " ".join(f"{n}×{st[k]['center']:.1f}" for k, n in enumerate(counts) if n)
                labels[f] += f"{element}[{part}] "
        for f, label in enumerate(labels):
            if label:
                per_config.setdefault(f"{s.name}: {label.strip()}", []).append(de[f])
    report = {
        "overall": {"frames": int(sum(s.n_frames for s in systems)),
                    "energy": _scaled(_errors(np.concatenate(e_diff)), MEV, "meV/atom"),
                    "force": _scaled(_errors(np.concatenate(f_diff)), MEV, "meV/Å")},
        "systems": per_system,
        **({"virial": _scaled(_errors(np.concatenate(v_diff)), MEV, "meV/atom")} if v_diff else {}),
        "elements": {el: {"force": _scaled(_errors(np.concatenate(v)), MEV, "meV/Å")} for el, v in per_element.items()},
        "spin_states": {name: {"force": _scaled(_errors(np.concatenate(v)), MEV, "meV/Å")} for name, v in per_state.items()},
        "spin_configurations": {name: {"energy": _scaled(_errors(np.array(v)), MEV, "meV/atom")}
                                for name, v in per_config.items()},
        "state_definitions": states,
    }
    return report


def parity_data(systems: list[LabelledSystem], predictions) -> dict:
    """Arrays for parity plots: energy per atom (eV/atom) and force components (eV/Å), by system
    (empty force arrays for a system without force labels)."""
    return {s.name: {"energy_dft": s.energies / s.n_real, "energy_model": pred[0] / s.n_real,
                     "force_dft": np.zeros(0) if s.forces is None else s.forces.ravel(),
                     "force_model": np.zeros(0) if s.forces is None else pred[1].ravel()}
            for s, pred in zip(systems, predictions)}
