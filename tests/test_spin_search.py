"""Spin ground-state search (`cathodeml.spin_search`, `cathodeml spin-search`, `md --spin-search`).

Known answers: on a small spin model every assignment of 8 Mn is enumerated through the model's
own energy with a fresh neighbour list each (the brute force the search must equal); single-move
energy changes equal full-energy differences; spin forces equal finite differences of E(S).
On real DFT+U data (automag's 91 hematite orderings, tests/data/spin/hematite_orderings, with a
spin model trained on 73 of them; held out afm*0, afm*5): the model ranks the held-out orderings
and puts the DFT ground state (afm1) lowest of the 91, and a search started from another
ordering's geometry finds afm1 -- identified by its Fe–Fe parallel/antiparallel fingerprint,
which no other of the 91 orderings shares.
"""

import fnmatch
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.stats import spearmanr
from typer.testing import CliRunner

from cathodeml import spin
from cathodeml import spin_search as S
from cathodeml.cli import app
from cathodeml.errors import CathodemlError
from cathodeml.io.automag import read_automag
from cathodeml.io.dataset import write_dataset
from cathodeml.io.structure import parse_magmom
from cathodeml.io.trajectory import read_trajectory
from cathodeml.model import Model, build_neighbor_list, energy, load_model, save_model
from test_md_deeppot import limno2, tiny_spin_model

HEMATITE = Path(__file__).parent / "data" / "spin" / "hematite_orderings"
HELD_OUT = ("afm*0", "afm*5")
MN_STATES = {"Mn": [-3.8, 3.8]}
runner = CliRunner()


# ----------------------------------------------------------------------------- a small spin model


@pytest.fixture(scope="module")
def toy(request):
    """The tiny Li–Mn–O spin model on a rattled 2×2×1 LiMnO2 cell (8 Mn, 256 assignments of ±3.8 μB)."""
    data_dir = Path(request.config.rootpath) / "tests" / "data"
    model = tiny_spin_model()
    s, types = limno2(data_dir, reps=(2, 2, 1))
    problem = S.build_problem(model, s.positions, s.cell, types, MN_STATES)
    return model, s, types, problem


def _brute_force(model, s, types, moments_list):
    """E of each host-moment assignment through the model's energy, with its own neighbour list built
    at the actual virtual-atom positions (no shared list, no local updates)."""
    import jax

    from cathodeml.model import build_neighbor_lists

    sites = spin.model_virtual_sites(model.type_map, model.spin, types)
    moments_list = np.asarray(moments_list, dtype=float)
    full = np.stack([sites.place(s.positions, m) for m in moments_list])
    nbrs = build_neighbor_lists(full, np.repeat(np.asarray(s.cell)[None], len(full), axis=0), sites.all_types(types),
                                model.config.rcut, model.config.ntypes)
    one = lambda m, nbr: energy(model.config, model.params, model.stats, s.positions, s.cell, nbr, moments=m,
                                sites=sites)
    return np.asarray(jax.jit(jax.vmap(one))(moments_list, nbrs))


