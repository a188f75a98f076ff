#!/usr/bin/env bash
# Slurm training: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py args]
# The allocation (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS): see tools/slurm_run.sh.
set -euo pipefail
usage() { sed -n '2,3s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 4 ]]; then usage >&2; exit 2; fi
exec "$(dirname "$0")/slurm_run.sh" "$1" "$2" train.py "$3" --work-dir="$4" "${@:5}"
