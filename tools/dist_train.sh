#!/usr/bin/env bash
# Multi-GPU (or multi-node) training with torchrun and mmengine's `pytorch` launcher.
#   tools/dist_train.sh CONFIG GPUS [train.py args...]
# Multi-node: NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 PORT=29500 tools/dist_train.sh CONFIG 8
# Without CUDA the processes run on CPU with gloo (tools/train.py switches automatically), at
# most one per core. Before any process starts, the GPU count and the config (datasets, resume
# target, schedule) are checked once, so a mistake is reported once, not once per process.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py args...]" >&2
    exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHON=${PYTHON:-python}
export PYTHONPATH="$(dirname "$0")/..${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" -m lsa.apis.preflight "$GPUS"
"$PYTHON" "$(dirname "$0")/train.py" "$CONFIG" --check-only "${@:3}"
"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"
