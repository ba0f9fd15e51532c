"""The training loop: it learns, restarts bit for bit, stops cleanly on SIGTERM, and splits over devices."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from cathodeml.io.dataset import read_dataset, write_dataset
from cathodeml.train.config import read_config, with_overrides
from cathodeml.signals import stop_on_signals
from cathodeml.train.plan import plan_run
from cathodeml.train.trainer import read_checkpoint, train

TINY = """
[model]
rcut = 4.0
rcut_smth = 0.5
sel = "auto"
embedding_neurons = [4, 8]
axis_neuron = 2
fitting_neurons = [8, 8]

[learning_rate]
start_lr = 3e-3
stop_lr = 1e-4
decay_steps = 5

[loss]
start_pref_e = 1.0
limit_pref_e = 1.0
start_pref_f = 10.0
limit_pref_f = 1.0

[training]
steps = 40
batch_size = 2
seed = 4
disp_freq = 10
save_freq = 1000
validation_fraction = 0.25
stat_frames = 4
"""


@pytest.fixture
def small_nio(tmp_path, data_dir):
    """12 frames of the real NiO set (two systems), written as a cathodeml dataset."""
    ds = read_dataset(data_dir / "deepmd" / "nio_spin")
    ds.systems = [s.select(np.arange(6)) for s in ds.systems[:2]]
    path = tmp_path / "nio.h5"
    write_dataset(path, ds)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return config, path


def _settings(config, data, **over):
    cfg, _ = read_config(config)
    return with_overrides(cfg, training__data=(str(data),), **over)


def test_training_lowers_the_validation_error(small_nio, tmp_path):
    config, data = small_nio
    settings = _settings(config, data)
    plan = plan_run(settings)
    result = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                   lcurve_path=tmp_path / "lcurve.out", checkpoint_path=tmp_path / "ck.h5")
    first, last = result.history[0]["valid"], result.history[-1]["valid"]
    assert last["rmse_e"] < 0.2 * first["rmse_e"]
    rows = np.loadtxt(tmp_path / "lcurve.out")
    assert list(rows[:, 0]) == [1, 10, 20, 30, 40]


def test_restart_after_an_interruption_continues_bit_for_bit(small_nio, tmp_path):
    config, data = small_nio
    settings = _settings(config, data, training__steps=8, training__disp_freq=2)
    plan = plan_run(settings)
    straight = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                     lcurve_path=tmp_path / "a.out", checkpoint_path=tmp_path / "a.h5")

    plan = plan_run(settings)
    calls = iter(range(100))
    stopped = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                    lcurve_path=tmp_path / "b.out", checkpoint_path=tmp_path / "b.h5",
                    should_stop=lambda: next(calls) >= 2)  # "SIGTERM" after step 3
    assert stopped.interrupted and stopped.step == 3
    with open(tmp_path / "b.out", "a") as f:
        f.write("      4   9 9 9 9 9 9 1e-3\n")  # a row written after the checkpoint, before the crash
    resumed_plan = plan_run(settings, restart=str(tmp_path / "b.h5"))
    assert resumed_plan.state.step == 3
    resumed = train(resumed_plan.config, resumed_plan.state, resumed_plan.train_systems, resumed_plan.valid_systems,
                    settings, lcurve_path=tmp_path / "b.out", checkpoint_path=tmp_path / "b.h5")
    a, b = jax.tree_util.tree_leaves(straight.params), jax.tree_util.tree_leaves(resumed.params)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert (tmp_path / "a.out").read_text() == (tmp_path / "b.out").read_text()
    _, meta, state = read_checkpoint(tmp_path / "b.h5")
    assert state.step == 8 and meta["kind"] == "checkpoint"
    from cathodeml.commands.train import describe_checkpoint

    assert describe_checkpoint(tmp_path / "b.h5")[0]["step"] == 8  # `cathodeml info checkpoint.h5`


def test_an_ensemble_in_one_program_trains_each_member_as_alone_and_restarts(small_nio, tmp_path):
    """K members stacked and vmapped (`train_members`) = K runs of `train`, one per model.seed, on the same
    batches; interrupted together and resumed from their own checkpoints, they end where uninterrupted runs do."""
    from cathodeml.model.potential import init_params
    from cathodeml.train.trainer import Member, new_run_state, train_members

    config, data = small_nio
    base = _settings(config, data, training__steps=8, training__disp_freq=2)
    seeds = [base.model.seed, base.model.seed + 1]
    alone = []
    for k, seed in enumerate(seeds):
        settings = with_overrides(base, model__seed=seed)
        plan = plan_run(settings)
        alone.append(train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                           lcurve_path=tmp_path / f"alone{k}.out", checkpoint_path=tmp_path / f"alone{k}.h5"))
    assert not np.allclose(alone[0].params["fitting"][0][0]["w"], alone[1].params["fitting"][0][0]["w"])

    plan = plan_run(base)
    fresh = [plan.state, new_run_state(init_params(plan.config, jax.random.PRNGKey(seeds[1])), plan.state.stats)]
    members = [Member(st, with_overrides(base, model__seed=seed), tmp_path / f"m{k}.out", tmp_path / f"m{k}.h5")
               for k, (st, seed) in enumerate(zip(fresh, seeds))]
    calls = iter(range(100))
    stopped = train_members(plan.config, members, plan.train_systems, plan.valid_systems,
                            should_stop=lambda: next(calls) >= 2)
    assert all(r.interrupted and r.step == 3 for r in stopped)
    resumed = [dataclasses.replace(m, state=read_checkpoint(m.checkpoint_path)[2]) for m in members]
    assert [read_checkpoint(m.checkpoint_path)[1]["settings"]["model"]["seed"] for m in members] == seeds
    done = train_members(plan.config, resumed, plan.train_systems, plan.valid_systems)
    for k in range(2):
        for x, y in zip(jax.tree_util.tree_leaves(alone[k].params), jax.tree_util.tree_leaves(done[k].params)):
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-12)
        a, b = np.loadtxt(tmp_path / f"alone{k}.out"), np.loadtxt(tmp_path / f"m{k}.out")
        np.testing.assert_allclose(b, a, rtol=1e-8)
        assert done[k].final["valid"]["rmse_f"] == pytest.approx(alone[k].final["valid"]["rmse_f"], rel=1e-8)


def test_restart_with_other_data_is_refused(small_nio, tmp_path, data_dir):
    config, data = small_nio
    settings = _settings(config, data, training__steps=2)
    plan = plan_run(settings)
    train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
          lcurve_path=tmp_path / "l.out", checkpoint_path=tmp_path / "c.h5")
    other = dataclasses.replace(settings, training=dataclasses.replace(settings.training, seed=99))
    from cathodeml.errors import CathodemlError

    with pytest.raises(CathodemlError, match="different training data"):
        plan_run(other, restart=str(tmp_path / "c.h5"))


def test_sigterm_sets_the_stop_flag_instead_of_killing():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals() as should_stop:
        assert all(signal.getsignal(sig) != h for sig, h in before.items())  # ours is installed
        assert not should_stop()
        os.kill(os.getpid(), signal.SIGTERM)
        assert should_stop()
    assert {sig: signal.getsignal(sig) for sig in before} == before  # and the previous ones are back


_TWO_DEVICE_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, numpy as np
    from cathodeml.train.config import read_config, with_overrides
    from cathodeml.train.plan import plan_run
    from cathodeml.train.trainer import train
    from pathlib import Path
    cfg, _ = read_config(sys.argv[1])
    cfg = with_overrides(cfg, training__data=(sys.argv[2],), training__steps=4, training__batch_size=2)
    plan = plan_run(cfg)
    res = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, cfg,
                lcurve_path=Path(sys.argv[3]) / "l.out", checkpoint_path=Path(sys.argv[3]) / "c.h5")
    print(json.dumps({"devices": jax.local_device_count(),
                      "leaves": [np.asarray(x).ravel().tolist() for x in jax.tree_util.tree_leaves(res.params)]}))
""")


