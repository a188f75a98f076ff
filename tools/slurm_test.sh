#!/usr/bin/env bash
# Slurm testing: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py args]
# The allocation (GPUS, GPUS_PER_NODE, CPUS_PER_TASK, SRUN_ARGS): see tools/slurm_run.sh.
set -euo pipefail
usage() { sed -n '2,3s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 4 ]]; then usage >&2; exit 2; fi
exec "$(dirname "$0")/slurm_run.sh" "$1" "$2" test.py "$3" "$4" "${@:5}"
