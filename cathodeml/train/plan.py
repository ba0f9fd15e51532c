"""Setting up a training run: data read and typed, validation split, model configuration, neighbour
lists, and either a fresh model or the state of a checkpoint.

Why apart from the loop.  Everything here runs once, on the host, and is where a user's input can
be wrong (data files that mix spin settings, species missing from model.type_map, a `sel` of the
wrong length, a checkpoint written for other data); `train.trainer.train` then takes the ready
pieces of a `RunPlan` and only optimises.  A restart takes its type map and model configuration
from the checkpoint and refuses training data whose fingerprint differs, so the resumed run sees
exactly the frames and validation split of the interrupted one.  A fresh model gets its
descriptor statistics and per-type energy bias from the training frames, as DeePMD-kit's do.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.model.config import ModelConfig
from cathodeml.model.neighbors import build_neighbor_lists
from cathodeml.model.potential import default_stats, init_params
from cathodeml.model.stats import descriptor_stats
from cathodeml.train.config import TrainConfig
from cathodeml.train.data import LabelledSystem, auto_sel, energy_bias, labelled_systems
from cathodeml.train.trainer import RunState, data_fingerprint, new_run_state, read_checkpoint


# ----------------------------------------------------------------------------- the model of a run


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
        atom_exclude_types=() if settings.virtual_atom_energy else
        tuple(i for i, t in enumerate(type_map) if spin.is_virtual_type(t)),
    )


def prepare_neighbours(config: ModelConfig, systems: list[LabelledSystem]) -> None:
    """Build every frame's neighbour list once (host, vesin) and attach it to its system."""
    for s in systems:
        cells = None if s.nopbc else s.cells
        s.neighbours = build_neighbor_lists(s.all_coords(), cells, s.all_types(), config.rcut, config.ntypes)


def initial_model(config: ModelConfig, systems: list[LabelledSystem], seed: int, stat_frames: int,
                  bias_systems=None) -> tuple[dict, dict]:
    """Fresh parameters (from `seed`) and statistics: davg/dstd from up to `stat_frames` frames
    per system (1/Å) and the per-type energy bias (eV) by least squares over all training frames
    (those of `bias_systems` when given: streamed systems, whose energies alone are in memory),
    fitted on the real types only (virtual spin types get 0: their count is tied to their hosts')."""
    params = init_params(config, jax.random.PRNGKey(seed))
    stats = default_stats(config)
    stats["davg"], stats["dstd"] = descriptor_stats(
        config, [(s.all_coords()[:stat_frames], None if s.nopbc else s.cells[:stat_frames], s.all_types())
                 for s in systems])
    stats["type_bias"] = energy_bias(bias_systems or systems, config.ntypes)
    return params, stats


# ----------------------------------------------------------------------------- the plan


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
    sample_systems: list[LabelledSystem] | None = None  # streamed runs: the frames read for statistics


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


def spin_catalogue(systems: list[LabelledSystem], type_map, elements) -> dict:
    """The spin states each magnetic element took in the training data, {element: [{"center", "min",
    "max", "count", "fraction"}]} (signed μB, increasing): what `spin-search` may assign to an atom
    of that element.  The same grouping as `test`'s per-state errors (`spin.spin_states`);
    "fraction" is the [lowest, highest] share of the element's atoms in that state over the frames,
    the range of compositions the model was trained on (all-down, say, when only all-up was seen,
    is an extrapolation `spin-search` warns about)."""
    from cathodeml.spin import state_index
    from cathodeml.train.evaluate import atom_spin_states

    type_map = list(type_map)
    states = atom_spin_states(systems, type_map)
    out = {}
    for el in elements:
        if el not in states:
            continue
        t = type_map.index(el)
        shares = []
        for s in systems:
            mask = s.atom_types[: s.n_real] == t
            if s.moments is None or not mask.any():
                continue
            idx = state_index(s.moments[:, mask], states[el])
            shares.append(np.stack([np.mean(idx == k, axis=1) for k in range(len(states[el]))], axis=1))
        shares = np.concatenate(shares) if shares else np.zeros((0, len(states[el])))
        out[el] = [{**st, "fraction": [float(shares[:, k].min()), float(shares[:, k].max())] if len(shares) else None}
                   for k, st in enumerate(states[el])]
    return out


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
    if t.stream:
        return _plan_stream(settings, restart)
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
    config, state = _model_and_state(settings, ckpt, restart, data_fingerprint(train_systems), type_map,
                                     train_systems, valid_systems)
    if spin:
        spin = {**spin, "states": spin_catalogue(train_systems, type_map, spin["elements"])}
    return RunPlan(config, settings, state, train_systems, valid_systems, spin,
                   [p for p, _ in train_sets], [p for p, _ in valid_sets], restart)