def test_exhaustive_search_is_the_brute_force_minimum_over_all_assignments(toy):
    model, s, types, problem = toy
    assert problem.n_sites == 8 and problem.n_assignments == 256
    all_states = np.array(np.meshgrid(*[[0, 1]] * 8, indexing="ij")).reshape(8, -1).T
    moments = np.array([problem.moments(k) for k in all_states])
    reference = _brute_force(model, s, types, moments)
    np.testing.assert_allclose(S.assignment_energies(problem, moments), reference, rtol=0, atol=1e-9)

    result = S.search(problem, method="exhaustive", n_best=4)
    assert result.method == "exhaustive" and result.evaluations == 256
    assert result.energy == pytest.approx(reference.min(), abs=1e-9)
    np.testing.assert_array_equal(result.states, all_states[np.argmin(reference)])
    levels = [lv["energy_eV"] for lv in result.ranked]
    assert levels == sorted(levels) and len(levels) == 4
    np.testing.assert_allclose(levels, np.unique(np.round(reference, 7))[:4], atol=1e-6)
    # the moments file covers every atom: the hosts' searched values, 0 elsewhere
    per_atom = S.per_atom_moments(problem, result.moments)
    assert per_atom.shape == (len(types),) and set(np.unique(per_atom[types == 1])) <= {-3.8, 3.8}
    assert np.all(per_atom[types != 1] == 0)

    # keep_counts: the lowest assignment with the start's number of up and down Mn
    start = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    kept = S.search(problem, initial_states=start, keep_counts=True, method="exhaustive")
    same = np.sum(all_states, axis=1) == 6
    assert kept.evaluations == int(same.sum()) == 28
    assert kept.energy == pytest.approx(reference[same].min(), abs=1e-9) and int(kept.states.sum()) == 6


def test_annealing_finds_the_exact_minimum_and_is_deterministic_for_a_seed(toy):
    model, s, types, problem = toy
    exact = S.search(problem, method="exhaustive")
    annealed = S.search(problem, method="annealing", seed=3, replicas=4, sweeps=30)
    assert annealed.energy == pytest.approx(exact.energy, abs=1e-9) and annealed.local_minimum
    again = S.search(problem, method="annealing", seed=3, replicas=4, sweeps=30)
    np.testing.assert_array_equal(again.states, annealed.states)
    # exchanges keep the counts, even though the spin-force guess has other counts
    start = np.array([1, 1, 1, 1, 1, 1, 0, 0])
    exact_kept = S.search(problem, initial_states=start, keep_counts=True, method="exhaustive")
    kept = S.search(problem, initial_states=start, keep_counts=True, method="annealing", seed=1, replicas=4,
                    sweeps=30)
    assert int(kept.states.sum()) == 6 and kept.energy == pytest.approx(exact_kept.energy, abs=1e-9)


def test_single_moves_change_the_energy_exactly_as_the_full_energy_does(toy):
    import jax.numpy as jnp

    model, s, types, problem = toy
    states = np.array([1, 0, 1, 1, 0, 1, 0, 1])
    deltas = np.asarray(S._single_move_deltas(model.config, S._arrays(problem), jnp.asarray(states),
                                              jnp.asarray(problem.n_states)))
    flipped = np.array([np.where(np.arange(8) == i, 1 - states[i], states) for i in range(8)])
    full = S.assignment_energies(problem, np.array([problem.moments(k) for k in [states, *flipped]]))
    np.testing.assert_allclose(deltas[np.arange(8), 1 - states], full[1:] - full[0], atol=1e-9)
    np.testing.assert_array_equal(deltas[np.arange(8), states], 0.0)


def test_spin_forces_are_minus_the_derivative_of_the_energy_in_the_moments(toy):
    model, s, types, problem = toy
    m = np.array([3.1, -2.0, 0.5, 3.7, -3.3, 1.2, -0.4, 2.6])
    e, force = S.spin_forces(problem, m)
    h = 1e-4
    fd = [-(S.assignment_energies(problem, (m + h * np.eye(8)[i])[None])[0]
            - S.assignment_energies(problem, (m - h * np.eye(8)[i])[None])[0]) / (2 * h) for i in range(8)]
    np.testing.assert_allclose(force, fd, atol=1e-6)
    assert e == pytest.approx(_brute_force(model, s, types, [m])[0], abs=1e-9)


