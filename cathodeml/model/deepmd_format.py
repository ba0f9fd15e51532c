"""Map DeePMD-kit's serialized se_e2_a energy model onto (ModelConfig, params, stats) and back.

DeePMD-kit ≥ 3 describes every model as one dict (`Model.serialize()`): descriptor, fitting and
model-level output statistics, each with an "@variables" dict of arrays.  For the subset we
implement -- a "standard" model with an se_e2_a descriptor and an "ener" fitting, no excluded
types, no frame/atom parameters -- the mapping is one-to-one, except that DeePMD-kit keeps two
per-type energy shifts (the fitting's bias_atom_e and the model's out_bias) which we hold as their
sum `type_bias`; export writes the sum as bias_atom_e and a zero out_bias.  A float32 model is
written with float32 arrays (DeePMD-kit checks that arrays match the declared precision), so its
export → import round trip is exact only to float32 rounding.  Anything outside the
subset is refused with a message naming the setting, rather than silently evaluated differently.
"""

from __future__ import annotations

import datetime

import numpy as np

from cathodeml.errors import CathodemlError
from cathodeml.model.config import ModelConfig

_DEEPMD_VERSION = "3.2.0"


def _refuse(what: str) -> CathodemlError:
    return CathodemlError(f"DeePMD-kit model not supported: {what}; cathodeml reads se_e2_a energy models "
                          "(descriptor type se_e2_a, fitting type ener) without excluded types or fparam/aparam")


def _layers(net: dict) -> list:
    layers = []
    for layer in net["layers"]:
        v = layer["@variables"]
        entry = {"w": np.asarray(v["w"], dtype=np.float64), "b": np.asarray(v["b"], dtype=np.float64).ravel()}
        if v.get("idt") is not None:
            entry["idt"] = np.asarray(v["idt"], dtype=np.float64).ravel()
        layers.append(entry)
    return layers


def from_deepmd(tree: dict) -> tuple[ModelConfig, dict, dict]:
    """(config, params, stats) from the tree `cathodeml.io.deepmd_dp.read_dp` returns."""
    model = tree.get("model", tree)
    if model.get("type", "standard") != "standard":
        raise _refuse(f"model type {model.get('type')!r}")
    if model.get("atom_exclude_types") or model.get("pair_exclude_types"):
        raise _refuse("atom/pair_exclude_types")
    desc, fit = model.get("descriptor", {}), model.get("fitting", {})
    if desc.get("type") not in ("se_e2_a", "se_a"):
        raise _refuse(f"descriptor type {desc.get('type')!r}")
    if fit.get("type", "ener") != "ener" or fit.get("dim_out", 1) != 1:
        raise _refuse(f"fitting type {fit.get('type')!r}")
    if desc.get("exclude_types") or fit.get("exclude_types"):
        raise _refuse("exclude_types")
    if desc.get("env_protection", 0.0) or desc.get("env_mat", {}).get("use_exp_switch"):
        raise _refuse("env_protection / exponential switch")
    if fit.get("numb_fparam", 0) or fit.get("numb_aparam", 0) or fit.get("dim_case_embd", 0):
        raise _refuse("frame/atom parameters or case embedding")
    if desc.get("spin") or fit.get("spin"):
        raise _refuse("DeePMD-kit spin model (cathodeml's spin atoms are ordinary types; retrain)")
    fit_nets = fit["nets"]["networks"]
    emb_nets = desc["embeddings"]["networks"]
    emb_act = desc.get("activation_function", "tanh")
    fit_act = fit.get("activation_function", "tanh")
    if emb_act != fit_act:
        raise _refuse(f"different activations in embedding ({emb_act}) and fitting ({fit_act})")
    precision = desc.get("precision", "float64")
    precision = "float32" if precision in ("float32", "single") else "float64"
    type_map = model.get("type_map") or desc.get("type_map")
    config = ModelConfig(
        type_map=tuple(type_map), sel=tuple(desc["sel"]), rcut=desc["rcut"], rcut_smth=desc["rcut_smth"],
        embedding_neurons=tuple(desc["neuron"]), axis_neuron=desc["axis_neuron"],
        type_one_side=bool(desc.get("type_one_side", True)), embedding_resnet_dt=bool(desc.get("resnet_dt", False)),
        fitting_neurons=tuple(fit["neuron"]), fitting_resnet_dt=bool(fit.get("resnet_dt", True)),
        activation=emb_act, precision=precision)
    if len(emb_nets) != config.n_embedding_nets or any(n is None for n in emb_nets):
        raise _refuse(f"{len(emb_nets)} embedding nets where {config.n_embedding_nets} are expected")
    params = {"embedding": [_layers(n) for n in emb_nets], "fitting": [_layers(n) for n in fit_nets]}
    bias = np.asarray(fit["@variables"]["bias_atom_e"], dtype=np.float64).reshape(config.ntypes, -1)[:, 0]
    out_bias = model.get("@variables", {}).get("out_bias")
    if out_bias is not None:
        bias = bias + np.asarray(out_bias, dtype=np.float64).reshape(-1, config.ntypes)[0]
    davg = np.asarray(desc["@variables"]["davg"], dtype=np.float64).reshape(config.ntypes, config.nnei, 4)
    dstd = np.asarray(desc["@variables"]["dstd"], dtype=np.float64).reshape(config.ntypes, config.nnei, 4)
    stats = {"davg": davg, "dstd": dstd, "type_bias": bias}
    return config, params, stats


