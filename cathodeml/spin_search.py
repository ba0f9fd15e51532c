"""Spin ground-state search: the assignment of catalogue spin states to the magnetic atoms that a
spin model gives the lowest energy, at fixed atom positions.

Why it is built this way.  A spin model's energy depends on each magnetic atom's moment only
through its virtual atom (z' = z + η·S + d), and the states an element can take are discrete (the
catalogue `train` stores in the model: the clusters of signed moments it saw, e.g. Fe ±4.2 μB).
So the search is over integers k_i (the state of atom i), and three things make it fast:

* One neighbour list serves every assignment: it is built with each virtual atom at the middle of
  its possible positions and a skin of the widest range (η·(S_max − S_min)), so whatever states
  are chosen, every pair inside rcut is listed; the energy picks the neighbours itself.
* A state change moves one virtual atom, so it changes only the energies of the atoms within rcut
  of that virtual atom: the *region* of a site (its row of the list, each atom once, itself
  included, grouped by type with static sizes).  A move costs the energies of its region, not of
  the cell (`centre_energies`), and the per-atom energies of the current assignment are kept and
  updated in place.  The change is exact: the same function gives the full energy.
* Replicas (independent Metropolis chains from different starts) run side by side under
  `jax.vmap`, each one `lax.scan` over its moves: no host round trip inside a search.

Small problems (≤ `exhaustive_limit` assignments, e.g. the 2¹² of a 12-Fe hematite cell) are
enumerated instead, in vmapped batches of full energies: the answer is then exact.  The gradient
∂E/∂S (the "spin force" of the spin paper) seeds one replica -- a projected gradient descent over
continuous moments, rounded to the nearest states -- and is reported at the answer.
`keep_counts` keeps how many atoms of each element are in each state (moves are then exchanges
of two atoms' states, like a fixed NUPDOWN in VASP).  Everything is deterministic for a seed.

Units: Å, eV, μB; temperatures of the annealing are energies (eV).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from cathodeml import spin
from cathodeml.errors import CathodemlError


# ----------------------------------------------------------------------------- the catalogue


def model_catalogue(model) -> dict[str, list[float]]:
    """{element: [state centres, μB, increasing]} stored in a spin model by `train` ({} if none)."""
    states = (model.spin or {}).get("states") or {}
    return {el: [float(s["center"]) for s in v] for el, v in states.items()}


def trained_fractions(model) -> dict[str, list]:
    """{element: [[lowest, highest] share of the element's atoms in each state over the training
    frames, or None]} from the model's catalogue ({} if it has none)."""
    states = (model.spin or {}).get("states") or {}
    return {el: [s.get("fraction") for s in v] for el, v in states.items()}


def composition_warnings(problem: "SpinProblem", states) -> list[str]:
    """Lines saying where an assignment's share of atoms in a state lies outside what the model was
    trained on (the catalogue's "fraction" ranges): the model extrapolates there, and a search can
    fall into such a hole (e.g. all-down Fe when training saw only all-up).  [] when inside or unknown."""
    trained = trained_fractions(problem.model)
    counts = _state_counts(problem, states)
    out = []
    for i, el in enumerate(problem.elements):
        n = int(np.sum(problem.element_of == i))
        ranges = trained.get(el) or []
        if n == 0 or len(ranges) != problem.n_states[problem.element_of == i][0] or any(r is None for r in ranges):
            continue  # no training shares, or states given by hand that are not the catalogue's
        centres = problem.values[problem.element_of == i][0]
        outside = [k for k, r in enumerate(ranges) if not r[0] - 0.5 / n <= counts[i, k] / n <= r[1] + 0.5 / n]
        if outside:
            now = ", ".join(f"{counts[i, k]} at {centres[k]:+.2f}" for k in range(len(ranges)))
            seen = ", ".join(f"{centres[k]:+.2f}: {r[0]:.0%}–{r[1]:.0%}" for k, r in enumerate(ranges))
            out.append(f"{n} {el} with {now} μB is a composition the model was not trained on (shares seen: {seen}): "
                       f"it extrapolates; --keep-counts searches at the start's counts")
    return out


