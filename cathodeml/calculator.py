"""An ASE calculator for cathodeml models: the Python door to relaxations, NEB and anything ASE drives.

It is a thin shell over the model's one energy path (`cathodeml.model.evaluate`, the function
`train`, `test` and `md` reach too), so a number from ASE is the number the commands give.  A
spin model takes its moments from `atoms.get_initial_magnetic_moments()` (μB, as VASP's MAGMOM)
unless they are passed to the calculator; the moments are held fixed, as in `md`.  Compiled
kernels are reused across calls: the neighbour list keeps its padded capacity while the atoms
move (it only grows, by coarse steps), so a relaxation or an NEB compiles once per structure
size.  Units are ASE's: Å, eV, eV/Å, stress in eV/Å³ (Voigt order xx yy zz yz xz xy, positive
under tension: σ = −W/V with W the model's virial).
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from cathodeml.errors import CathodemlError


class CathodemlCalculator(Calculator):
    """ASE calculator of a cathodeml `Model` (or the path of a model.h5 / DeePMD-kit .dp).

    moments: per-atom moments (μB, [N] or [N, 3]) for a spin model; None takes them from the
    atoms' initial magnetic moments.  skin (Å): neighbour-list skin (lists are rebuilt every
    call; the skin only pads the capacity so small moves keep the compiled shape).
    Properties: energy, free_energy (= energy), forces, stress (periodic cells), energies
    (per atom; a virtual spin atom's energy counted on its host).
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(self, model, *, moments=None, skin: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        if not hasattr(model, "config"):
            from cathodeml import load_model

            model = load_model(model)
        from cathodeml import spin

        self.model = model
        self.moments = None if moments is None else np.asarray(moments, dtype=float)
        self.skin = float(skin)
        self.real_type_map = spin.model_real_type_map(model.type_map, model.spin)
        self._capacity: dict[int, tuple] = {}  # atom count → neighbour capacity, so shapes stay fixed

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        import jax

        from cathodeml import spin
        from cathodeml.md.potentials import padded_capacity
        from cathodeml.model import build_neighbor_list, evaluate, with_capacity

        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        config = self.model.config
        types = self._types(atoms.get_chemical_symbols())
        cell = _periodic_cell(atoms)
        positions = atoms.get_positions()
        sites = spin.model_virtual_sites(self.model.type_map, self.model.spin, types)
        host_m = None
        full, full_types = positions, types
        if sites is not None:
            moments = self.moments if self.moments is not None else atoms.get_initial_magnetic_moments()
            if self.moments is None and not np.any(moments):
                moments = None  # ASE's default of zeros means "not given"
            host_m = spin.host_moments(sites, moments)
            full, full_types = sites.place(positions, host_m), sites.all_types(types)
        n = len(full_types)
        nbr = build_neighbor_list(full, cell, full_types, config.rcut, config.ntypes, skin=self.skin,
                                  capacity=self._capacity.get(n), margin=1.2)
        padded = tuple(padded_capacity(c, 1.0) for c in nbr.capacity)
        if padded != nbr.capacity:
            nbr = with_capacity(nbr, padded)
        self._capacity[n] = nbr.capacity
        out = jax.device_get(evaluate(config, self.model.params, self.model.stats, positions, cell, nbr,
                                      moments=host_m, sites=sites))
        energy = float(out["energy"])
        self.results = {"energy": energy, "free_energy": energy, "forces": np.asarray(out["forces"], dtype=float),
                        "energies": np.asarray(out["atomic_energies"], dtype=float)}
        if cell is not None:
            stress = -np.asarray(out["virial"], dtype=float) / abs(np.linalg.det(cell))
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)  # averages the off-diagonal pairs

    def _types(self, symbols) -> np.ndarray:
        unknown = sorted(set(symbols) - set(self.real_type_map))
        if unknown:
            raise CathodemlError(f"the structure has {','.join(unknown)}, which the model does not know "
                                 f"(its elements: {','.join(self.real_type_map)})")
        return np.array([self.real_type_map.index(s) for s in symbols], dtype=np.int64)


def _periodic_cell(atoms):
    """The cell [3, 3] Å of a periodic structure, None for a free one; mixed boundaries are refused."""
    pbc = np.asarray(atoms.get_pbc(), dtype=bool)
    if pbc.all():
        return np.asarray(atoms.get_cell(), dtype=float)
    if not pbc.any():
        return None
    raise CathodemlError(f"periodic boundaries {pbc.tolist()}: cathodeml models take fully periodic cells or free "
                         "clusters; add vacuum and set pbc=True for a slab")
