"""DeepPot-SE (se_e2_a) energy model in JAX, numerically identical to DeePMD-kit 3.2.

Why it looks like this: a model is a frozen, hashable `ModelConfig` (a static jit argument) plus
two pytrees of arrays -- `params` (trainable weights) and `stats` (davg/dstd and the per-type
energy bias, fixed during training) -- and the physics is pure functions of
(config, params, stats, positions, cell, neighbour list).  So `train` can vmap over frames and
differentiate w.r.t. weights, positions and strain, and `md` can jit one step, without either
knowing the internals.  Neighbour finding is host work with static padded shapes; the final
choice of neighbours happens inside the jitted energy, so a list built with a skin stays valid
while atoms move.

PUBLIC API (stable; extended, never renamed)
============================================

Config and model
----------------
ModelConfig(type_map: tuple[str], sel: tuple[int], rcut=6.0, rcut_smth=0.5,
            embedding_neurons=(25, 50, 100), axis_neuron=16, type_one_side=True,
            embedding_resnet_dt=False, fitting_neurons=(240, 240, 240), fitting_resnet_dt=True,
            activation="tanh", precision="float64")        # frozen, hashable; lengths Å
    .ntypes, .nnei (=Σsel), .dim_descriptor, .dtype, .to_dict(), ModelConfig.from_dict(d),
    .replace(**changes), .embedding_index(centre_type, neighbor_type)
    Bad values raise CathodemlError.
Model(config, params, stats, spin: dict | None = None, metadata: dict = {})   # frozen dataclass
    .n_parameters(), .type_map

params = init_params(config, key) -> {"embedding": [net, ...], "fitting": [net per type]}
    net = [layer, ...], layer = {"w": [in, out], "b": [out]} (+ "idt": [out] with resnet_dt)
    DeePMD-kit initialisation (w ~ N(0, 1/(in+out)), b ~ N(0, 1), idt ~ N(0.1, 0.001²)).
    All of params is trainable.  Stored float64; cast to config.precision inside the energy.
stats = default_stats(config) -> {"davg": [nt, Σsel, 4] zeros, "dstd": [nt, Σsel, 4] ones,
                                  "type_bias": [nt] zeros (eV)}     # NOT trainable

Neighbour lists (host, numpy; vesin cell list)
----------------------------------------------
nbr = build_neighbor_list(positions [N,3] Å, cell [3,3] Å rows = lattice vectors, or None / zeros
                          for a free cluster, types [N] int, rcut, ntypes, *, skin=0.0,
                          capacity=None, margin=1.0) -> NeighborList
nbrs = build_neighbor_lists(positions [nf,N,3], cells [nf,3,3] or None, types [N], rcut, ntypes,
                            *, skin=0.0, capacity=None, margin=1.0)
    -> one NeighborList with a leading frame axis on every array (same capacity for all frames),
       ready for jax.vmap(..., in_axes=(None, None, None, 0, 0, 0)) over (positions, cells, nbrs).
NeighborList is a JAX pytree: arrays types, order, index [N, C] (-1 = empty), shift [N, C, 3],
    reference_positions; static capacity (tuple, slots per neighbour type), type_counts, cutoff,
    skin.  Triclinic cells and cells narrower than 2·rcut (several images of one atom) are fine.
    Capacity: never truncates.  Pass the old `capacity=nbr.capacity` when rebuilding to keep shapes
    (no recompilation); if the atoms now need more, the list grows -- detect it with
    `new.capacity != old.capacity` (the jitted step will recompile once).  In MD use margin≈1.2.
needs_rebuild(nbr, positions) -> traced bool: some atom moved > skin/2 since the build.
    Do not wrap positions into the cell between rebuilds (shifts are fixed at build time).
count_within_cutoff(nbr, positions, cell, rcut) -> [N, ntypes] (host) to warn when > sel.
with_capacity(nbr, capacity) -> re-padded list (to batch lists built separately).

Energy (pure, jittable, vmappable, differentiable): the one path every command uses
----------------------------------------------------------------------------------
atomic_energies(config, params, stats, positions, cell, nbr) -> [N] eV   (the model, written once)
centre_energies(config, params, stats, positions, cell, nbr, centres [n], centre_type) -> [n] eV
    the same numbers for a subset of atoms of one type, nothing else computed (local energy
    changes: spin_search's single flips)
energy(config, params, stats, positions, cell, nbr, *, moments=None, sites=None) -> scalar eV
energy_forces_virial(config, params, stats, positions, cell, nbr, *, moments=None, sites=None,
                     virial=True) -> (E eV, F [N,3] eV/Å, W [3,3] eV)
    jitted with config static.  F = −∂E/∂r, W = −∂E/∂ε (r → r(1+ε), cell → cell(1+ε));
    DeePMD-kit's virial sign (stress = −W/V).  cell may be None for free systems.  `train` and
    `test` vmap it over frames (train.step.predict_batch), `md` differentiates `energy`, the
    ASE calculator calls `evaluate`; the DeePMD-kit parity tests run through all of them.
evaluate(...same...) -> {"energy", "forces", "virial", "atomic_energies"}: the same derivative,
    with per-atom energies (a virtual atom's energy counted on its host).
    Neighbour choice inside the energy = DeePMD-kit's: of the Σsel nearest within rcut, the sel[t]
    nearest of each type; empty slots still enter the nets as −davg/dstd.
    precision "float32": positions, params, stats are cast on entry; outputs are float32.

Virtual spin atoms
------------------
A spin model (Model.spin = its SpinSettings dict; `<El>_spin` types at the end of its type map)
takes REAL positions [N, 3] plus `sites` (cathodeml.spin.VirtualSites of the structure, from
spin.model_virtual_sites(model.type_map, model.spin, real_types)) and `moments` (the hosts'
moments, spin.host_moments(sites, per_atom_moments)).  The virtual atoms are placed inside the
energy from the (strained) real positions, so forces on hosts include their virtual atoms' and
the virial leaves the offset η·S + d unstrained (DeePMD-kit's spin virial).  The neighbour list
is built on real + virtual atoms: build_neighbor_list(sites.place(R, moments), cell,
sites.all_types(real_types), ...).

Statistics (host)
-----------------
davg, dstd = descriptor_stats(config, systems)   # systems: iterable of
             (positions [nf,N,3] Å, cells [nf,3,3] or None, types [N]); DeePMD-kit definition:
             per centre type, pooled over all Σsel slots incl. empty ones; std clamped at 1e-2.
environment_sums(config, positions, cells, types) / stats_from_sums(config, sums): same, additive.
type_bias = fit_type_bias(type_counts [nf, nt], energies [nf] eV) -> [nt] eV (least squares).
stats = {"davg": davg, "dstd": dstd, "type_bias": type_bias}

Files
-----
save_model(path, model) -> model.h5 / load_model(path) -> Model   # model.h5 or DeePMD-kit .dp, by content
import_deepmd(path.dp) -> Model / export_deepmd(path.dp, model)   # DeePMD-kit .dp (se_e2_a, ener)

Example
-------
    from cathodeml.model import load_model, build_neighbor_list, energy_forces_virial
    m = load_model("model.h5")
    nbr = build_neighbor_list(R, cell, types, m.config.rcut, m.config.ntypes)
    e, f, w = energy_forces_virial(m.config, m.params, m.stats, R, cell, nbr)
"""

from cathodeml.model.config import ModelConfig
from cathodeml.model.neighbors import (
    NeighborList,
    build_neighbor_list,
    build_neighbor_lists,
    count_within_cutoff,
    needs_rebuild,
    with_capacity,
)
from cathodeml.model.potential import (
    atomic_energies,
    centre_energies,
    chunked_energy,
    default_stats,
    energy,
    energy_forces_virial,
    evaluate,
    init_params,
)
from cathodeml.model.stats import descriptor_stats, environment_sums, fit_type_bias, stats_from_sums
from cathodeml.model.store import Model, export_deepmd, import_deepmd, load_model, save_model

__all__ = [
    "ModelConfig", "Model", "NeighborList", "build_neighbor_list", "build_neighbor_lists", "count_within_cutoff",
    "needs_rebuild", "with_capacity", "atomic_energies", "centre_energies", "chunked_energy", "energy", "energy_forces_virial", "evaluate", "init_params",
    "default_stats", "descriptor_stats", "environment_sums", "stats_from_sums", "fit_type_bias", "save_model",
    "load_model", "import_deepmd", "export_deepmd",
]
