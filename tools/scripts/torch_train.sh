#!/usr/bin/env bash
# torchrun training, one or several nodes: bash tools/scripts/torch_train.sh NPROC_PER_NODE --cfg_file ...
# Env: NNODES (1), NODE_RANK (0), MASTER_ADDR (127.0.0.1), PORT (free port on single node), PYTHON.
set -euo pipefail
NGPUS=$1
shift
PYTHON=${PYTHON:-python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()')}
exec $PYTHON -m torch.distributed.run --nnodes="$NNODES" --node_rank="$NODE_RANK" --nproc_per_node="$NGPUS" \
    --max_restarts=0 --master_addr="$MASTER_ADDR" --master_port="$PORT" "$TOOLS_DIR/train.py" --launcher pytorch "$@"
