"""The frozen settings of a DeepPot-SE (se_e2_a) energy model.

A model is a `ModelConfig` (hashable, so it can be a static argument of `jax.jit`) plus two
pytrees of arrays: `params` (the trainable embedding and fitting weights) and `stats` (the
descriptor normalisation davg/dstd and the per-type energy bias, fixed during training).  The
field names follow DeePMD-kit's `se_e2_a` descriptor and `ener` fitting so that a user can map
an `input.json` onto it by eye; `to_dict`/`from_dict` is the JSON stored in model.h5.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from cathodeml.errors import CathodemlError

ACTIVATIONS = ("tanh", "none", "linear", "relu", "gelu", "gelu_tf", "softplus", "sigmoid", "silu")
PRECISIONS = ("float64", "float32")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an se_e2_a energy model (lengths in Å).

    type_map            element (or `<El>_spin`) name of each type index
    rcut, rcut_smth     cutoff and start of the smooth switch (Å)
    sel                 neighbour slots per neighbour type (nearest first, extra ones dropped)
    embedding_neurons   widths of the embedding net (input is the 1-d normalised s(r))
    axis_neuron         number of embedding columns in the second factor of D = T·T<ᵀ
    type_one_side       True: one embedding net per neighbour type; False: per (centre, neighbour) pair
    embedding_resnet_dt timestep vector on residual embedding layers
    fitting_neurons     hidden widths of the per-type fitting nets (output is 1 energy, eV)
    fitting_resnet_dt   timestep vector on residual fitting layers (DeePMD-kit default True)
    activation          activation of every hidden layer
    precision           "float64" or "float32": the dtype the energy is evaluated in
    atom_exclude_types  types whose atoms carry no energy of their own (DeePMD-kit's atom_exclude_types);
                        they still act as neighbours.  A spin model whose `<El>_spin` types are excluded
                        is DeePMD-kit's kind of spin model (its virtual atoms have no fitting), the kind
                        LAMMPS's pair_style deepspin runs
    tables              () for embedding nets evaluated as nets; for a compressed model (`cathodeml compress`,
                        model/compress.py) one grid (lower, upper, max, stride0, stride1) per embedding net,
                        the coefficients being stats["tables"]
    """

    type_map: tuple[str, ...]
    sel: tuple[int, ...]
    rcut: float = 6.0
    rcut_smth: float = 0.5
    embedding_neurons: tuple[int, ...] = (25, 50, 100)
    axis_neuron: int = 16
    type_one_side: bool = True
    embedding_resnet_dt: bool = False
    fitting_neurons: tuple[int, ...] = (240, 240, 240)
    fitting_resnet_dt: bool = True
    activation: str = "tanh"
    precision: str = "float64"
    atom_exclude_types: tuple[int, ...] = ()
    tables: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self):
        for name in ("type_map", "sel", "embedding_neurons", "fitting_neurons", "atom_exclude_types"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "sel", tuple(int(s) for s in self.sel))
        object.__setattr__(self, "atom_exclude_types", tuple(sorted({int(t) for t in self.atom_exclude_types})))
        if any(not 0 <= t < len(self.type_map) for t in self.atom_exclude_types):
            raise CathodemlError(f"model config: atom_exclude_types {list(self.atom_exclude_types)} must index the "
                                 f"type map ({len(self.type_map)} types)")
        object.__setattr__(self, "tables", tuple(tuple(float(v) for v in grid) for grid in self.tables))
        if self.tables and (len(self.tables) != self.n_embedding_nets or any(len(g) != 5 for g in self.tables)):
            raise CathodemlError(f"model config: tables must hold one (lower, upper, max, stride0, stride1) grid per "
                                 f"embedding net ({self.n_embedding_nets}), got {len(self.tables)}")
        object.__setattr__(self, "rcut", float(self.rcut))
        object.__setattr__(self, "rcut_smth", float(self.rcut_smth))
        if not self.type_map:
            raise CathodemlError("model config: type_map is empty; list the element of each type")
        if len(set(self.type_map)) != len(self.type_map):
            raise CathodemlError(f"model config: type_map {list(self.type_map)} has duplicates")
        if len(self.sel) != len(self.type_map):
            raise CathodemlError(f"model config: sel has {len(self.sel)} entries but type_map has "
                                 f"{len(self.type_map)}; give one sel per type")
        if any(s < 0 for s in self.sel) or sum(self.sel) == 0:
            raise CathodemlError(f"model config: sel {list(self.sel)} must be non-negative with a positive sum")
        if not 0.0 <= self.rcut_smth < self.rcut:
            raise CathodemlError(f"model config: need 0 <= rcut_smth < rcut, got rcut_smth={self.rcut_smth}, "
                                 f"rcut={self.rcut}")
        if not self.embedding_neurons or any(n <= 0 for n in self.embedding_neurons):
            raise CathodemlError("model config: embedding_neurons must be a non-empty list of positive widths")
        if any(n <= 0 for n in self.fitting_neurons):
            raise CathodemlError("model config: fitting_neurons must be positive widths")
        if not 0 < self.axis_neuron <= self.embedding_neurons[-1]:
            raise CathodemlError(f"model config: axis_neuron must be in 1..{self.embedding_neurons[-1]} "
                                 f"(the last embedding width), got {self.axis_neuron}")
        if self.activation.lower() not in ACTIVATIONS:
            raise CathodemlError(f"model config: activation {self.activation!r} unknown; use one of {ACTIVATIONS}")
        if self.precision not in PRECISIONS:
            raise CathodemlError(f"model config: precision must be 'float64' or 'float32', got {self.precision!r}")

    @property
    def ntypes(self) -> int:
        return len(self.type_map)

    @property
    def nnei(self) -> int:
        """Total neighbour slots Σ sel (the N in D = (GᵀR̃)(R̃ᵀG<)/N²)."""
        return sum(self.sel)

    @property
    def sel_offsets(self) -> tuple[int, ...]:
        """Start of each neighbour type's block of slots, plus the end: (0, sel0, sel0+sel1, ...)."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.sel)]))

    @property
    def dim_descriptor(self) -> int:
        return self.embedding_neurons[-1] * self.axis_neuron

    @property
    def n_embedding_nets(self) -> int:
        return self.ntypes if self.type_one_side else self.ntypes ** 2

    @property
    def dtype(self):
        return np.float64 if self.precision == "float64" else np.float32

    def embedding_index(self, centre_type: int, neighbor_type: int) -> int:
        """Index into params["embedding"] of the net for this pair (DeePMD-kit's ordering)."""
        if self.type_one_side:
            return neighbor_type
        return centre_type + neighbor_type * self.ntypes

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if not d["tables"]:
            del d["tables"]  # an uncompressed model's config reads as before
        return {k: [list(g) for g in v] if k == "tables" else list(v) if isinstance(v, tuple) else v
                for k, v in d.items()}

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CathodemlError(f"model config: unknown keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)