def parse_states(items: Sequence[str]) -> dict[str, list[float]]:
    """["Fe=-4.2,4.2", "Ni=0.7,1.7"] → {"Fe": [-4.2, 4.2], "Ni": [0.7, 1.7]} (μB)."""
    out = {}
    for item in items:
        el, sep, values = item.partition("=")
        try:
            vals = sorted(float(v) for v in values.split(",") if v.strip())
        except ValueError:
            vals = []
        if not sep or not el.strip() or len(vals) < 1:
            raise CathodemlError(f"--states {item!r}: write El=m1,m2,... in μB, e.g. --states Fe=-4.2,4.2")
        out[el.strip()] = vals
    return out


# ----------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class SpinProblem:
    """A structure, a spin model and the states each magnetic atom may take, ready to search.

    values [M, K] μB: the states of each magnetic atom (virtual-site order, `sites.host_index`),
    padded with the last state; n_states [M]; element_of [M] index into `elements`.  nbr is the
    list described in the module docstring; regions[t] [M, R_t] are the atoms of type t whose
    energy a change of site i can move (-1 = empty).
    """

    model: object
    positions: np.ndarray
    cell: np.ndarray
    atom_types: np.ndarray
    sites: spin.VirtualSites
    elements: tuple[str, ...]
    element_of: np.ndarray
    values: np.ndarray
    n_states: np.ndarray
    nbr: object
    regions: tuple

    @property
    def n_sites(self) -> int:
        return self.sites.size

    @property
    def n_assignments(self) -> float:
        return float(np.prod(self.n_states.astype(float)))

    def moments(self, states) -> np.ndarray:
        """Host moments [M] μB of state indices [M]."""
        return self.values[np.arange(self.n_sites), np.asarray(states)]

    def states_of(self, host_moments) -> np.ndarray:
        """Nearest catalogue state of each site for moments [M] μB."""
        return np.argmin(np.abs(self.values - np.asarray(host_moments, float)[:, None]), axis=1)


def build_problem(model, positions, cell, atom_types, catalogue: Mapping[str, Sequence[float]] | None = None,
                  previous: SpinProblem | None = None, margin: float = 1.0) -> SpinProblem:
    """The search problem for a spin model and a structure (real atoms: positions [N, 3] Å, cell
    [3, 3] Å, atom_types [N] in the model's real type map).  `catalogue` overrides or completes the
    model's stored states ({element: [μB, ...]}).  `previous` (the same atoms at other positions,
    as in MD) keeps its array shapes where they suffice, so the jitted search does not recompile;
    `margin` > 1 leaves room in the list for atoms that move (build_neighbor_list's margin)."""
    from cathodeml.model import build_neighbor_list

    if not model.spin:
        raise CathodemlError("this model has no virtual spin atoms: its energy does not depend on the spin states; "
                             "train on `augment-spin` data to search spin states")
    states = {**model_catalogue(model), **(catalogue or {})}
    settings = spin.SpinSettings.from_dict(model.spin)
    missing = [el for el in settings.elements if el not in states]
    if missing:
        raise CathodemlError(f"the model stores no spin states for {','.join(missing)} (trained before catalogues, or "
                             f"imported); give them, e.g. --states {missing[0]}=-4.2,4.2")
    extra = sorted(set(states) - set(settings.elements))
    if extra:
        raise CathodemlError(f"--states names {','.join(extra)}, which the model does not treat as magnetic "
                             f"({','.join(settings.elements)})")
    atom_types = np.asarray(atom_types, dtype=np.int64)
    sites = spin.model_virtual_sites(model.type_map, model.spin, atom_types)
    if sites.size == 0:
        raise CathodemlError(f"the structure has no {'/'.join(settings.elements)} atoms: nothing to search")
    real = spin.model_real_type_map(model.type_map, model.spin)
    host_el = [real[atom_types[i]] for i in sites.host_index]
    elements = tuple(settings.elements)
    k_max = max(len(v) for v in states.values())
    values = np.array([list(states[el]) + [states[el][-1]] * (k_max - len(states[el])) for el in host_el])
    n_states = np.array([len(states[el]) for el in host_el])
    # The list: virtual atoms at the middle of their range, skin = the widest range.
    lo, hi = values.min(axis=1), values.max(axis=1)
    skin = float(np.max(sites.eta * (hi - lo))) + 1e-6
    config = model.config
    positions = np.asarray(positions, dtype=np.float64)
    middle = sites.place(positions, _moment_input(sites, (lo + hi) / 2))
    nbr = build_neighbor_list(middle, cell, sites.all_types(atom_types), config.rcut, config.ntypes, skin=skin,
                              capacity=None if previous is None else previous.nbr.capacity,
                              margin=margin)
    widths = None if previous is None else [r.shape[1] for r in previous.regions]
    return SpinProblem(model, positions, np.asarray(cell, float), atom_types, sites, elements,
                       np.array([elements.index(e) for e in host_el]), values, n_states,
                       jax.tree_util.tree_map(jnp.asarray, nbr), _regions(nbr, positions.shape[0], sites.size, widths))


