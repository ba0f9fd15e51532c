"""Spin states re-optimised during MD (`md --spin-search every=N`): the spin paper's "future work".

A spin model holds the ground state and the excited spin states of every structure, so MD with
it should, as the atoms move, keep the transition-metal moments in their lowest-energy states
(the Born–Oppenheimer idea applied to the discrete spin states).  Every N steps the current
positions are handed to `cathodeml.spin_search` (warm-started from the current states, seeded by
seed + step so that a run and its restart make the same choices); when it finds lower energy, the
host moments in the potential's SpinState change, the neighbour list is rebuilt and the forces
recomputed.  The potential energy -- and so the conserved quantity -- then jumps by ΔE < 0: the
dynamics is piecewise Hamiltonian, and every jump is logged (step, E before, E after, atoms
changed) in `traj.spin.log` next to the trajectory.  The moments are stored per frame in the
H5MD file and in the checkpoint, so `--restart` continues exactly.

Units: Å, eV, μB.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from cathodeml.errors import CathodemlError

LOG_HEADER = "# step E_before_eV E_after_eV dE_eV changed method seconds\n"


@dataclasses.dataclass(frozen=True)
class SpinSearchSettings:
    """every: steps between searches (a multiple of the output stride); keep_counts: keep the
    number of atoms in each state; sweeps, replicas: annealing effort (large cells);
    tolerance: the least energy gain (eV) that changes states (so round-off never flips them)."""

    every: int
    keep_counts: bool = False
    sweeps: int = 50
    replicas: int = 4
    tolerance: float = 1e-6

    @classmethod
    def parse(cls, text: str) -> "SpinSearchSettings":
        """"every=100" or "every=100,keep-counts,sweeps=20,replicas=4" (also a bare "100")."""
        values: dict = {}
        for item in (p.strip() for p in text.split(",")):
            if not item:
                continue
            key, sep, value = item.partition("=")
            key = key.strip().replace("-", "_")
            try:
                if not sep and key.isdigit():
                    values["every"] = int(key)
                elif key == "keep_counts":
                    values["keep_counts"] = value.strip().lower() not in ("0", "false", "no") if sep else True
                elif key in ("every", "sweeps", "replicas") and sep:
                    values[key] = int(value)
                elif key == "tolerance" and sep:
                    values[key] = float(value)
                else:
                    raise ValueError(key)
            except ValueError:
                raise CathodemlError(f"--spin-search {text!r}: write every=N[,keep-counts][,sweeps=S][,replicas=R]") from None
        if values.get("every", 0) < 1:
            raise CathodemlError(f"--spin-search {text!r}: give every=N with N ≥ 1 steps")
        if values.get("sweeps", 1) < 1 or values.get("replicas", 1) < 1:
            raise CathodemlError(f"--spin-search {text!r}: sweeps and replicas must be at least 1")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class SpinSearchSchedule:
    """The spin states of one MD run: holds the potential's SpinState, searches on demand, logs
    the changes.  Call it with an MDState at a search step; it returns whether the states changed."""

    def __init__(self, model, potential, atom_types, cell, settings: SpinSearchSettings, *, seed: int = 0,
                 catalogue: dict | None = None, log: Path | None = None):
        from cathodeml import spin

        if potential.spin is None:
            raise CathodemlError("--spin-search needs a spin model (one trained on augment-spin data)")
        self.model, self.potential, self.settings, self.seed = model, potential, settings, seed
        self.atom_types = np.asarray(atom_types, dtype=np.int64)
        self.cell = np.asarray(cell, dtype=np.float64)
        self.catalogue = catalogue or {}
        self.sites = spin.model_virtual_sites(model.type_map, model.spin, self.atom_types)
        self.log = log
        self.problem = None
        self.changes: list[dict] = []

    # --- state ----------------------------------------------------------------------------
    @property
    def host_moments(self) -> np.ndarray:
        return self.potential.spin.moments

    def per_atom(self) -> np.ndarray:
        """Moments of every atom [N] μB (0 on non-magnetic atoms), as written to the trajectory."""
        out = np.zeros(self.atom_types.size)
        out[self.sites.host_index] = self.host_moments
        return out

    def restore(self, host_moments) -> None:
        """Set the host moments saved in a checkpoint."""
        self.potential.spin.moments = np.array(host_moments, dtype=np.float64)

    # --- the search -----------------------------------------------------------------------
    def __call__(self, state) -> bool:
        from cathodeml import spin_search as S

        positions = np.asarray(state.positions)
        step = int(state.step)
        self.problem = S.build_problem(self.model, positions, self.cell, self.atom_types, self.catalogue,
                                       previous=self.problem, margin=1.2)
        current = self.problem.states_of(self.host_moments)
        result = S.search(self.problem, initial_states=current, seed=self.seed + step,
                          keep_counts=self.settings.keep_counts, replicas=self.settings.replicas,
                          sweeps=self.settings.sweeps, n_best=1, gradient_start=False)
        before = result.initial_energy
        changed = int(np.sum(result.states != current))
        moved = changed > 0 and result.energy < before - self.settings.tolerance
        if moved:
            self.potential.spin.moments = np.array(result.moments, dtype=np.float64)
        record = {"step": step, "energy_before_eV": before, "energy_after_eV": result.energy if moved else before,
                  "changed": changed if moved else 0, "method": result.method, "seconds": result.seconds}
        self.changes.append(record)
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(f"{step} {before:.8f} {record['energy_after_eV']:.8f} "
                         f"{record['energy_after_eV'] - before:.8f} {record['changed']} {result.method} "
                         f"{result.seconds:.3f}\n")
        return moved


def truncate_log(log: Path, step: int) -> None:
    """Keep the lines of searches at or before `step` (a restart repeats the later ones)."""
    if not log.exists():
        log.write_text(LOG_HEADER)
        return
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(ln for ln in lines if ln.startswith("#") or (ln.split() and int(ln.split()[0]) <= step)))
