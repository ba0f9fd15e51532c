#!/bin/bash
# Train a model on all GPUs of one node with SLURM.
#
#   sbatch examples/slurm_train.sh configs/spin_cathode.toml spin.h5 model.h5
#
# `cathodeml train` splits every batch along frames over the node's local JAX devices (parameters
# replicated, the same mean gradient as one device), so the batch size must be a multiple of the GPU
# count.  SIGTERM (sent by SLURM before the time limit, see --signal) makes train save checkpoint.h5
# next to the model and stop; resubmitting this script continues exactly where it stopped.
#
# Several hosts: the trainer builds its device mesh from jax.local_devices(), so jax.distributed
# across nodes is not supported yet (each node would train on its own).  This script refuses to
# run on more than one node rather than silently doing that.
#
#SBATCH --job-name=cathodeml-train
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=48:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=train-%j.log
set -euo pipefail

CONFIG=${1:?usage: sbatch slurm_train.sh CONFIG.toml DATA.h5 MODEL.h5}
DATA=${2:?usage: sbatch slurm_train.sh CONFIG.toml DATA.h5 MODEL.h5}
MODEL=${3:-model.h5}
GPUS=${SLURM_GPUS_ON_NODE:-4}

if [ "${SLURM_NNODES:-1}" -gt 1 ]; then
  echo "slurm_train.sh: use one node (--nodes=1); multi-host training is not supported yet" >&2
  exit 1
fi

# GPU JAX: pip install -e ".[cuda12]" (or .[cuda13]) in the environment this job activates.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
# batch size: the config's, rounded up to a multiple of the GPU count
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

# Run train in the background and wait, so the batch shell can pass SLURM's SIGTERM on to it.
cathodeml train "$CONFIG" --data "$DATA" -o "$MODEL" --batch-size "$BATCH" "${RESTART[@]}" &
pid=$!
trap 'kill -TERM $pid' TERM
wait $pid || wait $pid
