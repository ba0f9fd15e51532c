"""`cathodeml info model.h5` (or model.dp): architecture, parameter count, statistics and spin settings."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from cathodeml.model.store import load_model


def model_summary(model, path) -> dict:
    """JSON-able summary of a Model: config, parameter counts per part, davg/dstd and type bias per type."""
    c = model.config
    count = lambda tree: int(sum(np.size(la[k]) for net in tree for la in net for k in la))  # noqa: E731
    per_type = []
    for t, name in enumerate(c.type_map):
        per_type.append({"type": name, "sel": c.sel[t], "type_bias_eV": float(model.stats["type_bias"][t]),
                         "davg_r": float(np.asarray(model.stats["davg"])[t, 0, 0]),
                         "dstd_r": float(np.asarray(model.stats["dstd"])[t, 0, 0]),
                         "dstd_a": float(np.asarray(model.stats["dstd"])[t, 0, 1])})
    return {"path": str(path), "kind": "model", "descriptor": "se_e2_a", "config": c.to_dict(),
            "n_parameters": model.n_parameters(), "n_parameters_embedding": count(model.params["embedding"]),
            "n_parameters_fitting": count(model.params["fitting"]), "n_embedding_nets": c.n_embedding_nets,
            "dim_descriptor": c.dim_descriptor, "types": per_type, "spin": model.spin,
            "metadata": model.metadata}


def describe_model(path):
    """(summary dict, render(console)) for a model.h5 or a DeePMD-kit .dp."""
    model = load_model(path)
    s = model_summary(model, path)
    c = model.config

    def render(console):
        console.print(f"[bold]{path}[/bold]: se_e2_a energy model, {s['n_parameters']:,} parameters "
                      f"({s['n_parameters_embedding']:,} embedding, {s['n_parameters_fitting']:,} fitting), "
                      f"{c.precision}")
        arch = Table("setting", "value", title="architecture")
        arch.add_row("rcut_smth → rcut", f"{c.rcut_smth:g} → {c.rcut:g} Å")
        arch.add_row("embedding", "-".join(map(str, c.embedding_neurons)) + f" ({c.n_embedding_nets} nets, "
                     f"type_one_side={c.type_one_side}, resnet_dt={c.embedding_resnet_dt})")
        arch.add_row("axis_neuron / descriptor", f"{c.axis_neuron} / {c.dim_descriptor}")
        arch.add_row("fitting", "-".join(map(str, c.fitting_neurons)) + f"-1 (resnet_dt={c.fitting_resnet_dt})")
        arch.add_row("activation", c.activation)
        if c.tables:
            comp = model.metadata.get("compression", {})
            arch.add_row("compressed", f"tabulated embedding, stride {c.tables[0][3]:g}/{c.tables[0][4]:g}, "
                         f"range {min(g[0] for g in c.tables):g} … {max(g[2] for g in c.tables):g} "
                         f"(shortest pair {comp.get('min_nbor_dist', float('nan')):.4g} Å)")
        console.print(arch)
        types = Table("type", "sel", "bias (eV)", "davg_r", "dstd_r", "dstd_a", title="per type")
        for e in s["types"]:
            types.add_row(e["type"], str(e["sel"]), f"{e['type_bias_eV']:.6g}", f"{e['davg_r']:.4g}",
                          f"{e['dstd_r']:.4g}", f"{e['dstd_a']:.4g}")
        console.print(types)
        if model.spin:
            console.print(f"spin settings: {model.spin}")

    return s, render