def _moment_input(sites, m):
    """Scalar host moments as the virtual-site placement wants them: [M] (collinear) or along z (vector)."""
    if sites.mode == "collinear":
        return m
    z = np.zeros(3) if isinstance(m, np.ndarray) else jnp.zeros(3)
    return m[..., None] * (z + np.array([0.0, 0.0, 1.0]))


def _regions(nbr, n_real: int, n_sites: int, min_widths=None) -> tuple:
    """Per type t, [M, R_t] the distinct atoms of type t in the row of each virtual atom (itself
    included), R_t at least min_widths[t]."""
    index = np.asarray(nbr.index)
    types = np.asarray(nbr.types)
    rows = []
    for v in range(n_sites):
        row = index[n_real + v]
        rows.append(np.unique(np.concatenate([row[row >= 0], [n_real + v]])))
    out = []
    for t in range(len(nbr.type_counts)):
        per = [r[types[r] == t] for r in rows]
        width = max(max(len(p) for p in per), 0 if min_widths is None else min_widths[t])
        block = np.full((n_sites, width), -1, dtype=np.int32)
        for v, p in enumerate(per):
            block[v, :len(p)] = p
        out.append(jnp.asarray(block))
    return tuple(out)


# ----------------------------------------------------------------------------- energies (jitted)


def _arrays(problem: SpinProblem) -> dict:
    m = problem.model
    return {"params": m.params, "stats": m.stats, "positions": jnp.asarray(problem.positions),
            "cell": jnp.asarray(problem.cell), "nbr": problem.nbr,
            "sites": jax.tree_util.tree_map(jnp.asarray, problem.sites),
            "values": jnp.asarray(problem.values), "regions": problem.regions}


def _full_positions(a, m):
    return a["sites"].place(a["positions"], _moment_input(a["sites"], m))


def _atomic(config, a, m):
    from cathodeml.model import atomic_energies

    return atomic_energies(config, a["params"], a["stats"], _full_positions(a, m), a["cell"], a["nbr"])


@partial(jax.jit, static_argnames="config")
def _batch_energies(config, a, moments):
    return jax.vmap(lambda m: jnp.sum(_atomic(config, a, m)))(moments)


@partial(jax.jit, static_argnames="config")
def _energy_and_spin_force(config, a, m):
    return jax.value_and_grad(lambda x: jnp.sum(_atomic(config, a, x)))(m)


def assignment_energies(problem: SpinProblem, moments, batch: int = 256) -> np.ndarray:
    """Energies (eV) of host-moment assignments [B, M] μB (any values within the catalogue range).

    Batches are padded to a power of two (at most `batch`), so a search compiles a few shapes only."""
    moments = np.atleast_2d(np.asarray(moments, dtype=np.float64))
    a = _arrays(problem)
    size = min(batch, 1 << max(int(np.ceil(np.log2(max(moments.shape[0], 1)))), 0))
    out = []
    for start in range(0, moments.shape[0], size):
        chunk = moments[start:start + size]
        n = chunk.shape[0]
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], size - n, axis=0)])
        out.append(np.asarray(_batch_energies(problem.model.config, a, jnp.asarray(chunk)))[:n])
    return np.concatenate(out)


def spin_forces(problem: SpinProblem, moments) -> tuple[float, np.ndarray]:
    """(E eV, −∂E/∂S [M] eV/μB) at host moments [M]: which way each moment pulls the energy down."""
    e, g = _energy_and_spin_force(problem.model.config, _arrays(problem), jnp.asarray(moments, jnp.float64))
    return float(e), -np.asarray(g)


