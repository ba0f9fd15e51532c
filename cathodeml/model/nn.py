"""Dense layers with DeePMD-kit's residual rules, as pure functions over dict-of-array layers.

A layer is `{"w": [n_in, n_out], "b": [n_out]}` plus `"idt": [n_out]` when it has a resnet
timestep.  DeePMD-kit's rule (deepmd/dpmodel/utils/network.py, NativeLayer.call) is
y = act(x·w + b) · idt, then y + x when n_out == n_in, or y + [x, x] when n_out == 2·n_in, for
every layer flagged residual (all embedding layers and all hidden fitting layers); the fitting
net's last layer is linear with no residual.  The shapes decide the residual branch at trace
time, so the functions jit into one fused chain of matmuls.  Dimensionless in, dimensionless out.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def activation_fn(name: str):
    """The activation function called `name` (DeePMD-kit's names)."""
    name = name.lower()
    if name == "tanh":
        return jnp.tanh
    if name in ("none", "linear"):
        return lambda x: x
    if name == "relu":
        return jax.nn.relu
    if name in ("gelu", "gelu_tf"):
        return lambda x: 0.5 * x * (1 + jnp.tanh(jnp.sqrt(2 / jnp.pi) * (x + 0.044715 * x ** 3)))
    if name == "softplus":
        return lambda x: jnp.log(1 + jnp.exp(x))
    if name == "sigmoid":
        return jax.nn.sigmoid
    if name == "silu":
        return lambda x: x * jax.nn.sigmoid(x)
    raise ValueError(f"unknown activation {name!r}")


def dense_layer(layer: dict, x, act, residual: bool):
    """One layer: act(x·w + b) (· idt), plus the identity/doubled-identity shortcut if residual."""
    w = layer["w"]
    # a 1-wide input (the embedding's s) is a broadcast product, not a matmul: same numbers, faster
    y = act((x * w[0] if w.shape[0] == 1 else x @ w) + layer["b"])
    if "idt" in layer:
        y = y * layer["idt"]
    n_in, n_out = w.shape
    if residual and n_out == n_in:
        y = y + x
    elif residual and n_out == 2 * n_in:
        y = y + jnp.concatenate([x, x], axis=-1)
    return y


def embedding_net(layers: list, x, activation: str = "tanh"):
    """Embedding net: every layer residual (where shapes allow). x [..., n_in] → [..., width]."""
    act = activation_fn(activation)
    for layer in layers:
        x = dense_layer(layer, x, act, residual=True)
    return x


def fitting_net(layers: list, x, activation: str = "tanh"):
    """Fitting net: residual hidden layers, then a linear output layer. x [..., n_in] → [..., n_out]."""
    act = activation_fn(activation)
    for layer in layers[:-1]:
        x = dense_layer(layer, x, act, residual=True)
    return dense_layer(layers[-1], x, lambda v: v, residual=False)


def init_layer(key, n_in: int, n_out: int, timestep: bool, bias_std: float = 1.0, dtype=np.float64) -> dict:
    """DeePMD-kit (PyTorch backend) initialisation: w ~ N(0, 1/√(n_in+n_out)), b ~ N(0, bias_std²),
    idt ~ N(0.1, 0.001²) -- the timestep only where a shortcut exists (n_out = n_in or 2·n_in)."""
    kw, kb, kt = jax.random.split(key, 3)
    layer = {
        "w": jax.random.normal(kw, (n_in, n_out), dtype) / np.sqrt(n_in + n_out),
        "b": bias_std * jax.random.normal(kb, (n_out,), dtype),
    }
    if timestep and (n_out == n_in or n_out == 2 * n_in):
        layer["idt"] = 0.1 + 0.001 * jax.random.normal(kt, (n_out,), dtype)
    return layer


def init_embedding_net(key, n_in: int, neurons, resnet_dt: bool, dtype=np.float64) -> list:
    """Layers n_in → neurons[0] → … → neurons[-1], initialised as DeePMD-kit does."""
    keys = jax.random.split(key, len(neurons))
    sizes = [n_in, *neurons]
    return [init_layer(k, a, b, resnet_dt, dtype=dtype) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def init_fitting_net(key, n_in: int, neurons, resnet_dt: bool, n_out: int = 1, dtype=np.float64) -> list:
    """Hidden layers as an embedding net, then a linear n_out layer."""
    k_hidden, k_out = jax.random.split(key)
    layers = init_embedding_net(k_hidden, n_in, neurons, resnet_dt, dtype) if neurons else []
    last_in = neurons[-1] if neurons else n_in
    layers.append(init_layer(k_out, last_in, n_out, False, dtype=dtype))
    return layers
