#!/usr/bin/env bash
# Shared by dist_train.sh / dist_test.sh: bash _torchrun.sh {train.py|test.py} NPROC [script args]
# torchrun on one machine, on a free port chosen by the OS; NCCL on GPUs, Gloo on CPU (add --device cpu to force
# CPU). Env: PYTHON (interpreter), PORT (fixed port).
set -euo pipefail
SCRIPT=$1
NGPUS=$2
shift 2
PYTHON=${PYTHON:-python}
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-$($PYTHON -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}
exec $PYTHON -m torch.distributed.run --nnodes=1 --nproc_per_node="$NGPUS" --max_restarts=0 \
    --master_addr=127.0.0.1 --master_port="$PORT" "$TOOLS_DIR/$SCRIPT" --launcher pytorch "$@"