def _site_change(config, a, pos, e, site, new_moment):
    """(ΔE eV, new positions, new per-atom energies) of giving `site` the moment `new_moment` (μB)."""
    from cathodeml.model import centre_energies

    sites = a["sites"]
    n_real = a["positions"].shape[0]
    host = pos[sites.host_index[site]]
    if sites.mode == "collinear":
        virt = host + (sites.eta[site] * new_moment + sites.d[site]) * jnp.array([0.0, 0.0, 1.0])
    else:
        virt = host + sites.eta[site] * new_moment * jnp.array([0.0, 0.0, 1.0])
    new_pos = pos.at[n_real + site].set(virt)
    delta = 0.0
    new_e = e
    for t, block in enumerate(a["regions"]):
        if block.shape[1] == 0:
            continue
        centres = block[site]
        valid = centres >= 0
        safe = jnp.where(valid, centres, 0)
        et = centre_energies(config, a["params"], a["stats"], new_pos, a["cell"], a["nbr"], safe, t)
        delta = delta + jnp.sum(jnp.where(valid, et - e[safe], 0.0))
        new_e = new_e.at[jnp.where(valid, centres, e.shape[0])].set(et, mode="drop")
    return delta, new_pos, new_e


@partial(jax.jit, static_argnames=("config", "keep_counts"))
def _anneal(config, a, keep_counts: bool, n_states, element_of, states0, keys, temperatures):
    """Metropolis chains, one per replica (vmapped), over the temperatures [S] (eV); returns the
    final and the best states [R, M], their energies [R] and the accepted moves [R]."""
    values = a["values"]
    m_sites = values.shape[0]
    rows = jnp.arange(m_sites)

    def chain(states, key):
        m = values[rows, states]
        pos = _full_positions(a, m)
        e = _atomic(config, a, m)
        energy = jnp.sum(e)

        def propose_state(k, site, current):
            # a uniformly chosen state other than the current one
            shift = 1 + jax.random.randint(k, (), 0, jnp.maximum(n_states[site] - 1, 1))
            return (current + shift) % n_states[site]

        def step(carry, xs):
            states, pos, e, energy, best, best_e, accepted = carry
            temperature, k = xs
            k_site, k_state, k_pair, k_acc = jax.random.split(k, 4)
            v = jax.random.randint(k_site, (), 0, m_sites)
            if keep_counts:
                # exchange with a site of the same element in another state (Gumbel-max over them)
                eligible = (element_of == element_of[v]) & (states != states[v])
                w = jnp.argmax(jnp.where(eligible, jax.random.gumbel(k_pair, (m_sites,)), -jnp.inf))
                possible = jnp.any(eligible)
                new_v, new_w = states[w], states[v]
                d1, pos1, e1 = _site_change(config, a, pos, e, v, values[v, new_v])
                d2, pos2, e2 = _site_change(config, a, pos1, e1, w, values[w, new_w])
                delta = d1 + d2
                new_states = states.at[v].set(new_v).at[w].set(new_w)
                new_pos, new_e = pos2, e2
            else:
                possible = n_states[v] > 1
                new_v = propose_state(k_state, v, states[v])
                delta, new_pos, new_e = _site_change(config, a, pos, e, v, values[v, new_v])
                new_states = states.at[v].set(new_v)
            u = jax.random.uniform(k_acc)
            take = possible & ((delta <= 0) | (u < jnp.exp(-delta / jnp.maximum(temperature, 1e-30))))
            states = jnp.where(take, new_states, states)
            pos = jnp.where(take, new_pos, pos)
            e = jnp.where(take, new_e, e)
            energy = jnp.where(take, energy + delta, energy)
            better = energy < best_e
            best = jnp.where(better, states, best)
            best_e = jnp.where(better, energy, best_e)
            return (states, pos, e, energy, best, best_e, accepted + take), None

        step_keys = jax.random.split(key, temperatures.shape[0])
        carry = (states, pos, e, energy, states, energy, jnp.asarray(0))
        (states, _, _, energy, best, best_e, accepted), _ = jax.lax.scan(step, carry, (temperatures, step_keys))
        return states, energy, best, best_e, accepted

    return jax.vmap(chain)(states0, keys)


@partial(jax.jit, static_argnames="config")
def _single_move_deltas(config, a, states, n_states):
    """ΔE (eV) [M, K] of moving each site to each state from `states` (0 for the current state,
    +inf for padding states)."""
    values = a["values"]
    m_sites, k_max = values.shape
    m = values[jnp.arange(m_sites), states]
    pos = _full_positions(a, m)
    e = _atomic(config, a, m)

    def one(site, k):
        d, _, _ = _site_change(config, a, pos, e, site, values[site, k])
        return jnp.where(k < n_states[site], d, jnp.inf)

    sites = jnp.repeat(jnp.arange(m_sites), k_max)
    ks = jnp.tile(jnp.arange(k_max), m_sites)
    return jax.lax.map(lambda sk: one(*sk), (sites, ks), batch_size=64).reshape(m_sites, k_max)


