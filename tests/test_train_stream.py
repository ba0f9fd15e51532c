"""Training data streamed from HDF5 (`training.stream`): the batches are the resident ones, the order is
seeded and restartable at the exact batch, bad frames are refused mid-run, spin data works."""

import json
import sys

import jax
import numpy as np
import pytest

from cathodeml import spin
from cathodeml.errors import CathodemlError
from cathodeml.io.dataset import read_dataset, write_dataset
from cathodeml.train.config import read_config, with_overrides
from cathodeml.train.plan import plan_run
from cathodeml.train.step import evaluate_batch
from cathodeml.train.stream import EpochSampler, StreamedBatches, StreamSystem
from cathodeml.train.trainer import ResidentBatches, read_checkpoint, train
from test_train_trainer import TINY


@pytest.fixture
def nio(tmp_path, data_dir):
    """16 frames of each of two real NiO systems, as a cathodeml dataset, and the tiny config."""
    ds = read_dataset(data_dir / "deepmd" / "nio_spin")
    ds.systems = [s.select(np.arange(16)) for s in ds.systems[:2]]
    path = tmp_path / "nio.h5"
    write_dataset(path, ds)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return config, path, ds


def _settings(config, data, **over):
    cfg, _ = read_config(config)
    return with_overrides(cfg, training__data=(str(data),), **over)


def _metrics(plan, group, frames, system):
    m = evaluate_batch(plan.state.params, plan.state.stats, group.arrays, frames, group.sites, config=plan.config,
                       n_real=system.n_real, has_virial=False, has_force=True)
    return {k: np.asarray(v) for k, v in m.items()}


def test_a_streamed_batch_is_the_resident_batch_of_the_same_frames(nio):
    config, data, _ = nio
    resident = plan_run(_settings(config, data))
    streamed = plan_run(_settings(config, data, training__stream=True))
    assert isinstance(streamed.train_systems[0], StreamSystem)
    assert streamed.config == resident.config  # sel and everything else from the sampled frames
    assert len(streamed.valid_systems) == len(resident.valid_systems)
    for a, b in zip(streamed.valid_systems, resident.valid_systems):  # the same validation split
        np.testing.assert_array_equal(a.coords, b.coords)
    held = ResidentBatches(resident.train_systems, 0)
    stream = StreamedBatches(streamed.train_systems, streamed.config, 0)
    for k, system in enumerate(resident.train_systems):
        assert streamed.train_systems[k].n_frames == system.n_frames
        frames = np.array([3, 0, 3, system.n_frames - 1])  # any order, repeats allowed
        g, offset = held.where[k]
        want = _metrics(resident, held.groups[g], frames + offset, system)
        group = stream.batch(k, frames)
        for key in ("coords", "forces", "energies", "cells"):
            np.testing.assert_array_equal(np.asarray(group.arrays[key]),
                                          np.asarray(held.groups[g].arrays[key])[frames + offset])
        got = _metrics(resident, group, np.arange(frames.size), system)
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-20)


