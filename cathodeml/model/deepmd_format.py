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
    if model.get("pair_exclude_types"):
        raise _refuse("pair_exclude_types")
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
        activation=emb_act, precision=precision, atom_exclude_types=tuple(model.get("atom_exclude_types") or ()))
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
        "type_map": list(config.type_map), "atom_exclude_types": list(config.atom_exclude_types),
        "pair_exclude_types": [], "rcond": None,
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


# ------------------------------------------------------------------------------------ spin models
#
# DeePMD-kit's spin model ("spin_ener") wraps a standard model over a doubled type map: the real
# types, then one `<El>_spin` type per real type.  Every atom gets a virtual partner at
# R + virtual_scale·S; for elements without spin (use_spin false) the partner is a placeholder
# excluded from every pair, and all partners are excluded from the fitting, so virtual atoms act
# only as neighbours.  A cathodeml spin model maps onto it exactly when its `<El>_spin` types carry
# no energy (config.atom_exclude_types = the virtual types, `virtual_atom_energy = false`), and the
# collinear offset is folded into the spin that LAMMPS is given: z + η·S + d = z + η·(S + d/η).


def _spin_layout(type_map, spin_dict):
    """(real type map, magnetic elements, {our index: DeePMD-kit index}) of a cathodeml spin model."""
    from cathodeml import spin as spin_mod

    real = spin_mod.model_real_type_map(type_map, spin_dict)
    settings = spin_mod.SpinSettings.from_dict(spin_dict)
    nr = len(real)
    to_dp = {t: t for t in range(nr)}
    for t, name in enumerate(type_map):
        if t >= nr:
            to_dp[t] = nr + real.index(spin_mod.host_element(name))
    return real, settings, to_dp


def spin_export_blocker(config: ModelConfig, spin_dict: dict) -> str | None:
    """Why this spin model cannot be written as a DeePMD-kit spin model, or None when it can."""
    real, _, _ = _spin_layout(config.type_map, spin_dict)
    virtual = tuple(range(len(real), config.ntypes))
    if config.atom_exclude_types != virtual:
        return ("its virtual <El>_spin atoms carry an energy of their own (a fitting net per virtual type), and "
                "DeePMD-kit's spin models give virtual atoms none (they only act as neighbours): the .dp would "
                "compute a different energy.  Retrain with `virtual_atom_energy = false` in the preset's [model] "
                "table to get a model that exports exactly")
    return None


def to_deepmd_spin(config: ModelConfig, params: dict, stats: dict, spin_dict: dict) -> dict:
    """The DeePMD-kit "spin_ener" tree of a cathodeml spin model (see `spin_export_blocker`)."""
    blocker = spin_export_blocker(config, spin_dict)
    if blocker:
        raise CathodemlError(f"this spin model cannot be exported to DeePMD-kit: {blocker}")
    real, settings, to_dp = _spin_layout(config.type_map, spin_dict)
    nr, n2 = len(real), 2 * len(real)
    from_dp = {v: k for k, v in to_dp.items()}

    def source(u):  # our type that fills DeePMD-kit type u (placeholders: their real type, never used)
        return from_dp.get(u, u - nr)

    # placeholders get no slots: se_e2_a divides its descriptor by Σsel, which must stay ours
    sel = [config.sel[from_dp[u]] if u in from_dp else 0 for u in range(n2)]
    big = config.replace(type_map=tuple(real) + tuple(f"{r}_spin" for r in real), sel=tuple(sel),
                         atom_exclude_types=tuple(range(nr, n2)))
    if config.type_one_side:
        embedding = [params["embedding"][source(v)] for v in range(n2)]
    else:
        embedding = [None] * big.n_embedding_nets
        for ci in range(n2):
            for ni in range(n2):
                embedding[big.embedding_index(ci, ni)] = params["embedding"][config.embedding_index(source(ci), source(ni))]
    fitting = [params["fitting"][source(u)] for u in range(n2)]
    davg = np.zeros((n2, big.nnei, 4))
    dstd = np.ones((n2, big.nnei, 4))
    ours, theirs = config.sel_offsets, big.sel_offsets
    for u in range(n2):
        if u not in from_dp:
            continue
        for v in range(n2):
            if v in from_dp:
                w = from_dp[v]
                davg[u, theirs[v]:theirs[v + 1]] = stats["davg"][from_dp[u], ours[w]:ours[w + 1]]
                dstd[u, theirs[v]:theirs[v + 1]] = stats["dstd"][from_dp[u], ours[w]:ours[w + 1]]
    bias = np.zeros(n2)
    for t, u in to_dp.items():
        bias[u] = 0.0 if t in config.atom_exclude_types else stats["type_bias"][t]
    tree = to_deepmd(big, {"embedding": embedding, "fitting": fitting},
                     {"davg": davg, "dstd": dstd, "type_bias": bias})
    backbone = tree["model"]
    placeholders = [u for u in range(nr, n2) if u not in from_dp]
    pairs = [[p, j] for p in placeholders for j in range(n2)]
    backbone["pair_exclude_types"] = pairs
    backbone["descriptor"]["exclude_types"] = pairs
    backbone["atom_exclude_types"] = list(range(nr, n2))
    use_spin = [r in settings.elements for r in real]
    scale = [settings.eta_of(r) if r in settings.elements else 0.0 for r in real]
    tree["model"] = {"type": "spin_ener", "backbone_model": backbone,
                     "spin": {"use_spin": use_spin, "virtual_scale": scale}}
    tree["model_def_script"]["type_map"] = list(real)
    tree["model_def_script"]["spin"] = {"use_spin": use_spin, "virtual_scale": scale}
    tree["model_def_script"]["cathodeml_spin"] = dict(spin_dict)
    return tree