# ----------------------------------------------------------------------------- the search


@dataclasses.dataclass
class SearchResult:
    """The answer: best states [M] (indices into problem.values), their host moments [M] μB and
    energy (eV); `ranked` the best distinct energies found, each {"energy_eV", "states",
    "degeneracy"} (assignments within `tolerance` eV of each other counted as one level, e.g.
    symmetry copies); the method, model evaluations, wall seconds, spin forces −∂E/∂S [M] eV/μB at
    the answer, and for annealing whether no single move (or exchange) lowers it."""

    states: np.ndarray
    moments: np.ndarray
    energy: float
    ranked: list
    method: str
    evaluations: int
    seconds: float
    spin_forces: np.ndarray
    local_minimum: bool | None = None
    initial_energy: float | None = None


def _enumerate(problem: SpinProblem, keep_counts: bool, reference_states) -> np.ndarray:
    grids = np.meshgrid(*[np.arange(k) for k in problem.n_states], indexing="ij")
    all_states = np.stack([g.ravel() for g in grids], axis=1)
    if keep_counts:
        want = _state_counts(problem, reference_states)
        keep = np.all([_state_counts(problem, s) == want for s in all_states], axis=(1, 2)) \
            if len(all_states) else np.zeros(0, bool)
        all_states = all_states[keep]
    return all_states


def _state_counts(problem: SpinProblem, states) -> np.ndarray:
    counts = np.zeros((len(problem.elements), problem.values.shape[1]), dtype=np.int64)
    np.add.at(counts, (problem.element_of, np.asarray(states)), 1)
    return counts


def _ranked(energies, states, n_best: int, tolerance: float) -> list:
    order = np.argsort(energies, kind="stable")
    levels: list[dict] = []
    for i in order:
        if levels and abs(energies[i] - levels[-1]["energy_eV"]) <= tolerance:
            if not any(np.array_equal(states[i], s) for s in levels[-1]["_seen"]):
                levels[-1]["degeneracy"] += 1
                levels[-1]["_seen"].append(states[i])
            continue
        if len(levels) == n_best:
            break
        levels.append({"energy_eV": float(energies[i]), "states": np.asarray(states[i]).tolist(), "degeneracy": 1,
                       "_seen": [states[i]]})
    for level in levels:
        level.pop("_seen")
    return levels


def gradient_guess(problem: SpinProblem, steps: int = 20) -> np.ndarray:
    """States from a projected gradient descent of E over continuous moments (from the middle of
    each site's range, steps of a tenth of the range along −∂E/∂S), rounded to the nearest state."""
    lo, hi = problem.values.min(axis=1), problem.values.max(axis=1)
    m = (lo + hi) / 2
    for _ in range(steps):
        _, force = spin_forces(problem, m)
        m = np.clip(m + 0.1 * (hi - lo) * np.sign(force), lo, hi)
    return problem.states_of(m)


