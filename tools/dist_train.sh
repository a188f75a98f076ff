#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node (NNODES, NODE_RANK, MASTER_ADDR, PORT) and CPU-only machines: see tools/torchrun.sh.
set -euo pipefail
usage() { sed -n '2,3s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
exec "$(dirname "$0")/torchrun.sh" "$2" train.py "$1" "${@:3}"
