"""Synthetic trajectories with known transport for the analyze tests, and a minimal H5MD writer
that follows the H5MD layout `cathodeml md` writes (cathodeml.io.h5md), written directly with h5py."""

from __future__ import annotations

import json

import h5py
import numpy as np


def gaussian_walk(rng, n_frames: int, n_walkers: int, step_sigma: float, start=None) -> np.ndarray:
    """Continuous positions [n_frames, n_walkers, 3] Å of independent Gaussian random walkers:
    each Cartesian step ~ N(0, step_sigma²), so D = step_sigma² / (2·dt) exactly."""
    steps = rng.normal(0.0, step_sigma, size=(n_frames - 1, n_walkers, 3))
    x0 = np.zeros((1, n_walkers, 3)) if start is None else start[None]
    return np.concatenate([x0, x0 + np.cumsum(steps, axis=0)], axis=0)


def lattice_pair_hops(rng, n_frames: int, n_pairs: int, a: float, p_hop: float, sign: int) -> np.ndarray:
    """Ions in pairs on a cubic lattice of spacing a (Å).  Each frame a pair hops with probability
    p_hop by ±a along a random axis; the second ion makes the same hop (sign=+1, H_R = 1/2) or the
    opposite one (sign=−1, the summed displacement never changes).  Returns [n_frames, 2·n_pairs, 3]."""
    hop = rng.random((n_frames - 1, n_pairs)) < p_hop
    axis = rng.integers(0, 3, size=(n_frames - 1, n_pairs))
    direction = rng.choice([-1.0, 1.0], size=(n_frames - 1, n_pairs))
    steps = np.zeros((n_frames - 1, n_pairs, 3))
    f, p = np.nonzero(hop)
    steps[f, p, axis[f, p]] = a * direction[f, p]
    first = np.concatenate([np.zeros((1, n_pairs, 3)), np.cumsum(steps, axis=0)], axis=0)
    start = a * rng.integers(0, 6, size=(n_pairs, 3)).astype(float)
    return np.concatenate([first + start, sign * first + start + np.array([a / 2, a / 2, a / 2])], axis=1)


def write_h5md(path, positions, cell, symbols, type_map, *, dt_fs: float, temperature_K: float | None,
               masses=None, images: bool = True, unwrapped: bool = True) -> None:
    """An H5MD 1.1 file in cathodeml's layout: positions [nf, N, 3] Å (continuous), fixed cell
    [3, 3] Å; `unwrapped` stores them as given (cathodeml's convention) else wrapped into the cell
    with image counts (plain H5MD convention)."""
    positions = np.asarray(positions, dtype=float)
    nf, n, _ = positions.shape
    cell = np.asarray(cell, dtype=float)
    frac = positions @ np.linalg.inv(cell)
    image = np.floor(frac).astype(np.int32)
    stored = positions if unwrapped else (frac - image) @ cell
    species = np.array([type_map.index(s) for s in symbols], dtype=np.int32)
    step = np.arange(nf) * 10
    time = np.arange(nf) * dt_fs
    with h5py.File(path, "w") as f:
        f.attrs["cathodeml"] = json.dumps({"kind": "trajectory", "format_version": 1, "type_map": type_map})
        h5 = f.create_group("h5md")
        h5.attrs["version"] = np.array([1, 1])
        h5.create_group("author").attrs["name"] = "test"
        creator = h5.create_group("creator")
        creator.attrs["name"] = "cathodeml"
        creator.attrs["version"] = "test"
        part = f.create_group("particles/all")

        def element(group, name, value, unit=None):
            g = group.create_group(name)
            v = g.create_dataset("value", data=value, maxshape=(None,) + value.shape[1:], chunks=True)
            if unit:
                v.attrs["unit"] = unit
            g.create_dataset("step", data=step, maxshape=(None,))
            g.create_dataset("time", data=time, maxshape=(None,)).attrs["unit"] = "fs"

        element(part, "position", stored, "Å")
        if images:
            element(part, "image", image)
        box = part.create_group("box")
        box.attrs["dimension"] = 3
        box.attrs["boundary"] = np.array([b"periodic"] * 3)
        element(box, "edges", np.broadcast_to(cell, (nf, 3, 3)).copy(), "Å")
        part.create_dataset("species", data=species)
        if masses is not None:
            part.create_dataset("mass", data=np.asarray(masses, dtype=float))
        obs = f.create_group("observables")
        element(obs, "temperature", np.full(nf, temperature_K or 0.0), "K")
        params = {"type_map": type_map, "timestep_fs": 1.0, "stride": 10, "ensemble": "nvt"}
        if temperature_K is not None:
            params["temperature_K"] = temperature_K
        f.create_group("parameters").attrs["cathodeml"] = json.dumps(params)