def test_the_epoch_sampler_visits_every_frame_once_per_epoch_and_resumes_from_a_small_state():
    class S:
        def __init__(self, n, b):
            self.n_frames, self.batch_size = n, b

    systems = [S(7, 2), S(5, 3)]
    sampler = EpochSampler(systems, seed=11)
    draws = [sampler.next() for _ in range(40)]
    for k, s in enumerate(systems):
        seen = np.concatenate([f for j, f in draws if j == k])
        for epoch in range(len(seen) // s.n_frames):  # every full epoch is a permutation of the frames
            assert sorted(seen[epoch * s.n_frames:(epoch + 1) * s.n_frames]) == list(range(s.n_frames))
    state = json.loads(json.dumps(sampler.state()))  # what a checkpoint stores
    assert len(json.dumps(state)) < 1000
    ahead = [sampler.next() for _ in range(10)]
    again = EpochSampler(systems, seed=11)
    again.set_state(state)
    assert all(k1 == k2 and np.array_equal(f1, f2) for (k1, f1), (k2, f2) in zip(ahead, [again.next() for _ in range(10)]))
    other = EpochSampler(systems, seed=12)
    assert any(not np.array_equal(f1, f2) for (_, f1), (_, f2) in zip(draws, [other.next() for _ in range(40)]))


def test_streamed_training_learns_and_restarts_at_the_exact_batch(nio, tmp_path):
    config, data, _ = nio
    settings = _settings(config, data, training__stream=True, training__steps=12, training__disp_freq=3)
    plan = plan_run(settings)
    straight = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                     lcurve_path=tmp_path / "a.out", checkpoint_path=tmp_path / "a.h5")
    assert straight.history[-1]["valid"]["rmse_e"] < 0.5 * straight.history[0]["valid"]["rmse_e"]

    plan = plan_run(settings)
    calls = iter(range(100))
    stopped = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                    lcurve_path=tmp_path / "b.out", checkpoint_path=tmp_path / "b.h5",
                    should_stop=lambda: next(calls) >= 4)  # the thread has read batches past step 5 by now
    assert stopped.interrupted and stopped.step == 5
    _, meta, _ = read_checkpoint(tmp_path / "b.h5")
    assert set(meta["sampler"]) == {"rng", "epochs", "cursors"}
    resumed_plan = plan_run(settings, restart=str(tmp_path / "b.h5"))
    resumed = train(resumed_plan.config, resumed_plan.state, resumed_plan.train_systems, resumed_plan.valid_systems,
                    settings, lcurve_path=tmp_path / "b.out", checkpoint_path=tmp_path / "b.h5")
    a, b = jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert (tmp_path / "a.out").read_text() == (tmp_path / "b.out").read_text()
    with pytest.raises(CathodemlError, match="different training data"):
        plan_run(_settings(config, data, training__stream=True, training__seed=5), restart=str(tmp_path / "b.h5"))


def test_a_bad_frame_met_while_streaming_stops_training_with_its_name(nio, tmp_path):
    config, _, ds = nio
    ds.systems[1].forces[9, 2, 0] = np.nan
    path = tmp_path / "bad.h5"
    write_dataset(path, ds)
    settings = _settings(config, path, training__stream=True, training__steps=200, training__validation_fraction=0.0)
    plan = plan_run(settings)  # the sampled frames are fine; frame 9 is met during training
    with pytest.raises(CathodemlError, match="frame 9 has a non-finite"):
        train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
              lcurve_path=tmp_path / "l.out", checkpoint_path=tmp_path / "c.h5")


def test_spin_data_streams_with_its_virtual_atoms(nio, tmp_path):
    config, _, ds = nio
    aug, _ = spin.augment_dataset(ds, spin.SpinSettings.create(["Ni"], 0.314, 0.0, mode="vector"))
    path = tmp_path / "aug.h5"
    write_dataset(path, aug)
    resident = plan_run(_settings(config, path))
    streamed = plan_run(_settings(config, path, training__stream=True))
    assert streamed.spin["elements"] == resident.spin["elements"] == ["Ni"]
    held = ResidentBatches(resident.train_systems, 0)
    group = StreamedBatches(streamed.train_systems, streamed.config, 0).batch(0, np.array([1, 2]))
    g, offset = held.where[0]
    assert group.sites is not None and group.arrays["spin_moments"].shape[0] == 2
    want = _metrics(resident, held.groups[g], np.array([1, 2]) + offset, resident.train_systems[0])
    got = _metrics(resident, group, np.arange(2), resident.train_systems[0])
    np.testing.assert_allclose(got["se_f"], want["se_f"], rtol=1e-12)


def test_train_stream_on_the_command_line(nio, tmp_path, data_dir):
    from typer.testing import CliRunner

    from cathodeml.cli import app

    config, data, _ = nio
    out = tmp_path / "model.h5"
    result = CliRunner().invoke(app, ["train", str(config), "-d", str(data), "-o", str(out), "--stream",
                                      "--steps", "4", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 4 and out.exists() and summary["train_systems"][0]["frames"] == 12
    result = CliRunner().invoke(app, ["train", str(config), "-d", str(data_dir / "deepmd" / "nio_spin"), "-o",
                                      str(tmp_path / "m2.h5"), "--stream", "--steps", "2"])
    assert result.exit_code != 0 and "streaming reads HDF5" in result.output
    assert not (tmp_path / "m2.h5").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