def test_two_devices_train_the_same_model_as_one(small_nio, tmp_path):
    config, data = small_nio
    script = tmp_path / "run.py"
    script.write_text(_TWO_DEVICE_SCRIPT)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, str(script), str(config), str(data), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    two = json.loads(proc.stdout.strip().splitlines()[-1])
    assert two["devices"] == 2 and jax.local_device_count() == 1
    settings = _settings(config, data, training__steps=4, training__batch_size=2)
    plan = plan_run(settings)
    one = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                lcurve_path=tmp_path / "one.out", checkpoint_path=tmp_path / "one.h5")
    for a, b in zip(jax.tree_util.tree_leaves(one.params), two["leaves"]):
        assert np.allclose(np.ravel(a), b, rtol=1e-9, atol=1e-12)


def test_checkpoint_names_each_array_by_its_parameter_path(small_nio, tmp_path):
    import h5py

    config, data = small_nio
    settings = _settings(config, data, training__steps=2)
    plan = plan_run(settings)
    result = train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
                   lcurve_path=tmp_path / "l.out", checkpoint_path=tmp_path / "c.h5")
    with h5py.File(tmp_path / "c.h5", "r") as f:  # h5py alone, no cathodeml reader
        assert np.array_equal(f["params/fitting/0/0/w"][()], result.params["fitting"][0][0]["w"])
        assert np.array_equal(f["params/embedding/0/1/b"][()], result.params["embedding"][0][1]["b"])
        mu = f["opt_state/inner_state/0/mu/fitting/0/0/w"][()]
        assert mu.shape == result.params["fitting"][0][0]["w"].shape and np.any(mu != 0)  # moments after 2 steps
        assert int(f["opt_state/inner_state/0/count"][()]) == 2


def test_a_checkpoint_of_the_older_leaf_position_layout_still_restarts(small_nio, tmp_path):
    import h5py

    config, data = small_nio
    settings = _settings(config, data, training__steps=2)
    plan = plan_run(settings)
    train(plan.config, plan.state, plan.train_systems, plan.valid_systems, settings,
          lcurve_path=tmp_path / "l.out", checkpoint_path=tmp_path / "new.h5")
    _, meta, state = read_checkpoint(tmp_path / "new.h5")
    old_meta = {k: v for k, v in meta.items() if k != "layout"}
    with h5py.File(tmp_path / "old.h5", "w") as f:  # what cathodeml wrote before arrays had names
        f.attrs["cathodeml"] = json.dumps(old_meta)
        for group, tree in (("params", state.params), ("opt_state", state.opt_state.inner_state[0])):
            for i, leaf in enumerate(jax.tree_util.tree_leaves(tree)):
                f.create_dataset(f"{group}/{i:05d}", data=leaf)
        for key, value in state.stats.items():
            f.create_dataset(f"stats/{key}", data=value)
    _, _, old = read_checkpoint(tmp_path / "old.h5")
    assert old.step == 2
    # the Adam moments and count come back; the injected learning rate is rewritten before every step
    for a, b in ((old.params, state.params), (old.opt_state.inner_state, state.opt_state.inner_state),
                 (old.stats, state.stats)):
        assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
