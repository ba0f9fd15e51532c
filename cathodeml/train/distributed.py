"""Training across devices and hosts: the device mesh, the batch split along frames, a stop all agree on.

Several devices split each batch along frames (jax sharding; parameters and data replicated), which
gives the same mean gradient as one device.  Across hosts (`start_distributed`) the mesh spans every
process's devices; each process draws the same global batch from the same seeded sampler but
places only its own devices' frame indices (`global_frame_indices`), so no batch data crosses
between hosts, and a request to stop counts once any process has it (`any_process`), so all
processes leave the loop at the same step.  Which process writes files is the loop's business
(`train.trainer`: process 0 only).
"""

from __future__ import annotations

import jax
import numpy as np

from cathodeml.errors import CathodemlError


def launched_tasks() -> int:
    """How many copies of this program the launcher started: srun's SLURM_STEP_NUM_TASKS (or
    SLURM_NTASKS inside an srun step) or mpirun's OMPI_COMM_WORLD_SIZE; 1 outside a parallel launch."""
    import os

    env = os.environ
    if "OMPI_COMM_WORLD_SIZE" in env:
        return int(env["OMPI_COMM_WORLD_SIZE"])
    if "SLURM_STEP_ID" in env:  # an srun step, not the batch script itself
        return int(env.get("SLURM_STEP_NUM_TASKS", env.get("SLURM_NTASKS", "1")))
    return 1


def start_distributed(coordinator_address: str | None = None, num_processes: int | None = None,
                      process_id: int | None = None) -> tuple[int, int]:
    """Join a multi-process run with `jax.distributed.initialize` (unset arguments are detected
    from SLURM, Open MPI or JAX_COORDINATOR_ADDRESS); returns (this process's index, process count).

    Must run before any JAX computation; a run already initialised (e.g. by a test) is kept.
    """
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize(coordinator_address, num_processes, process_id)
        except (ValueError, RuntimeError) as exc:
            raise CathodemlError(f"--distributed: jax.distributed.initialize failed ({str(exc).splitlines()[0]}); "
                                 "launch one task per host with srun or mpirun, or drop --distributed") from None
    return jax.process_index(), jax.process_count()


def devices_and_shardings(batch_sizes: list[int]):
    """(device count, replicated sharding, sharding along frames) over all devices of the run;
    (1, None, None) on a single device.  Every batch size must divide among the devices."""
    devices = jax.devices()  # every process's devices when distributed; the local ones otherwise
    if len(devices) < 2:
        return 1, None, None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    if any(b % len(devices) for b in batch_sizes):
        raise CathodemlError(f"{len(devices)} devices ({jax.process_count()} process(es)) need a batch size "
                             f"divisible by {len(devices)} (got {sorted(set(batch_sizes))}); "
                             "set training.batch_size accordingly")
    mesh = Mesh(np.array(devices), ("frames",))
    return len(devices), NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("frames"))


def global_frame_indices(frames: np.ndarray, by_frames):
    """The batch's frame indices as a global array split along frames: every process knows the whole
    batch (same sampler, same seed) but places only the indices of its own devices' frames."""
    if by_frames is None:
        return frames
    return jax.make_array_from_callback(frames.shape, by_frames, lambda index: frames[index])


def any_process(flag: bool) -> bool:
    """True when `flag` is true on any process (all processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.any(multihost_utils.process_allgather(np.array([flag], dtype=np.int32))))