def test_bad_inputs_are_named():
    with pytest.raises(CathodemlError, match="Fe=-4.2,4.2"):
        S.parse_states(["Fe"])
    assert S.parse_states(["Fe=4.2,-4.2", "Ni=0.7"]) == {"Fe": [-4.2, 4.2], "Ni": [0.7]}
    model = tiny_spin_model()
    positions, cell, types = np.zeros((1, 3)), np.eye(3) * 10, np.array([1])
    with pytest.raises(CathodemlError, match="no spin states for Mn"):
        S.build_problem(model, positions, cell, types)
    with pytest.raises(CathodemlError, match="Fe, which the model does not treat as magnetic"):
        S.build_problem(model, positions, cell, types, {"Mn": [1.0], "Fe": [1.0]})
    plain = Model(model.config, model.params, model.stats)
    with pytest.raises(CathodemlError, match="no virtual spin atoms"):
        S.build_problem(plain, positions, cell, types, MN_STATES)


# ----------------------------------------------------------------------------- hematite (real DFT+U)


@pytest.fixture(scope="module")
def hematite():
    model = load_model(HEMATITE / "model_spin.h5")
    system = read_automag(HEMATITE / "Fe12O18_singlepoint.txt", type_map=["Fe", "O"]).dataset.systems[0]
    return model, system, list(system.frame_data["ordering"])


def _fingerprint(positions, cell, moments, types, cutoff=4.0):
    """Sorted (Fe–Fe distance, parallel?) pairs within `cutoff` Å: the same for two atom orders of
    one ordering, different for different orderings."""
    from ase.geometry import get_distances

    fe = np.flatnonzero(types == 0)
    _, d = get_distances(positions[fe], cell=cell, pbc=True)
    i, j = np.triu_indices(len(fe), 1)
    near = d[i, j] < cutoff
    signs = np.sign(moments[fe])
    return sorted(zip(np.round(d[i, j][near], 2).tolist(), (signs[i] == signs[j])[near].tolist()))


def test_catalogue_holds_the_signed_fe_states_and_their_shares(hematite):
    model, system, names = hematite
    (down, up), = [model.spin["states"]["Fe"]]
    train = [f for f, n in enumerate(names) if not any(fnmatch.fnmatch(n, p) for p in HELD_OUT)]
    fe = system.frame_data["magmom"][train][:, system.atom_types == 0]
    assert down["center"] == pytest.approx(np.mean(fe[fe < 0]), abs=1e-9)
    assert up["center"] == pytest.approx(np.mean(fe[fe > 0]), abs=1e-9)
    assert down["count"] + up["count"] == fe.size
    # training saw 6 up / 6 down (the afm orderings) and all up (fm), never all down
    assert down["fraction"] == [0.0, 0.5] and up["fraction"] == [0.5, 1.0]


def test_hematite_model_ranks_unseen_orderings_and_the_search_finds_the_dft_ground_state(hematite):
    from cathodeml.io.dataset import Dataset
    from cathodeml.train.evaluate import predict_system, systems_for_model

    model, system, names = hematite
    labelled, = systems_for_model(model, Dataset(["Fe", "O"], [system]), "hematite")
    predicted, _, _ = predict_system(model, labelled)
    dft = np.asarray(system.energies)
    held = np.array([any(fnmatch.fnmatch(n, p) for p in HELD_OUT) for n in names])
    assert held.sum() == 18
    assert spearmanr(predicted[held], dft[held]).correlation > 0.9  # 0.973 measured
    assert names[int(np.argmin(dft))] == names[int(np.argmin(predicted))] == "afm1"

    # from afm89's geometry (another atom order) and counts, search the 924 orderings with 6 up / 6 down
    types, magmom = system.atom_types, system.frame_data["magmom"]
    f89, f1 = names.index("afm89"), names.index("afm1")
    problem = S.build_problem(model, system.coords[f89], system.cells[f89], types)
    start = problem.states_of(spin.host_moments(problem.sites, magmom[f89]))
    result = S.search(problem, initial_states=start, keep_counts=True, n_best=2)
    assert result.method == "exhaustive" and result.evaluations == 924
    found = S.per_atom_moments(problem, result.moments)
    fingerprint = _fingerprint(system.coords[f89], system.cells[f89], found, types)
    matches = [names[f] for f in range(len(names))
               if _fingerprint(system.coords[f], system.cells[f], magmom[f], types) == fingerprint]
    assert matches == ["afm1"]
    assert result.ranked[0]["degeneracy"] == 2  # afm1 and its time reverse
    # and its energy is the model's for the afm1 frame with the catalogue moments
    p1 = S.build_problem(model, system.coords[f1], system.cells[f1], types)
    e1 = S.assignment_energies(p1, p1.moments(p1.states_of(spin.host_moments(p1.sites, magmom[f1])))[None])[0]
    assert result.energy == pytest.approx(e1, abs=1e-8)
    # without the counts the model's minimum is all-down Fe, a composition training never saw: said so
    free = S.search(problem, initial_states=start, method="exhaustive")
    assert free.energy < result.energy and np.all(free.moments < 0)
    warnings = S.composition_warnings(problem, free.states)
    assert len(warnings) == 1 and "not trained on" in warnings[0]
    assert S.composition_warnings(problem, result.states) == []


