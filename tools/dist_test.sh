#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node (NNODES, NODE_RANK, MASTER_ADDR, PORT) and CPU-only machines: see tools/torchrun.sh.
set -euo pipefail
usage() { sed -n '2,3s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 3 ]]; then usage >&2; exit 2; fi
exec "$(dirname "$0")/torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