def from_deepmd_spin(tree: dict) -> tuple[ModelConfig, dict, dict, dict]:
    """(config, params, stats, spin settings dict) of a DeePMD-kit "spin_ener" se_e2_a tree: the
    inverse of `to_deepmd_spin`; DeePMD-kit's own spin models come in as vector-mode cathodeml
    spin models (R' = R + η·S), those written by cathodeml with their collinear settings."""
    from cathodeml import spin as spin_mod

    model = tree["model"]
    section = model.get("spin") or {}
    use_spin = list(section.get("use_spin", []))
    scale = np.broadcast_to(np.asarray(section.get("virtual_scale", 0.0), dtype=float), (len(use_spin),))
    backbone = dict(model["backbone_model"])
    nr, n2 = len(use_spin), 2 * len(use_spin)
    if sorted(backbone.get("atom_exclude_types") or []) != list(range(nr, n2)):
        raise _refuse("a spin model whose virtual atoms are not all excluded from the fitting")
    inner = {k: v for k, v in backbone.items() if k not in ("atom_exclude_types", "pair_exclude_types")}
    inner["descriptor"] = {k: v for k, v in backbone["descriptor"].items() if k != "exclude_types"}
    big, params, stats = from_deepmd({"model": inner})
    real = list(big.type_map[:nr])
    magnetic = [r for r, u in zip(real, use_spin) if u]
    meta = (tree.get("model_def_script") or {}).get("cathodeml_spin")
    spin_dict = meta or spin_mod.SpinSettings(tuple(magnetic), tuple(float(scale[real.index(m)]) for m in magnetic),
                                              (0.0,) * len(magnetic), "vector").to_dict()
    keep = list(range(nr)) + [nr + real.index(m) for m in magnetic]  # DeePMD-kit types we keep, in our order
    type_map = real + [spin_mod.virtual_type_name(m) for m in magnetic]
    config = big.replace(type_map=tuple(type_map), sel=tuple(big.sel[u] for u in keep),
                         atom_exclude_types=tuple(range(nr, len(keep))))
    if config.type_one_side:
        embedding = [params["embedding"][u] for u in keep]
    else:
        embedding = [None] * config.n_embedding_nets
        for a, ca in enumerate(keep):
            for b, nb in enumerate(keep):
                embedding[config.embedding_index(a, b)] = params["embedding"][big.embedding_index(ca, nb)]
    theirs = big.sel_offsets
    cols = np.concatenate([np.arange(theirs[u], theirs[u + 1]) for u in keep])
    stats = {"davg": stats["davg"][keep][:, cols], "dstd": stats["dstd"][keep][:, cols],
             "type_bias": np.where(np.arange(len(keep)) < nr, stats["type_bias"][keep], 0.0)}
    return config, {"embedding": embedding, "fitting": [params["fitting"][u] for u in keep]}, stats, spin_dict