def test_spin_search_command_writes_moments_md_reads(tmp_path, hematite):
    model, system, names = hematite
    f89 = names.index("afm89")
    from cathodeml.io.dataset import Dataset

    frame = system.select([f89])
    write_dataset(tmp_path / "afm89.h5", Dataset(["Fe", "O"], [frame]))
    structure = f"{tmp_path / 'afm89.h5'}:{frame.name}:0"
    out = tmp_path / "moments.txt"
    res = runner.invoke(app, ["spin-search", str(HEMATITE / "model_spin.h5"), structure, "-o", str(out),
                              "--keep-counts", "--json", "-n", "3"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["method"] == "exhaustive" and summary["n_magnetic"] == 12 and summary["warnings"] == []
    assert len(summary["levels"]) == 3 and summary["levels"][0]["degeneracy"] == 2
    assert summary["levels"][1]["above_best_meV_per_atom"] > 10  # afm1 is 14 meV/atom below the next level
    moments = parse_magmom(str(out), ["Fe"] * 12 + ["O"] * 18)
    fe = frame.atom_types == 0
    assert np.sum(moments[fe] > 0) == 6 and np.sum(moments[fe] < 0) == 6
    np.testing.assert_allclose(moments[~fe], frame.frame_data["magmom"][0][~fe], atol=1e-6)  # O as given
    assert summary["energy_eV"] == pytest.approx(summary["levels"][0]["energy_eV"])

    # errors: one line, exit 1, nothing written
    bad = tmp_path / "bad.txt"
    r = runner.invoke(app, ["spin-search", str(HEMATITE / "model_spin.h5"), structure, "-o", str(bad),
                            "--states", "Ni=1,2"])
    assert r.exit_code == 1 and "Ni, which the model" in r.output and not bad.exists()
    plain_path = tmp_path / "plain.h5"
    save_model(plain_path, Model(model.config, model.params, model.stats))
    r = runner.invoke(app, ["spin-search", str(plain_path), structure, "-o", str(bad)])
    assert r.exit_code == 1 and "no virtual spin atoms" in r.output and not bad.exists()


# ----------------------------------------------------------------------------- md --spin-search


def test_md_spin_search_lowers_the_energy_logs_jumps_records_states_and_restarts_exactly(tmp_path, data_dir):
    save_model(tmp_path / "model.h5", tiny_spin_model())
    cif = str(data_dir / "structures" / "LiMnO2_mp-18767.cif")

    def md(traj, steps, *extra):
        r = runner.invoke(app, ["md", str(tmp_path / "model.h5"), cif, "-o", str(traj), "--supercell", "2x1x1",
                                "--states", "Mn=-3.8,3.8", "--spin-search", "every=10", "--dt", "0.5",
                                "--temperature", "300", "--stride", "10", "--steps", str(steps), "--seed", "2",
                                "--json", *extra])
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    straight = tmp_path / "straight.h5"
    summary = md(straight, 40)
    assert summary["spin_search"]["searches"] == 5  # steps 0, 10, 20, 30, 40
    log = np.loadtxt(straight.with_suffix(".spin.log"), usecols=(0, 1, 2, 3, 4))
    np.testing.assert_array_equal(log[:, 0], [0, 10, 20, 30, 40])
    assert np.all(log[:, 2] <= log[:, 1] + 1e-12) and log[0, 4] > 0  # the start (all up) is not the minimum
    t = read_trajectory(straight)
    assert t["spin_moments"].shape == (5, 16)
    mn = np.asarray(t["species"]) == 1
    assert set(np.unique(t["spin_moments"][:, mn])) <= {-3.8, 3.8} and np.all(t["spin_moments"][:, ~mn] == 0)
    # `info` shows how the states evolved: counts as a direct numpy count of the time series
    shown = json.loads(runner.invoke(app, ["info", str(straight), "--json"]).stdout)["spin_states"]
    sm = t["spin_moments"][:, mn]
    assert shown["changes"] == int(np.sum(sm[1:] != sm[:-1])) and list(shown["elements"]) == ["Mn"]
    assert shown["elements"]["Mn"]["states_muB"] == sorted(set(sm.ravel().tolist()))
    assert shown["elements"]["Mn"]["last"] == [int(np.sum(sm[-1] == v)) for v in shown["elements"]["Mn"]["states_muB"]]
    assert "spin_moments" not in json.loads(runner.invoke(app, ["info", str(straight), "--json"]).stdout)["observables"]
    # the energy each frame reports is the model's at that frame's searched moments
    model = load_model(tmp_path / "model.h5")
    sites = spin.model_virtual_sites(model.type_map, model.spin, np.asarray(t["species"]))
    for f in (0, 4):
        m = spin.host_moments(sites, t["spin_moments"][f])
        cell = t["cells"][f]
        nbr = build_neighbor_list(sites.place(t["positions"][f], m), cell, sites.all_types(np.asarray(t["species"])),
                                  model.config.rcut, model.config.ntypes)
        e = energy(model.config, model.params, model.stats, t["positions"][f], cell, nbr, moments=m, sites=sites)
        assert float(e) == pytest.approx(t["potential_energy"][f], abs=1e-6)

    # 20 steps, then a restart to 40: the same states, positions and log as one run
    split = tmp_path / "split.h5"
    md(split, 20)
    md(split, 40, "--restart")
    u = read_trajectory(split)
    np.testing.assert_allclose(u["positions"], t["positions"], atol=1e-10)
    np.testing.assert_array_equal(u["spin_moments"], t["spin_moments"])
    np.testing.assert_allclose(np.loadtxt(split.with_suffix(".spin.log"), usecols=(0, 1, 2, 3, 4)), log, atol=1e-8)

    no_search = runner.invoke(app, ["md", str(tmp_path / "model.h5"), cif, "-o", str(tmp_path / "x.h5"),
                                    "--states", "Mn=-3.8,3.8", "--magmom", "Mn=3.8"])
    assert no_search.exit_code == 1 and "--spin-search" in no_search.output


def test_spin_state_summary_counts_states_and_changes():
    from cathodeml.commands.describe_trajectory import spin_state_summary

    moments = np.array([[3.8, 3.8, 0.0, 1.0], [3.8, -3.8, 0.0, 1.0], [-3.8, 3.8, 0.0, 1.0], [-3.8, 3.8, 0.0, 1.0]])
    s = spin_state_summary(["Mn", "Mn", "O", "Ni"], moments)
    assert s["changes"] == 3 and s["frames_with_changes"] == 2 and s["frames"] == 4
    assert s["elements"] == {"Mn": {"states_muB": [-3.8, 3.8], "first": [0, 2], "last": [1, 1]},
                             "Ni": {"states_muB": [1.0], "first": [1], "last": [1]}}