def search(problem: SpinProblem, *, initial_states=None, seed: int = 0, keep_counts: bool = False,
           exhaustive_limit: int = 1 << 14, replicas: int = 8, sweeps: int = 200, t_start: float | None = None,
           t_end_ratio: float = 1e-3, n_best: int = 5, tolerance: float = 1e-5, method: str = "auto",
           gradient_start: bool = True) -> SearchResult:
    """The lowest-energy assignment of catalogue states (see the module docstring).

    initial_states [M]: a start (the structure's own moments); also the counts kept with
    `keep_counts` (default: the gradient guess).  method "auto" enumerates when the number of
    assignments is ≤ exhaustive_limit, else anneals: `replicas` chains of `sweeps`·M moves, with
    temperatures falling geometrically from t_start (eV; default the median |ΔE| of the single
    moves from the start) to t_start·t_end_ratio, then zero-temperature sweeps.  gradient_start
    False skips the spin-force guess when a start is given (MD's warm restarts).
    """
    t0 = time.perf_counter()
    config = problem.model.config
    m_sites = problem.n_sites
    guess = gradient_guess(problem) if initial_states is None or gradient_start else None
    start = guess if initial_states is None else np.asarray(initial_states, dtype=np.int64)
    initial_energy = spin_forces(problem, problem.moments(start))[0]
    if method == "auto":
        method = "exhaustive" if problem.n_assignments <= exhaustive_limit else "annealing"
    if method not in ("exhaustive", "annealing"):
        raise CathodemlError(f"search method {method!r} is unknown; use auto, exhaustive or annealing")
    if method == "exhaustive":
        if problem.n_assignments > 1 << 22:
            raise CathodemlError(f"{problem.n_assignments:.3g} assignments are too many to enumerate; use annealing")
        candidates = _enumerate(problem, keep_counts, start)
        energies = assignment_energies(problem, problem.values[np.arange(m_sites), candidates])
        evaluations = len(candidates)
        local_minimum = None
    else:
        a = _arrays(problem)
        n_states, element_of = jnp.asarray(problem.n_states), jnp.asarray(problem.element_of)
        if t_start is None:
            deltas = np.asarray(_single_move_deltas(config, a, jnp.asarray(start), n_states))
            finite = np.abs(deltas[np.isfinite(deltas) & (deltas != 0)])
            t_start = float(np.median(finite)) if finite.size else 1e-3
        rng = np.random.default_rng(seed)
        # with keep_counts every chain must hold the start's counts: the guess seeds one only if it does
        usable = guess is not None and not (keep_counts and np.any(_state_counts(problem, guess)
                                                                   != _state_counts(problem, start)))
        starts = [start, guess] if usable else [start]
        while len(starts) < replicas:
            s = np.array([rng.integers(k) for k in problem.n_states])
            if keep_counts:  # a random permutation of the start keeps its counts per element
                s = start.copy()
                for el in range(len(problem.elements)):
                    idx = np.flatnonzero(problem.element_of == el)
                    s[idx] = rng.permutation(start[idx])
            starts.append(s)
        starts = jnp.asarray(np.stack(starts[:replicas]))
        n_moves = sweeps * m_sites
        temperatures = t_start * t_end_ratio ** (np.arange(n_moves) / max(n_moves - 1, 1))
        temperatures = jnp.asarray(np.concatenate([temperatures, np.zeros(max(m_sites * 10, 100))]))
        keys = jax.random.split(jax.random.PRNGKey(seed), replicas)
        final, _, best, best_e, _ = _anneal(config, a, keep_counts, n_states, element_of, starts, keys, temperatures)
        candidates = np.concatenate([np.asarray(best), np.asarray(final)])
        energies = assignment_energies(problem, problem.values[np.arange(m_sites), candidates])
        evaluations = int(replicas * temperatures.shape[0])
        winner = candidates[np.argmin(energies)]
        local_minimum = None
        if not keep_counts:
            deltas = np.asarray(_single_move_deltas(config, a, jnp.asarray(winner), n_states))
            local_minimum = bool(np.all(deltas[np.isfinite(deltas)] >= -tolerance))
            # the neighbours of the answer are the natural next levels of the ranking
            nb = [np.where(np.arange(m_sites) == i, k, winner) for i in range(m_sites)
                  for k in range(problem.n_states[i]) if k != winner[i]]
            if nb:
                nb = np.array(nb)
                candidates = np.concatenate([candidates, nb])
                energies = np.concatenate([energies, assignment_energies(problem, problem.values[
                    np.arange(m_sites), nb])])
            evaluations += m_sites * problem.values.shape[1]
    best_i = int(np.argmin(energies))
    states = np.asarray(candidates[best_i])
    moments = problem.moments(states)
    energy, force = spin_forces(problem, moments)
    return SearchResult(states=states, moments=moments, energy=energy,
                        ranked=_ranked(energies, candidates, n_best, tolerance), method=method,
                        evaluations=evaluations, seconds=time.perf_counter() - t0, spin_forces=force,
                        local_minimum=local_minimum, initial_energy=initial_energy)


def per_atom_moments(problem: SpinProblem, host_moments, base=None) -> np.ndarray:
    """Moments of every real atom [N] μB: the hosts' from the search, the others from `base` (or 0)."""
    out = np.zeros(problem.positions.shape[0]) if base is None else np.array(base, dtype=float).reshape(-1)
    if out.ndim != 1 or out.size != problem.positions.shape[0]:
        out = np.zeros(problem.positions.shape[0])
    out[problem.sites.host_index] = host_moments
    return out

