#!/bin/bash
# Train a model on all GPUs of one or several nodes with SLURM.
#
#   sbatch examples/slurm_train.sh configs/spin_cathode.toml spin.h5 model.h5
#   sbatch --nodes=4 examples/slurm_train.sh configs/spin_cathode.toml spin.h5 model.h5
#
# srun starts one `cathodeml train` per node.  Each splits every batch along frames over the node's
# GPUs; with several nodes `--distributed` joins them with jax.distributed.initialize() (which reads
# SLURM's variables: coordinator = first node, process id = SLURM_PROCID), so the device mesh spans
# all nodes' GPUs.  Parameters are replicated, the mean gradient is the one of a single device, and
# the batch size must be a multiple of the total GPU count.  Every node reads the same data files
# and process 0 alone writes model.h5, lcurve.out and checkpoint.h5: use a shared file system.
# SIGTERM (sent by SLURM to every task before the time limit, see --signal) makes train save
# checkpoint.h5 next to the model and stop; resubmitting this script continues exactly where it stopped.
#
#SBATCH --job-name=cathodeml-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --signal=TERM@300
#SBATCH --output=train-%j.log
set -euo pipefail

CONFIG=${1:?usage: sbatch slurm_train.sh CONFIG.toml DATA.h5 MODEL.h5}
DATA=${2:?usage: sbatch slurm_train.sh CONFIG.toml DATA.h5 MODEL.h5}
MODEL=${3:-model.h5}
NODES=${SLURM_NNODES:-1}
GPUS=$(( ${SLURM_GPUS_ON_NODE:-4} * NODES ))

if [ "${SLURM_NTASKS:-1}" -ne "$NODES" ]; then
  echo "slurm_train.sh: run one task per node (--ntasks-per-node=1); each task drives all GPUs of its node" >&2
  exit 1
fi

# GPU JAX: pip install -e ".[cuda12]" (or .[cuda13]) in the environment this job activates.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# batch size: the config's, rounded up to a multiple of the total GPU count
BATCH=$(python - "$CONFIG" "$GPUS" <<'PY'
import sys, tomllib
cfg = tomllib.load(open(sys.argv[1], "rb"))
b, n = cfg.get("training", {}).get("batch_size", 1), int(sys.argv[2])
b = b if isinstance(b, int) else 1
print(-(-b // n) * n)
PY
)

CHECKPOINT="$(dirname "$MODEL")/checkpoint.h5"
RESTART=()
if [ -e "$CHECKPOINT" ]; then RESTART=(--restart "$CHECKPOINT"); fi
DISTRIBUTED=()
if [ "$NODES" -gt 1 ]; then DISTRIBUTED=(--distributed); fi

# --signal (without B:) sends SIGTERM to the srun tasks themselves; they agree on the step to stop
# at (the next display step), process 0 writes the checkpoint, and srun returns 130.
srun --ntasks-per-node=1 cathodeml train "$CONFIG" --data "$DATA" -o "$MODEL" --batch-size "$BATCH" \
  "${DISTRIBUTED[@]}" "${RESTART[@]}"