def _layer_tree(layer: dict, activation: str, resnet: bool, precision: str) -> dict:
    dt = np.float32 if precision == "float32" else np.float64  # DeePMD-kit checks arrays match `precision`
    idt = layer.get("idt")
    return {"@class": "Layer", "@version": 2, "bias": True, "use_timestep": idt is not None,
            "activation_function": activation, "resnet": resnet, "precision": precision, "trainable": True,
            "@variables": {"w": np.asarray(layer["w"], dt), "b": np.asarray(layer["b"], dt),
                           "idt": None if idt is None else np.asarray(idt, dt)}}


def to_deepmd(config: ModelConfig, params: dict, stats: dict) -> dict:
    """The DeePMD-kit 3.x serialized tree of our model (arrays as numpy), for `write_dp`."""
    prec = config.precision
    dt = config.dtype
    nt = config.ntypes
    embeddings = [{"@class": "EmbeddingNetwork", "@version": 2, "in_dim": 1,
                   "neuron": list(config.embedding_neurons), "activation_function": config.activation,
                   "resnet_dt": config.embedding_resnet_dt, "bias": True, "precision": prec,
                   "layers": [_layer_tree(la, config.activation, True, prec) for la in net]}
                  for net in params["embedding"]]
    fittings = [{"@class": "FittingNetwork", "@version": 1, "in_dim": config.dim_descriptor, "out_dim": 1,
                 "neuron": list(config.fitting_neurons), "activation_function": config.activation,
                 "resnet_dt": config.fitting_resnet_dt, "precision": prec, "bias_out": True,
                 "layers": [_layer_tree(la, config.activation, True, prec) for la in net[:-1]]
                 + [_layer_tree(net[-1], "none", False, prec)]}
                for net in params["fitting"]]
    descriptor = {
        "@class": "Descriptor", "type": "se_e2_a", "@version": 2, "rcut": config.rcut, "rcut_smth": config.rcut_smth,
        "sel": list(config.sel), "neuron": list(config.embedding_neurons), "axis_neuron": config.axis_neuron,
        "resnet_dt": config.embedding_resnet_dt, "trainable": True, "type_one_side": config.type_one_side,
        "exclude_types": [], "env_protection": 0.0, "set_davg_zero": False,
        "activation_function": config.activation, "precision": prec, "spin": None,
        "env_mat": {"rcut": config.rcut, "rcut_smth": config.rcut_smth, "protection": 0.0, "use_exp_switch": False},
        "embeddings": {"@class": "NetworkCollection", "@version": 1, "ndim": 1 if config.type_one_side else 2,
                       "ntypes": nt, "network_type": "embedding_network", "networks": embeddings},
        "@variables": {"davg": np.asarray(stats["davg"], dt), "dstd": np.asarray(stats["dstd"], dt)},
        "type_map": list(config.type_map),
    }
    fitting = {
        "@class": "Fitting", "@version": 4, "var_name": "energy", "ntypes": nt, "dim_descrpt": config.dim_descriptor,
        "neuron": list(config.fitting_neurons), "resnet_dt": config.fitting_resnet_dt, "numb_fparam": 0,
        "numb_aparam": 0, "dim_case_embd": 0, "default_fparam": None, "rcond": None,
        "activation_function": config.activation, "precision": prec, "mixed_types": False, "exclude_types": [],
        "nets": {"@class": "NetworkCollection", "@version": 1, "ndim": 1, "ntypes": nt,
                 "network_type": "fitting_network", "networks": fittings},
        "@variables": {"bias_atom_e": np.asarray(stats["type_bias"], dt).reshape(nt, 1), "case_embd": None,
                       "fparam_avg": None, "fparam_inv_std": None, "aparam_avg": None, "aparam_inv_std": None},
        "type_map": list(config.type_map), "tot_ener_zero": False, "trainable": [True] * (len(config.fitting_neurons) + 1),
        "layer_name": None, "use_aparam_as_mask": False, "spin": None, "type": "ener", "dim_out": 1,
        "atom_ener": None,
    }
    model = {
        "type_map": list(config.type_map), "atom_exclude_types": [], "pair_exclude_types": [], "rcond": None,
        "preset_out_bias": None,
        "@variables": {"out_bias": np.zeros((1, nt, 1)), "out_std": np.ones((1, nt, 1))},
        "@class": "Model", "type": "standard", "@version": 2, "descriptor": descriptor, "fitting": fitting,
    }
    model_def_script = {
        "type_map": list(config.type_map),
        "descriptor": {"type": "se_e2_a", "sel": list(config.sel), "rcut_smth": config.rcut_smth, "rcut": config.rcut,
                       "neuron": list(config.embedding_neurons), "resnet_dt": config.embedding_resnet_dt,
                       "axis_neuron": config.axis_neuron, "type_one_side": config.type_one_side,
                       "activation_function": config.activation, "precision": prec},
        "fitting_net": {"neuron": list(config.fitting_neurons), "resnet_dt": config.fitting_resnet_dt,
                        "activation_function": config.activation, "precision": prec},
    }
    return {"software": "deepmd-kit", "version": _DEEPMD_VERSION,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "backend": "DP", "model": model, "model_def_script": model_def_script,
            "@variables": {}}
