"""Training settings: one frozen dataclass per TOML table, read from TOML or DeePMD-kit input.json.

A run is described by four tables -- `[model]`, `[learning_rate]`, `[loss]`, `[training]` --
each a frozen dataclass whose field names are the TOML keys and whose defaults are DeePMD-kit's
own (so an empty table behaves like an empty DeePMD-kit section).  Users arrive with hundreds of
DeePMD-kit `input.json` files, so `read_config` also accepts those and maps the same fields
(descriptor/fitting_net → model, numb_steps → steps, …); keys cathodeml does not use are
reported back, never silently dropped.  Command-line options are applied last with
`with_overrides`, so "the file, then the command line" is the single rule.  Every unknown key
or impossible value is a `CathodemlError` naming the key and what to change.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from pathlib import Path

from cathodeml.errors import CathodemlError
from cathodeml.model.config import ACTIVATIONS, PRECISIONS, ModelConfig

_ARCH = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """DeepPot-SE (se_e2_a) architecture.

    rcut, rcut_smth: cutoff and start of the smooth switch (Å).  sel: neighbour slots per type
    (list of ints) or "auto" / "auto:<factor>" (max neighbour count in the data × factor, default
    1.1, rounded up to a multiple of 4, as DeePMD-kit).  embedding_neurons, fitting_neurons:
    hidden widths; axis_neuron: columns of G kept (M₂); type_one_side: embedding depends only on
    the neighbour type; embedding_resnet_dt, fitting_resnet_dt: learnable timestep on residual
    layers; activation: "tanh" (or DeePMD-kit's other names); precision: "float64" or "float32";
    type_map: element order (empty: taken from the data); seed: parameter initialisation seed;
    virtual_atom_energy: on spin data, whether the virtual `<El>_spin` atoms get an energy of their
    own (their own fitting net, cathodeml's default) or act only as neighbours of the real atoms
    (false: DeePMD-kit's spin models, the kind `export-lammps` can hand to pair_style deepspin).
    """

    # Architecture defaults come from the model's own config, so the two cannot drift apart.
    rcut: float = _ARCH["rcut"]
    rcut_smth: float = _ARCH["rcut_smth"]
    sel: tuple[int, ...] | str = "auto"
    embedding_neurons: tuple[int, ...] = _ARCH["embedding_neurons"]
    axis_neuron: int = _ARCH["axis_neuron"]
    type_one_side: bool = _ARCH["type_one_side"]
    embedding_resnet_dt: bool = _ARCH["embedding_resnet_dt"]
    fitting_neurons: tuple[int, ...] = _ARCH["fitting_neurons"]
    fitting_resnet_dt: bool = _ARCH["fitting_resnet_dt"]
    activation: str = _ARCH["activation"]
    precision: str = _ARCH["precision"]
    type_map: tuple[str, ...] = ()
    seed: int = 1
    virtual_atom_energy: bool = True


@dataclasses.dataclass(frozen=True)
class LearningRateSettings:
    """DeePMD-kit "exp" schedule: lr(t) = start_lr · r^⌊t/decay_steps⌋ with
    r = (stop_lr/start_lr)^(decay_steps/steps), so lr reaches stop_lr at the last step (1/step units)."""

    start_lr: float = 1.0e-3
    stop_lr: float = 3.51e-8
    decay_steps: int = 5000


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Loss prefactors, each moving from start to limit with the learning rate:
    p(t) = limit + (start − limit)·lr(t)/start_lr.  Energy and virial terms are divided by the
    number of real atoms; force errors are averaged over real atoms (eV², eV²/Å², eV² units)."""

    start_pref_e: float = 0.02
    limit_pref_e: float = 1.0
    start_pref_f: float = 1000.0
    limit_pref_f: float = 1.0
    start_pref_v: float = 0.0
    limit_pref_v: float = 0.0


@dataclasses.dataclass(frozen=True)
class TrainingSettings:
    """The run itself.

    steps: number of optimiser steps; batch_size: frames per step, an int or "auto"/"auto:<n>"
    (smallest batch with ≥ n atoms, n = 32 by default, as DeePMD-kit), chosen per system;
    seed: data shuffling seed; disp_freq: steps between lcurve lines and validation;
    save_freq: steps between checkpoints; validation_fraction: share of each system's frames
    held out when no validation data is given (0 disables); valid_frames: at most this many
    validation frames per system are evaluated at each display (0 = all); stat_frames: frames
    per system used for descriptor statistics; lcurve: learning-curve file name;
    checkpoint: checkpoint file name (both written next to the model unless absolute);
    data, valid_data: dataset paths (relative to the config file), overridden by the CLI;
    stream: read the training batches from the HDF5 files during training instead of holding every
    frame on the device (datasets larger than memory, `train.stream`).
    """

    steps: int = 1000
    batch_size: int | str = "auto"
    seed: int = 1
    disp_freq: int = 100
    save_freq: int = 1000
    validation_fraction: float = 0.1
    valid_frames: int = 20
    stat_frames: int = 20
    lcurve: str = "lcurve.out"
    checkpoint: str = "checkpoint.h5"
    data: tuple[str, ...] = ()
    valid_data: tuple[str, ...] = ()
    stream: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The four tables of a training config."""

    model: ModelSettings = ModelSettings()
    learning_rate: LearningRateSettings = LearningRateSettings()
    loss: LossSettings = LossSettings()
    training: TrainingSettings = TrainingSettings()

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Inverse of `to_dict`; unknown tables or keys are a CathodemlError."""
        return _from_tables(data, where="config")


_TABLES = {
    "model": ModelSettings,
    "learning_rate": LearningRateSettings,
    "loss": LossSettings,
    "training": TrainingSettings,
}


def read_config(path: str | Path) -> tuple[TrainConfig, list[str]]:
    """Read a TOML config or a DeePMD-kit input.json; return (config, ignored DeePMD-kit keys).

    Relative dataset paths in the file are made relative to the file's folder.
    """
    path = Path(path)
    if not path.exists():
        raise CathodemlError(f"{path}: no such config file")
    text = path.read_text()
    ignored: list[str] = []
    if path.suffix.lower() == ".json":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CathodemlError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        tables, ignored = from_deepmd_input(raw)
    else:
        try:
            tables = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CathodemlError(f"{path}: not valid TOML ({exc})") from None
    config = _from_tables(tables, where=str(path))
    base = path.parent
    rebase = lambda ps: tuple(str(p) if Path(p).is_absolute() else str(base / p) for p in ps)  # noqa: E731
    training = dataclasses.replace(
        config.training, data=rebase(config.training.data), valid_data=rebase(config.training.valid_data)
    )
    return dataclasses.replace(config, training=training), ignored


def with_overrides(config: TrainConfig, **overrides) -> TrainConfig:
    """Apply command-line overrides given as `<table>__<key>=value` (None values are skipped)."""
    tables = {name: dataclasses.asdict(getattr(config, name)) for name in _TABLES}
    for key, value in overrides.items():
        if value is None:
            continue
        table, _, field = key.partition("__")
        if table not in tables or field not in tables[table]:
            raise CathodemlError(f"unknown setting {table}.{field}")
        tables[table][field] = value
    return _from_tables(tables, where="command line")


def _from_tables(tables: dict, where: str) -> TrainConfig:
    unknown = sorted(set(tables) - set(_TABLES))
    if unknown:
        raise CathodemlError(f"{where}: unknown table(s) {', '.join(unknown)}; use {', '.join(_TABLES)}")
    parts = {}
    for name, cls in _TABLES.items():
        values = dict(tables.get(name, {}))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        bad = sorted(set(values) - set(fields))
        if bad:
            raise CathodemlError(f"{where}: unknown key(s) {', '.join(f'{name}.{b}' for b in bad)}; "
                                 f"valid keys: {', '.join(fields)}")
        for key, value in values.items():
            if isinstance(value, list):
                values[key] = tuple(value)
        parts[name] = cls(**values)
    config = TrainConfig(**parts)
    validate(config, where)
    return config


def validate(config: TrainConfig, where: str = "config") -> None:
    """Check ranges and types; raise CathodemlError saying which key to change."""
    m, lr, loss, t = config.model, config.learning_rate, config.loss, config.training

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise CathodemlError(f"{where}: {message}")

    need(m.rcut > 0 and 0 <= m.rcut_smth < m.rcut, f"need 0 ≤ model.rcut_smth < model.rcut (got {m.rcut_smth}, {m.rcut})")
    if isinstance(m.sel, str):
        need(parse_auto(m.sel, 1.1) is not None, f"model.sel must be a list of ints or 'auto[:factor]', not {m.sel!r}")
    else:
        need(all(isinstance(s, int) and s > 0 for s in m.sel), "model.sel entries must be positive integers")
    need(len(m.embedding_neurons) > 0 and all(int(n) > 0 for n in m.embedding_neurons), "model.embedding_neurons must be positive widths")
    need(len(m.fitting_neurons) > 0 and all(int(n) > 0 for n in m.fitting_neurons), "model.fitting_neurons must be positive widths")
    need(0 < m.axis_neuron <= m.embedding_neurons[-1], "model.axis_neuron must be between 1 and the last embedding width")
    need(m.precision in PRECISIONS, f"model.precision must be one of {', '.join(PRECISIONS)}")
    need(m.activation.lower() in ACTIVATIONS, f"model.activation must be one of {', '.join(ACTIVATIONS)}")
    need(lr.start_lr > 0 and 0 < lr.stop_lr <= lr.start_lr, "need 0 < learning_rate.stop_lr ≤ learning_rate.start_lr")
    need(lr.decay_steps > 0, "learning_rate.decay_steps must be positive")
    for key, value in dataclasses.asdict(loss).items():
        need(value >= 0, f"loss.{key} must be ≥ 0")
    need(loss.start_pref_e + loss.limit_pref_e + loss.start_pref_f + loss.limit_pref_f > 0,
         "all energy and force prefactors are zero: nothing to fit")
    need(t.steps >= 0, "training.steps must be ≥ 0")
    if isinstance(t.batch_size, str):
        need(parse_auto(t.batch_size, 32) is not None, f"training.batch_size must be an int or 'auto[:n]', not {t.batch_size!r}")
    else:
        need(t.batch_size > 0, "training.batch_size must be positive")
    need(t.disp_freq > 0 and t.save_freq > 0, "training.disp_freq and training.save_freq must be positive")
    need(0 <= t.validation_fraction < 1, "training.validation_fraction must be in [0, 1)")
    need(t.valid_frames >= 0 and t.stat_frames > 0, "training.valid_frames ≥ 0 and training.stat_frames > 0")


def parse_auto(value: str, default: float) -> float | None:
    """'auto' → default, 'auto:x' → x, anything else → None."""
    if value == "auto":
        return default
    if value.startswith("auto:"):
        try:
            x = float(value[5:])
        except ValueError:
            return None
        return x if x > 0 else None
    return None


def auto_batch_size(spec: int | str, n_atoms: int) -> int:
    """Frames per batch for a system of `n_atoms`: an int as given, 'auto:n' → ⌈n/n_atoms⌉."""
    if isinstance(spec, int):
        return spec
    target = parse_auto(spec, 32)
    return max(1, math.ceil(target / n_atoms))


# ----------------------------------------------------------------------------- DeePMD-kit input.json

# DeePMD-kit key → (table, cathodeml key)
_DEEPMD_DESCRIPTOR = {"rcut": "rcut", "rcut_smth": "rcut_smth", "sel": "sel", "neuron": "embedding_neurons",
                      "axis_neuron": "axis_neuron", "type_one_side": "type_one_side", "precision": "precision",
                      "activation_function": "activation", "seed": "seed",
                      "resnet_dt": "embedding_resnet_dt"}
_DEEPMD_IGNORED_DESCRIPTOR = {"type", "_comment", "trainable", "set_davg_zero", "exclude_types", "env_protection"}
_DEEPMD_FITTING = {"neuron": "fitting_neurons", "resnet_dt": "fitting_resnet_dt",
                   "activation_function": "activation"}
_DEEPMD_TRAINING = {"numb_steps": "steps", "stop_batch": "steps", "seed": "seed", "disp_freq": "disp_freq",
                    "save_freq": "save_freq", "disp_file": "lcurve"}


def from_deepmd_input(raw: dict) -> tuple[dict, list[str]]:
    """Map a DeePMD-kit se_e2_a energy input.json onto cathodeml's tables.

    Returns (tables, ignored) where `ignored` lists the DeePMD-kit keys that have no cathodeml
    meaning (dotted paths).  A descriptor other than se_e2_a is a CathodemlError.
    """
    ignored: list[str] = []
    model_in = raw.get("model", {})
    descriptor = model_in.get("descriptor", {})
    kind = descriptor.get("type", "se_e2_a")
    if kind not in ("se_e2_a", "se_a"):
        raise CathodemlError(f"DeePMD-kit descriptor {kind!r} is not supported; cathodeml trains se_e2_a")
    model: dict = {}
    if "type_map" in model_in:
        model["type_map"] = list(model_in["type_map"])
    for key, value in descriptor.items():
        if key in _DEEPMD_DESCRIPTOR:
            model[_DEEPMD_DESCRIPTOR[key]] = value
        elif key not in _DEEPMD_IGNORED_DESCRIPTOR:
            ignored.append(f"model.descriptor.{key}")
    for key, value in model_in.get("fitting_net", {}).items():
        if key in _DEEPMD_FITTING:
            model[_DEEPMD_FITTING[key]] = value
        elif key not in {"seed", "_comment", "type"}:
            ignored.append(f"model.fitting_net.{key}")
    if model.get("precision") == "default":
        model["precision"] = "float64"
    if model.get("activation") == "default":
        model["activation"] = "tanh"
    if "spin" in model_in:
        ignored.append("model.spin (run `cathodeml augment-spin` on the data; the model reads the spin settings from it)")
    for key in model_in:
        if key not in {"type_map", "descriptor", "fitting_net", "spin", "_comment"}:
            ignored.append(f"model.{key}")

    lr_in = raw.get("learning_rate", {})
    if lr_in.get("type", "exp") != "exp":
        raise CathodemlError(f"learning_rate.type {lr_in['type']!r} is not supported; use 'exp'")
    learning_rate = {k: lr_in[k] for k in ("start_lr", "stop_lr", "decay_steps") if k in lr_in}
    ignored += [f"learning_rate.{k}" for k in lr_in if k not in {"type", "start_lr", "stop_lr", "decay_steps", "_comment"}]

    loss_in = raw.get("loss", {})
    loss: dict = {}
    for key, value in loss_in.items():
        target = {"start_pref_fr": "start_pref_f", "limit_pref_fr": "limit_pref_f"}.get(key, key)
        if target in {f.name for f in dataclasses.fields(LossSettings)}:
            loss[target] = float(value)
        elif key not in {"type", "_comment"}:
            ignored.append(f"loss.{key}")

    training_in = raw.get("training", {})
    training: dict = {}
    for key, value in training_in.items():
        if key in _DEEPMD_TRAINING:
            training[_DEEPMD_TRAINING[key]] = value
        elif key == "training_data":
            training["data"] = _deepmd_systems(value.get("systems", []))
            if "batch_size" in value:
                training["batch_size"] = value["batch_size"]
        elif key == "validation_data":
            training["valid_data"] = _deepmd_systems(value.get("systems", []))
        elif key != "_comment":
            ignored.append(f"training.{key}")
    if "validation_data" in training_in:
        training["validation_fraction"] = 0.0
    return {"model": model, "learning_rate": learning_rate, "loss": loss, "training": training}, ignored


def _deepmd_systems(systems) -> list[str]:
    return [systems] if isinstance(systems, str) else list(systems)
