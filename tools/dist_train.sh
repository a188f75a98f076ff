#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node (NNODES, NODE_RANK, MASTER_ADDR, PORT) and CPU-only machines: see tools/torchrun.sh.
set -euo pipefail
exec "$(dirname "$0")/torchrun.sh" "$2" train.py "$1" "${@:3}"
