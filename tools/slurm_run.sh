#!/usr/bin/env bash
# Run a tool as a Slurm job: tools/slurm_run.sh PARTITION JOB_NAME TOOL.py [TOOL args]
# (tools/slurm_train.sh and tools/slurm_test.sh call it). GPUS (total, default 8), GPUS_PER_NODE
# (default 8), CPUS_PER_TASK (default 5) and SRUN_ARGS tune the allocation.
set -euo pipefail
usage() { sed -n '2,4s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 3 ]]; then usage >&2; exit 2; fi
PARTITION=$1
JOB_NAME=$2
TOOL=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-}
HERE=$(cd "$(dirname "$0")" && pwd)
# The checkout's .venv (make install) when there is one, else the python on PATH.
DEFAULT_PYTHON=python
if [[ -x "$HERE/../.venv/bin/python" ]]; then DEFAULT_PYTHON="$HERE/../.venv/bin/python"; fi
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

PYTHONPATH="$HERE/..:${PYTHONPATH:-}" \
srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" \
    --ntasks="$GPUS" --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 $SRUN_ARGS \
    "$PYTHON" -u "$HERE/$TOOL" "${@:4}" --launcher slurm
