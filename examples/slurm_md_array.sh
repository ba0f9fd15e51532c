#!/bin/bash
# The temperature series as a SLURM array job: one MD run per temperature (one GPU each), then the
# analysis as a job that starts when every run has finished.
#
#   sbatch examples/slurm_md_array.sh model.h5 POSCAR 10x10x8      # submits the array
#   # ...which, as its first task, submits:  analyze (afterok on the whole array)
#
# The md settings are the preset of examples/md_preset.sh (NVT Nosé–Hoover chain, 1 fs, Tdamp 100 fs,
# 298–373 K in six steps, 5.5 ns).  A run that hits the time limit saves a checkpoint on SIGTERM;
# resubmitting the same command continues each unfinished run with --restart.
#
#SBATCH --job-name=cathodeml-md
#SBATCH --array=0-5
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --gpus=1
#SBATCH --cpus-per-task=4
#SBATCH --time=48:00:00
#SBATCH --signal=B:TERM@300
#SBATCH --output=md-%A_%a.log
set -euo pipefail

MODEL=${1:?usage: sbatch slurm_md_array.sh MODEL.h5 STRUCTURE [SUPERCELL] [MAGMOM]}
STRUCTURE=${2:?usage: sbatch slurm_md_array.sh MODEL.h5 STRUCTURE [SUPERCELL] [MAGMOM]}
SUPERCELL=${3:-1x1x1}
MAGMOM=${4:-}
OUT=${OUT:-series}
HERE=${SLURM_SUBMIT_DIR:-$(pwd)}
# shellcheck source=md_preset.sh
. "$HERE/examples/md_preset.sh"

read -r -a TEMPS <<< "$MD_TEMPERATURES"
if [ "${#TEMPS[@]}" -ne $((SLURM_ARRAY_TASK_MAX + 1)) ]; then
  echo "slurm_md_array.sh: ${#TEMPS[@]} temperatures in MD_TEMPERATURES but --array=0-$SLURM_ARRAY_TASK_MAX" >&2
  exit 1
fi
T=${TEMPS[$SLURM_ARRAY_TASK_ID]}
mkdir -p "$OUT"

# The first task queues the analysis behind the whole array.
if [ "$SLURM_ARRAY_TASK_ID" -eq 0 ]; then
  TRAJS=$(for t in "${TEMPS[@]}"; do printf '%s/traj_%sK.h5 ' "$OUT" "$t"; done)
  # shellcheck disable=SC2086
  sbatch --dependency=afterok:"$SLURM_ARRAY_JOB_ID" --job-name=cathodeml-analyze --ntasks=1 --cpus-per-task=8 \
    --time=4:00:00 --output=analyze-%j.log --wrap="cathodeml analyze $TRAJS $ANALYZE_ARGS -o $OUT/analysis"
fi

TRAJ="$OUT/traj_${T}K.h5"
if [ -e "$TRAJ.ckpt" ] && [ -e "$TRAJ" ]; then AGAIN=--restart; else AGAIN=--overwrite; fi
EXTRA=(--supercell "$SUPERCELL")
if [ -n "$MAGMOM" ]; then EXTRA+=(--magmom "$MAGMOM"); fi

export XLA_PYTHON_CLIENT_PREALLOCATE=false
# shellcheck disable=SC2086
cathodeml md "$MODEL" "$STRUCTURE" -T "$T" $MD_ARGS "${EXTRA[@]}" $AGAIN -o "$TRAJ" --quiet &
pid=$!
trap 'kill -TERM $pid' TERM
wait $pid || wait $pid
