#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node (NNODES, NODE_RANK, MASTER_ADDR, PORT) and CPU-only machines: see tools/torchrun.sh.
set -euo pipefail
exec "$(dirname "$0")/torchrun.sh" "$3" test.py "$1" "$2" "${@:4}"
