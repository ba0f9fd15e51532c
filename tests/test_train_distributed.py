"""Training across processes (jax.distributed): two CPU processes train the same model as one.

Each process is a separate Python started by the test, joined with
`jax.distributed.initialize(coordinator_address="127.0.0.1:<port>", num_processes=2, process_id=i)`
(what srun / mpirun provide on a cluster), then runs the real `cathodeml train --distributed`.
The batch of 2 frames is split one frame per process, so the mean gradient must equal the
single-process one up to summation order.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
from typer.testing import CliRunner

from cathodeml.cli import app
from cathodeml.io.dataset import read_dataset, write_dataset
from cathodeml.model import load_model
from cathodeml.train.trainer import read_checkpoint

from test_train_trainer import TINY

_PROCESS = textwrap.dedent("""
    import sys
    import jax
    rank, port, config, data, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=rank)
    assert jax.process_count() == 2 and len(jax.devices()) == 2 and len(jax.local_devices()) == 1
    import json
    import cathodeml.train.trainer as trainer
    from cathodeml.cli import app
    from cathodeml.train.plan import plan_run

    held, inner = [], trainer.train_step  # the step as the loop calls it (imported from train.step)

    def spy(params, opt_state, stats, arrays, frames, *args, **kwargs):  # what this process placed
        held.append([list(shard.data.shape) for shard in frames.addressable_shards] + [list(frames.shape)])
        return inner(params, opt_state, stats, arrays, frames, *args, **kwargs)

    trainer.train_step = spy
    try:
        app(["train", config, "--data", data, "-o", f"{out}/model.h5", "--steps", "6", "--batch-size", "2",
             "--distributed", "--quiet"], prog_name="cathodeml")
    except SystemExit as exc:
        code, placed = exc.code, list(held)

    # a stop request (SIGTERM) reaching process 1 only, after its 3rd check: both must stop together
    from pathlib import Path
    from cathodeml.train.config import read_config, with_overrides
    cfg, _ = read_config(config)
    cfg = with_overrides(cfg, training__data=(data,), training__steps=8, training__batch_size=2,
                         training__disp_freq=2)
    plan = plan_run(cfg)
    checks = iter(range(100))
    stop = (lambda: next(checks) >= 2) if rank == 1 else (lambda: False)
    res = trainer.train(plan.config, plan.state, plan.train_systems, plan.valid_systems, cfg,
                        lcurve_path=Path(out) / "stop.out", checkpoint_path=Path(out) / "stop.h5", should_stop=stop)
    print(json.dumps({"exit": code, "held": placed, "stopped": [res.interrupted, res.step]}))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _small_nio(tmp_path, data_dir):
    ds = read_dataset(data_dir / "deepmd" / "nio_spin")
    ds.systems = [s.select(np.arange(6)) for s in ds.systems[:2]]
    data = tmp_path / "nio.h5"
    write_dataset(data, ds)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY)
    return config, data


def test_two_processes_train_the_same_model_as_one_stop_together_and_only_process_0_writes(tmp_path, data_dir):
    config, data = _small_nio(tmp_path, data_dir)
    script = tmp_path / "process.py"
    script.write_text(_PROCESS)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    port = _free_port()
    outs = [tmp_path / f"rank{i}" for i in range(2)]
    procs = []
    for i, out in enumerate(outs):
        out.mkdir()
        procs.append(subprocess.Popen([sys.executable, str(script), str(i), str(port), str(config), str(data),
                                       str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        results = [p.communicate(timeout=180) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
        report = json.loads(out.strip().splitlines()[-1])
        assert report["exit"] in (0, None), err[-3000:]
        # six steps, each with the global batch of 2 frames of which this process placed 1
        assert report["held"] == [[[1], [2]]] * 6
        # stop checks are agreed at display steps (1, 2, 4, ...): process 1's request at its 3rd
        # check (step 4) stops both processes after step 4
        assert report["stopped"] == [True, 4]

    ref = tmp_path / "single"
    ref.mkdir()
    run = CliRunner().invoke(app, ["train", str(config), "--data", str(data), "-o", str(ref / "model.h5"),
                                   "--steps", "6", "--batch-size", "2", "--quiet"])
    assert run.exit_code == 0, run.output
    assert jax.process_count() == 1 and jax.device_count() == 1

    one, two = load_model(ref / "model.h5"), load_model(outs[0] / "model.h5")
    leaves_one, leaves_two = jax.tree_util.tree_leaves(one.params), jax.tree_util.tree_leaves(two.params)
    assert len(leaves_one) == len(leaves_two)
    for a, b in zip(leaves_one, leaves_two):
        assert np.allclose(a, b, rtol=1e-9, atol=1e-12)
    moved = max(float(np.max(np.abs(a - b))) for a, b in
                zip(leaves_one, jax.tree_util.tree_leaves(_untrained_params(config, data, tmp_path))))
    assert moved > 1e-4  # the six steps did change the weights, so the agreement above is not trivial
    np.testing.assert_allclose(np.loadtxt(outs[0] / "lcurve.out"), np.loadtxt(ref / "lcurve.out"), rtol=1e-6)
    assert (outs[0] / "checkpoint.h5").exists()
    assert read_checkpoint(outs[0] / "stop.h5")[2].step == 4
    assert sorted(p.name for p in outs[1].iterdir()) == []  # process 1 wrote nothing


def _untrained_params(config, data, tmp_path):
    """The untrained parameters of the same run (0 steps)."""
    (tmp_path / "zero").mkdir()
    run = CliRunner().invoke(app, ["train", str(config), "--data", str(data), "-o", str(tmp_path / "zero" / "m.h5"),
                                   "--steps", "0", "--batch-size", "2", "--quiet"])
    assert run.exit_code == 0, run.output
    return load_model(tmp_path / "zero" / "m.h5").params


def test_several_launched_tasks_without_distributed_are_refused(tmp_path, data_dir, monkeypatch):
    config, data = _small_nio(tmp_path, data_dir)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    run = CliRunner().invoke(app, ["train", str(config), "--data", str(data), "-o", str(tmp_path / "m.h5")])
    assert run.exit_code == 1
    assert "--distributed" in run.output
    assert not (tmp_path / "m.h5").exists() and not (tmp_path / "lcurve.out").exists()
