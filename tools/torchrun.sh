#!/usr/bin/env bash
# Run a tool on NPROC processes with torchrun: tools/torchrun.sh NPROC TOOL.py [TOOL args]
# (tools/dist_train.sh and tools/dist_test.sh call it).
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR and PORT on every node.
# On a machine without CUDA the processes use the gloo backend (NPROC = number of processes).
set -euo pipefail
usage() { sed -n '2,5s/^# \{0,1\}//p' "$0"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [[ $# -lt 2 ]]; then usage >&2; exit 2; fi
NPROC=$1
TOOL=$2
if ! [[ $NPROC =~ ^[1-9][0-9]*$ ]]; then
    echo "error: the number of processes must be a positive integer, got '$NPROC'" >&2
    usage >&2
    exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
HERE=$(cd "$(dirname "$0")" && pwd)
# The checkout's .venv (make install) when there is one, else the python on PATH.
DEFAULT_PYTHON=python
if [[ -x "$HERE/../.venv/bin/python" ]]; then DEFAULT_PYTHON="$HERE/../.venv/bin/python"; fi
PYTHON=${PYTHON:-$DEFAULT_PYTHON}

PYTHONPATH="$HERE/..:${PYTHONPATH:-}" \
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$NPROC" --master_port="$PORT" \
    "$HERE/$TOOL" "${@:3}" --launcher pytorch