def _model_and_state(settings: TrainConfig, ckpt, restart, fingerprint: str, type_map, stat_systems, valid_systems,
                     bias_systems=None):
    """(config, run state): the checkpoint's, after checking it was written for this data, or a fresh
    model whose statistics come from `stat_systems`; neighbour lists of stat + validation systems built."""
    if ckpt:
        config, meta, state = ckpt
        if meta.get("fingerprint") != fingerprint:
            raise CathodemlError(f"{restart} was written for different training data (or another seed / "
                                 "validation split); restart with the same data and config")
    else:
        config = model_config_for(settings.model, type_map, stat_systems)
    prepare_neighbours(config, stat_systems + valid_systems)
    if not ckpt:
        params, stats = initial_model(config, stat_systems, settings.model.seed, settings.training.stat_frames,
                                      bias_systems=bias_systems)
        state = new_run_state(params, stats)
    return config, state


# ----------------------------------------------------------------------------- streamed data


def _plan_stream(settings: TrainConfig, restart: str | None) -> RunPlan:
    """`plan_run` for data streamed from HDF5 (`train.stream`): the files are indexed, not read.

    Per system only the energies are read whole (the bias and the fingerprint); the validation split
    is drawn as for resident data but holds out at most `stream.STREAM_VALID_MAX` frames per system
    (read into memory); `stat_frames` evenly spaced training frames are read for sel, the descriptor
    statistics, the starting neighbour-list capacity, the spin catalogue and the minimum distance."""
    import math

    import h5py

    from cathodeml.io.dataset import Dataset, index_dataset, read_column, read_frames, remap_types
    from cathodeml.train.data import assign_batch_sizes
    from cathodeml.train.stream import STREAM_VALID_MAX, StreamSystem, stream_fingerprint

    t = settings.training
    if not t.data:
        raise CathodemlError("no training data given; pass --data FILE (or list training.data in the config)")
    indexed = [(str(p), *index_dataset(p, settings.model.type_map)) for p in t.data]
    previews = []  # the first frame of every system: type map, spin settings
    for path, file_map, systems, attrs in indexed:
        with h5py.File(path, "r") as f:
            previews.append((path, Dataset(file_map, [read_frames(f, s, [0]) for s in systems if s.n_frames], attrs)))
    valid_sets = _read_all(list(t.valid_data), "validation", settings.model.type_map) if t.valid_data else []
    spin = _spin_of(previews + valid_sets)
    ckpt = read_checkpoint(Path(restart)) if restart else None
    type_map = list(ckpt[0].type_map) if ckpt else _unified_type_map(settings.model.type_map, previews + valid_sets)
    rng = np.random.Generator(np.random.PCG64(t.seed + 1))
    several = len(indexed) > 1
    streamed, valid_systems = [], []
    for path, file_map, systems, attrs in indexed:
        with h5py.File(path, "r") as f:
            for s in systems:
                if s.n_frames == 0:
                    continue
                name = f"{Path(path).name}:{s.name}" if several else s.name
                run_types = remap_types(s.atom_types, file_map, type_map, where=path)

                def labelled(frames):
                    system = dataclasses.replace(read_frames(f, s, frames), atom_types=run_types, name=name)
                    return labelled_systems(Dataset(type_map, [system], attrs), path)[0]

                energies = read_column(f, s, "energy")
                if energies is None:
                    raise CathodemlError(f"{path}: system {name} has no energy labels; train needs them")
                energies = np.asarray(energies, dtype=np.float64).reshape(-1)
                if not np.all(np.isfinite(energies)):
                    raise CathodemlError(f"{path}: system {name} frame {int(np.flatnonzero(~np.isfinite(energies))[0])} "
                                         "has a non-finite energy label; remove it")
                n_valid = 0
                if not t.valid_data and s.n_frames >= 2 and t.validation_fraction > 0:
                    n_valid = min(math.ceil(t.validation_fraction * s.n_frames), STREAM_VALID_MAX)
                order = rng.permutation(s.n_frames)
                valid, frames = np.sort(order[:n_valid]), np.sort(order[n_valid:])
                if n_valid:
                    valid_systems.append(labelled(valid))
                sample = frames[np.unique(np.linspace(0, frames.size - 1, max(1, t.stat_frames)).astype(int))]
                streamed.append(StreamSystem(s, type_map, attrs, run_types, frames, energies[frames], labelled(sample)))
    if valid_sets:
        valid_systems = _as_systems(valid_sets, type_map)
    assign_batch_sizes(streamed, t.batch_size)
    assign_batch_sizes(valid_systems, 1)
    samples = [s.template for s in streamed]
    config, state = _model_and_state(settings, ckpt, restart, stream_fingerprint(streamed), type_map, samples,
                                     valid_systems, bias_systems=streamed)
    for s in streamed:
        s.capacity = s.template.neighbours.capacity
    if spin:
        spin = {**spin, "states": spin_catalogue(samples, type_map, spin["elements"])}
    return RunPlan(config, settings, state, streamed, valid_systems, spin, [p for p, *_ in indexed],
                   [p for p, _ in valid_sets], restart, sample_systems=samples)
